"""The papers' evaluation protocol for a head asset (see /shared/papers/README.md, "Evaluation").

Views, in the head frame (services/common/cameras.py: azimuth 0 = frontal, +90 = camera on +X, which
sees the subject's left side), elevation 0, one orbit radius and field of view for all:
    left_frontal +30, left +90, right_frontal -30, right -90, rear 180
and, beyond the protocol, frontal 0 and yaw +-45. The papers name the five views but not their angles;
+-30 for the "frontal" pair is our choice (dlib's HOG detector, the shipped default, finds frontal faces
up to about 40 degrees of yaw; +-45 is reported too, for recognisers that reach further).

Metrics:
  - identity: for each view, the configured face model's embedding of the largest face found in the
    render vs the input's; ID = mean cosine over the four non-rear protocol views, 0 for a view where no
    face is found (the papers' rule). With dlib (the default) each view also gets the Euclidean distance
    and the same-person verdict (< 0.6). report["face_model"]["backend"] names the recogniser that made
    the figure and report["identity_definition"] says it in words: with the face service on AdaFace
    (`--adaface-onnx`) it is Portrait3D-ID's "mean AdaFace cosine over the 4 non-rear views, 0 where no
    face is found"; with dlib or InsightFace it is the same rule on that model's cosine, not the paper's
    figure.
  - PSNR / SSIM at the reference view (the photo's own camera) over the head mask where the asset covers it.
  - LPIPS and CLIP-I over the five protocol views vs the input: computed only when their weights are given
    (CLIP: a local Hugging Face CLIP folder); otherwise reported as "not available", never estimated.
  - identity over a grid of views (evaluate_identity_grid, the evaluate stage's identity_grid): ID-to-3D's
    protocol, renders over elevation [-15, +15] and rotation [-65, +65] (rotation = yaw = azimuth here) at
    the protocol's radius and fov, each render's largest face embedded by the face service and compared by
    cosine with reference embeddings: the held-out photos (preprocess holdout_photos) or the input photo's
    identity. ID-to-3D uses CosFace (`--cosface-onnx`) and 20 in-the-wild reference photos; with another
    recogniser or fewer references it is the same rule, not the paper's figure (identity_grid_definition).
All renders go through the render service and all recognition through the face service's client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import FailedPrecondition
from services.core.cameras import PinholeCamera, orbit_camera
from services.face.types import AnalyzeOptions

PROTOCOL_VIEWS = {"left_frontal": 30.0, "left": 90.0, "right_frontal": -30.0, "right": -90.0, "rear": 180.0}
EXTRA_VIEWS = {"frontal": 0.0, "yaw_+45": 45.0, "yaw_-45": -45.0}
ID_VIEWS = ("left_frontal", "left", "right_frontal", "right")
# the headline: at how many of these renders the face model itself says "same person" as the photo
SAME_PERSON_VIEWS = ("frontal", "left_frontal", "right_frontal", "yaw_+45", "yaw_-45")
VIEW_RADIUS = 6.5
VIEW_FOV_DEG = 26.0
VIEW_TARGET = (0.0, -0.05, 0.0)
VIEW_BACKGROUND = (0.86, 0.86, 0.86)
NOT_AVAILABLE = "not available"


def view_camera(azimuth: float, size: int = 512, elevation: float = 0.0) -> PinholeCamera:
    """The evaluation / turntable camera at an azimuth (degrees)."""
    return orbit_camera(azimuth, elevation, VIEW_RADIUS, fov_deg=VIEW_FOV_DEG, width=size, height=size,
                        target=VIEW_TARGET)


def encode_gif(frames: list[np.ndarray], ms: int = 80) -> bytes:
    """(H, W, 3) uint8 frames -> a looping GIF (adaptive palette), bytes."""
    import io

    from PIL import Image

    ims = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE, colors=255) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0, optimize=False)
    return buf.getvalue()


def turntable(render_client, scene_id: str, frames: int, size: int, *, elevation: float = 0.0, background=None,
              progress=None, batch: int = 6) -> list[np.ndarray]:
    """frames (H=W=size, 3) uint8 views of a scene at evenly spaced azimuths from 0 (frontal), for the
    turntable GIF of every recipe. background: None (the render default) or an RGB triple in [0, 1];
    progress(fraction) after each batch of `batch` views."""
    cams = [view_camera(360.0 * k / frames, size, elevation=elevation) for k in range(frames)]
    out: list[np.ndarray] = []
    for start in range(0, frames, batch):
        kw = {} if background is None else {"background": np.asarray(background)}
        r = render_client.render(scene_id, cams[start:start + batch], ["rgb"], **kw)
        out += [to_uint8(img) for img in r.outputs["rgb"]]
        if progress is not None:
            progress(len(out) / frames)
    return out


def to_uint8(rgb_chw: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(rgb_chw).transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class Reference:
    """What the metrics compare against: the input photo, its face (camera, masks, embedding)."""

    rgb: np.ndarray                 # (H, W, 3) uint8, the working image
    camera: PinholeCamera
    head_mask: np.ndarray           # (H, W) uint8
    embedding: np.ndarray
    embedding_norm: float


@dataclass
class Evaluation:
    metrics: dict
    renders: dict[str, np.ndarray] = field(default_factory=dict)   # view name -> (S, S, 3) uint8


def psnr_ssim(render: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of two uint8 (H, W, 3) images over a boolean mask."""
    from skimage.metrics import structural_similarity

    a = render.astype(np.float64) / 255.0
    b = reference.astype(np.float64) / 255.0
    m = mask.astype(bool)
    if not m.any():
        return float("nan"), float("nan")
    mse = float(((a - b) ** 2)[m].mean())
    psnr = float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
    _, smap = structural_similarity(a, b, channel_axis=2, data_range=1.0, full=True)
    return psnr, float(smap.mean(-1)[m].mean())


