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
All renders go through the render service and all recognition through the face service's client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