def _clip_similarity(model_dir: str, images: list[np.ndarray], reference: np.ndarray) -> float:
    """Mean cosine between CLIP image embeddings of images and of the reference (a local CLIP folder)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
    proc = CLIPImageProcessor.from_pretrained(model_dir, local_files_only=True)
    with torch.no_grad():
        x = proc(images=[reference, *images], return_tensors="pt")["pixel_values"]
        e = model.get_image_features(pixel_values=x)
        e = getattr(e, "pooler_output", e)
        e = e / e.norm(dim=-1, keepdim=True)
    return float((e[1:] @ e[0]).mean())


def same_person_views(per_view: dict, threshold: float) -> dict:
    """The headline identity figure: per-view distances of SAME_PERSON_VIEWS against the face model's own
    same-person threshold, and how many of them pass (a view with no face found counts as not the same).
    Mean cosines of dlib embeddings barely separate people; the per-view verdicts do."""
    distances = {n: per_view[n].get("distance") for n in SAME_PERSON_VIEWS}
    same = [n for n in SAME_PERSON_VIEWS if per_view[n].get("same_person")]
    return {"count": len(same), "of": len(SAME_PERSON_VIEWS), "views": same, "threshold": threshold,
            "distances": distances}


PAPER_RECOGNISERS = {"adaface": "Portrait3D-ID's ID metric"}   # backends whose cosine a paper reports


def identity_definition(backend: str) -> str:
    """ID in words, naming the recogniser `backend` (Describe's identity_backend) that computed it."""
    rule = (f"mean {backend} cosine similarity over the {len(ID_VIEWS)} non-rear protocol views "
            f"({', '.join(ID_VIEWS)}) vs the input photo, 0 for a view where no face is found")
    paper = PAPER_RECOGNISERS.get(backend)
    return f"{rule} ({paper})" if paper else f"{rule} (the papers' rule on {backend}, not their recogniser)"


def evaluate_scene(render_client, face_client, scene_id: str, ref: Reference, *, size: int = 512,
                   clip_model: str | None = None, lpips_weights: str | None = None, progress=None) -> Evaluation:
    """Run the protocol on a scene already in the render service. progress(done, total) optional."""
    views = {**EXTRA_VIEWS, **PROTOCOL_VIEWS}
    names = list(views)
    cams = [view_camera(views[n], size) for n in names]
    renders: dict[str, np.ndarray] = {}
    for start in range(0, len(cams), 4):
        out = render_client.render(scene_id, cams[start:start + 4], ["rgb"], background=np.array(VIEW_BACKGROUND))
        for k, img in enumerate(out.outputs["rgb"]):
            renders[names[start + k]] = to_uint8(img)
    desc = face_client.describe()
    per_view = {}
    total = len(names) + 1
    for i, name in enumerate(names):
        res = face_client.analyze(renders[name], AnalyzeOptions(skip_crop=True, skip_masks=True))
        entry = {"azimuth_deg": views[name], "face_found": bool(res.faces)}
        if res.faces:
            f = res.faces[0]
            cmp = face_client.compare(f.embedding, ref.embedding, norm_a=f.embedding_norm, norm_b=ref.embedding_norm)
            entry.update(cosine=round(cmp.cosine_similarity, 4), distance=round(cmp.distance, 4),
                         same_person=bool(cmp.same_person), yaw_estimate_deg=round(f.pose.yaw, 1))
        else:
            entry.update(cosine=0.0, distance=None, same_person=False)
        per_view[name] = entry
        if progress:
            progress(i + 1, total)
    identity = float(np.mean([per_view[n]["cosine"] for n in ID_VIEWS]))

    # the reference view: the photo's own camera
    out = render_client.render(scene_id, [ref.camera], ["rgb", "alpha"], background=np.array(VIEW_BACKGROUND))
    ref_render = to_uint8(out.outputs["rgb"][0])
    renders["reference_view"] = ref_render
    mask = (ref.head_mask > 0) & (out.outputs["alpha"][0, 0] > 0.5)
    psnr, ssim = psnr_ssim(ref_render, ref.rgb, mask)
    res = face_client.analyze(ref_render, AnalyzeOptions(skip_crop=True, skip_masks=True))
    ref_view = {"face_found": bool(res.faces), "psnr_db": round(psnr, 2), "ssim": round(ssim, 4),
                "mask_pixels": int(mask.sum())}
    if res.faces:
        f = res.faces[0]
        cmp = face_client.compare(f.embedding, ref.embedding, norm_a=f.embedding_norm, norm_b=ref.embedding_norm)
        ref_view.update(cosine=round(cmp.cosine_similarity, 4), distance=round(cmp.distance, 4),
                        same_person=bool(cmp.same_person))
    if progress:
        progress(total, total)

    protocol = [renders[n] for n in PROTOCOL_VIEWS]
    if clip_model:
        clip = round(_clip_similarity(clip_model, protocol, ref.rgb), 4)
    else:
        clip = f"{NOT_AVAILABLE} (no CLIP weights given: --clip-model DIR, a local Hugging Face CLIP folder)"
    lpips = f"{NOT_AVAILABLE} (LPIPS weights are not shipped and no LPIPS backend is configured)"
    if lpips_weights:
        lpips = f"{NOT_AVAILABLE} (LPIPS weights at {lpips_weights} given, but no LPIPS backend is built yet)"
    metrics = {
        "protocol": {"views_deg": PROTOCOL_VIEWS, "elevation_deg": 0.0, "radius": VIEW_RADIUS,
                     "fov_deg": VIEW_FOV_DEG, "render_size": size},
        "face_model": {"backend": desc.identity_backend, "metric": desc.metric,
                       "same_person_threshold": desc.same_person_threshold,
                       "note": ("dlib cosines run high (different people often score > 0.8): compare them with "
                                "each other, not with the papers' ArcFace/AdaFace/CosFace figures")
                       if desc.identity_backend == "dlib" else ""},
        "identity_similarity": round(identity, 4),
        "identity_definition": identity_definition(desc.identity_backend),
        "identity_views_with_face": int(sum(per_view[n]["face_found"] for n in ID_VIEWS)),
        "same_person_views": same_person_views(per_view, desc.same_person_threshold),
        "views": per_view,
        "reference_view": ref_view,
        "psnr_db": ref_view["psnr_db"],
        "ssim": ref_view["ssim"],
        "lpips": lpips,
        "clip_i": clip,
    }
    return Evaluation(metrics, renders)


GRID_PAPER_RECOGNISER = "cosface"   # ID-to-3D's identity similarity is CosFace's cosine
REFERENCE_SOURCES = {"held_out_photos": "the held-out photos (preprocess holdout_photos)",
                     "input_photo": "the input photo's identity (preprocess: combined from the photos not held out)"}


def grid_angles(yaw: tuple[float, float], elevation: tuple[float, float], yaw_steps: int,
                elevation_steps: int) -> list[tuple[float, float]]:
    """(yaw, elevation) degrees of every grid view, evenly spaced with both ends included (one step: the range's
    single value), elevation-major: each elevation from the lowest, yaw from the most negative."""
    yaws = np.linspace(yaw[0], yaw[1], yaw_steps) if yaw_steps > 1 else np.array([yaw[0]])
    elevations = np.linspace(elevation[0], elevation[1], elevation_steps) if elevation_steps > 1 else \
        np.array([elevation[0]])
    return [(round(float(y), 3), round(float(e), 3)) for e in elevations for y in yaws]


def identity_grid_definition(backend: str, angles: list[tuple[float, float]], source: str, n_refs: int) -> str:
    """The grid's ID in words, naming the recogniser `backend` and the references it compared with."""
    yaws, elevations = sorted({y for y, _ in angles}), sorted({e for _, e in angles})
    rule = (f"mean {backend} cosine similarity between renders at {len(yaws)} yaws in [{yaws[0]:g}, {yaws[-1]:g}] x "
            f"{len(elevations)} elevations in [{elevations[0]:g}, {elevations[-1]:g}] degrees (radius {VIEW_RADIUS}, "
            f"fov {VIEW_FOV_DEG}) and the embedding{'s' if n_refs != 1 else ''} of {REFERENCE_SOURCES[source]}, "
            f"{n_refs} reference{'s' if n_refs != 1 else ''}, averaged over the references, 0 for a view where no "
            "face is found")
    if backend == GRID_PAPER_RECOGNISER:
        return f"{rule} (ID-to-3D's identity similarity; the paper compares with 20 in-the-wild photos)"
    return f"{rule} (ID-to-3D's protocol on {backend}, not its recogniser CosFace)"


def grid_view_name(yaw: float, elevation: float) -> str:
    return f"grid_yaw{yaw:+g}_elev{elevation:+g}"


def evaluate_identity_grid(render_client, face_client, scene_id: str, references: np.ndarray,
                           angles: list[tuple[float, float]], *, source: str, size: int = 512,
                           progress=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Identity over a grid of views: render the scene at every (yaw, elevation) of `angles` (view_camera: the
    protocol's radius, fov and target), embed each render's largest face with the face service and take its
    cosine with every row of `references` (R, D) (normalised here; the face service's embeddings are unit).
    source: a REFERENCE_SOURCES key. Returns (metrics, renders by grid_view_name); progress(done, total)."""
    refs = np.asarray(references, np.float64).reshape(len(references), -1)
    refs = refs / np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-12)
    desc = face_client.describe()
    if refs.shape[1] != desc.embedding_dim:
        raise FailedPrecondition(f"identity grid: the reference embeddings are {refs.shape[1]}-d, the face "
                                 f"service's recogniser {desc.identity_backend!r} gives {desc.embedding_dim}-d ones "
                                 "(the photos were analysed by another recogniser)", reason="EMBEDDING_MISMATCH")
    cams = [view_camera(yaw, size, elevation=elev) for yaw, elev in angles]
    renders: dict[str, np.ndarray] = {}
    views = []
    for start in range(0, len(cams), 4):
        out = render_client.render(scene_id, cams[start:start + 4], ["rgb"], background=np.array(VIEW_BACKGROUND))
        for k, img in enumerate(out.outputs["rgb"]):
            yaw, elev = angles[start + k]
            rgb = to_uint8(img)
            renders[grid_view_name(yaw, elev)] = rgb
            res = face_client.analyze(rgb, AnalyzeOptions(skip_crop=True, skip_masks=True))
            view = {"yaw": yaw, "elevation": elev, "face_found": bool(res.faces)}
            if res.faces:
                e = np.asarray(res.faces[0].embedding, np.float64)
                cos = refs @ (e / max(np.linalg.norm(e), 1e-12))
                view.update(similarity=round(float(cos.mean()), 4),
                            per_reference=[round(float(c), 4) for c in cos])
            else:
                view.update(similarity=0.0, per_reference=None)
            views.append(view)
        if progress:
            progress(len(views), len(angles))
    sims = np.array([v["similarity"] for v in views])
    found = [v["similarity"] for v in views if v["face_found"]]
    metrics = {
        "recogniser": desc.identity_backend,
        "identity_definition": identity_grid_definition(desc.identity_backend, angles, source, len(refs)),
        "reference_source": source,
        "references": int(len(refs)),
        "radius": VIEW_RADIUS, "fov_deg": VIEW_FOV_DEG, "render_size": size,
        "views": views,
        "mean": round(float(sims.mean()), 4),
        "std": round(float(sims.std()), 4),   # ID-to-3D reads the spread as the identity's consistency
        "mean_where_found": round(float(np.mean(found)), 4) if found else None,
        "face_found_fraction": round(len(found) / len(views), 4),
    }
    return metrics, renders
