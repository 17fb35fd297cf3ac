"""ground_truth_check: a TEST stage for closed-loop checks on the oracle prior (the guidance service's test
prior, whose exemplars are renders of services/core/procedural_head with its +X-only markings). It renders
the job's scene at held-out views and compares them with the known head, rendered independently by sphere
tracing, into the report's ground_truth section:
  psnr_db            rgb over the whole view (white background), mean over the views
  normal_error_deg   mean angle between rendered and true world normals where both cover the pixel
  chamfer            mean nearest-neighbour distance (world units, both ways, averaged) between the
                     surface points the depth renders of the scene and of the head see at the same views
  markings           the fraction of marking-green pixels in the +90 and -90 views; correct_side when the
                     +X view shows them and the -X view (nearly) does not
  texture            (a mesh scene) coverage: the fraction of the head's pixels whose texel some view
                     wrote (the texture_seen output); colour_mae: the mean absolute colour error where both
                     cover the pixel (the head is unlit, so this is the texture's error against the known albedo,
                     seen at the held-out views)
With truth gan_sample the known head is a sample of the inversion service's generator (the field an oracle with
that sample's exemplar_field renders, services/core/field_render.py), there are no markings (None), and for a field
scene the figures add decoder_sha256 (a digest of the scene's decoder weights: a frozen renderer keeps it).
None of this is a result about a person: it proves that cameras, signs, schedules and stages are right.
ground_truth_targets (run_targets) writes the known head's views as regression targets."""

from __future__ import annotations

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import GroundTruthCheckParams, GroundTruthMeshParams, GroundTruthTargetsParams
from orchestrator.stages.scene import ensure_scene
from services.common.errors import InvalidArgument
from services.core.cameras import PinholeCamera, orbit_camera

WHITE = np.ones(3, np.float32)


def ground_truth(cameras: list[PinholeCamera], field_npz: bytes | None = None,
                 expression: str = "neutral") -> dict[str, np.ndarray]:
    """The marked procedural head (in one of its EXPRESSIONS variants), or the field of field_npz, at cameras
    on white: rgb, alpha, depth, normal_world as numpy (N, C, H, W)."""
    from services.core.camera_batch import CameraBatch

    batch = CameraBatch.from_pinholes(cameras)
    if field_npz is not None:
        from services.core.field_render import FieldRenderer

        out = FieldRenderer.from_npz(field_npz).render(batch, ["rgb", "alpha", "depth", "normal_world"])
    else:
        from services.core.procedural_head import render_head

        out = render_head(batch, markings=True, expression=expression)
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def known_head_views(cameras: list[PinholeCamera], output: str, field_npz: bytes | None = None):
    """The known head (as ground_truth) at cameras, as the render service encodes `output` ("rgb" on white,
    "normal_camera" / "normal_world": unit normals weighted by coverage): (images (N, C, H, W), alpha (N, 1, H, W))."""
    from services.core.camera_batch import CameraBatch

    batch = CameraBatch.from_pinholes(cameras)
    if field_npz is not None:
        from services.core.field_render import FieldRenderer

        out = FieldRenderer.from_npz(field_npz).render(batch, [output, "alpha"])
        return out[output].numpy().astype(np.float32), out["alpha"].numpy().astype(np.float32)
    from services.core.procedural_head import head_normals, render_head

    out = render_head(batch, markings=True)
    if output.startswith("normal"):
        images = head_normals(batch, output.removeprefix("normal_"))
    else:
        images = out[output]
    return images.numpy().astype(np.float32), out["alpha"].numpy().astype(np.float32)


def decoder_digest(field_npz: bytes) -> str:
    """The first 16 hex of the SHA-256 of a field file's decoder arrays (order and bytes)."""
    import hashlib
    import io

    h = hashlib.sha256()
    with np.load(io.BytesIO(field_npz), allow_pickle=False) as npz:
        for k in sorted(k for k in npz.files if k.startswith("decoder.")):
            h.update(k.encode() + np.ascontiguousarray(npz[k], np.float32).tobytes())
    return h.hexdigest()[:16]


def _points(depth: np.ndarray, alpha: np.ndarray, cameras: list[PinholeCamera]) -> np.ndarray:
    """World points (P, 3) of the pixels with alpha > 0.5 of camera-space depth maps (N, 1, H, W)."""
    points = []
    for d, a, cam in zip(depth[:, 0], alpha[:, 0], cameras):
        ys, xs = np.nonzero(a > 0.5)
        z = d[ys, xs]
        K = np.asarray(cam.K, np.float64)
        x = (xs + 0.5 - K[0, 2]) / K[0, 0] * z
        y = (ys + 0.5 - K[1, 2]) / K[1, 1] * z
        c2w = np.linalg.inv(np.asarray(cam.world_to_camera, np.float64))
        points.append(np.stack([x, y, z, np.ones_like(z)], 1) @ c2w.T)
    return np.concatenate(points)[:, :3] if points else np.zeros((0, 3))


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the two mean nearest-neighbour distances between point sets (P, 3) and (Q, 3)."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return float("inf")
    return float((cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2)


def marking_fraction(rgb: np.ndarray) -> float:
    """The fraction of pixels of rgb (3, H, W) close to the procedural head's marking colour."""
    from services.core.procedural_head import MARKING_RGB

    return float((np.abs(rgb - np.asarray(MARKING_RGB)[:, None, None]).max(0) < 0.15).mean())


def measure(render_client, scene_id: str, params: GroundTruthCheckParams, truth_npz: bytes | None = None,
            textured: bool = False) -> dict:
    """The figures of the module docstring for a scene in the render service, against the procedural head or
    the field of truth_npz; textured (a mesh scene) adds the texture figures (coverage 0 without a UV texture)."""
    size = params.resolution
    cams = [orbit_camera(a, params.elevation, params.radius, fov_deg=params.fov, width=size, height=size)
            for a in params.azimuths]
    side = [orbit_camera(a, 0.0, params.radius, fov_deg=params.fov, width=size, height=size) for a in (90.0, -90.0)]
    outputs = ["rgb", "alpha", "depth", "normal_world"] + (["texture_seen"] if textured else [])
    out = render_client.render(scene_id, cams + side, outputs, background=WHITE).outputs
    truth = ground_truth(cams, truth_npz)
    n = len(cams)
    mse = np.mean((np.clip(out["rgb"][:n], 0, 1) - truth["rgb"]) ** 2, axis=(1, 2, 3))
    both = (out["alpha"][:n, 0] > 0.5) & (truth["alpha"][:, 0] > 0.5)
    pred = out["normal_world"][:n] / np.maximum(np.linalg.norm(out["normal_world"][:n], axis=1, keepdims=True), 1e-6)
    cos = np.clip((pred * truth["normal_world"]).sum(1), -1, 1)
    angle = np.degrees(np.arccos(cos))[both]
    left, right = marking_fraction(out["rgb"][n]), marking_fraction(out["rgb"][n + 1])
    markings = None if truth_npz is not None else {"plus_x_view": round(left, 4), "minus_x_view": round(right, 4),
                                                   "correct_side": bool(left > 0.005 and left > 4 * right)}
    texture = None
    if textured:
        head = out["alpha"][:n, 0] > 0.5
        error = np.abs(np.clip(out["rgb"][:n], 0, 1) - truth["rgb"]).mean(1)[both]
        texture = {"coverage": round(float((out["texture_seen"][:n, 0] > 0.5)[head].mean()), 4) if head.any() else None,
                   "colour_mae": round(float(error.mean()), 4) if error.size else None}
    return {"views_deg": list(params.azimuths), "elevation_deg": params.elevation, "resolution": size,
            "psnr_db": round(float(np.mean(-10 * np.log10(np.maximum(mse, 1e-10)))), 2),
            "normal_error_deg": round(float(angle.mean()), 2) if angle.size else None,
            "chamfer": round(chamfer(_points(out["depth"][:n], out["alpha"][:n], cams),
                                     _points(truth["depth"], truth["alpha"], cams)), 4),
            "markings": markings, **({"texture": texture} if textured else {})}


def expression_figures(render_client, scene_id: str, params: GroundTruthCheckParams, texts: list[str]) -> dict:
    """Per code of a dmtet_expression scene (texts: its expression texts, in code order): the Chamfer of its
    surface to every known variant of params.expressions at the held-out views, its normal error against its
    own variant, and `recovered`: its own variant is the nearest one."""
    size = params.resolution
    cams = [orbit_camera(a, params.elevation, params.radius, fov_deg=params.fov, width=size, height=size)
            for a in params.azimuths]
    variants = sorted(set(params.expressions.values()))
    truth = {v: ground_truth(cams, expression=v) for v in variants}
    truth_points = {v: _points(t["depth"], t["alpha"], cams) for v, t in truth.items()}
    figures = {}
    for index, text in enumerate(texts):
        if text not in params.expressions:
            continue
        out = render_client.render(scene_id, cams, ["alpha", "depth", "normal_world"], background=WHITE,
                                   expression=index).outputs
        points = _points(out["depth"], out["alpha"], cams)
        to = {v: round(chamfer(points, truth_points[v]), 4) for v in variants}
        own = truth[params.expressions[text]]
        both = (out["alpha"][:, 0] > 0.5) & (own["alpha"][:, 0] > 0.5)
        pred = out["normal_world"] / np.maximum(np.linalg.norm(out["normal_world"], axis=1, keepdims=True), 1e-6)
        angle = np.degrees(np.arccos(np.clip((pred * own["normal_world"]).sum(1), -1, 1)))[both]
        figures[text] = {"code": index, "variant": params.expressions[text], "chamfer_to": to,
                         "normal_error_deg": round(float(angle.mean()), 2) if angle.size else None,
                         "recovered": min(to, key=to.get) == params.expressions[text]}
    return figures


def run(ctx: StageContext, params: GroundTruthCheckParams) -> None:
    from services.core.planes import FIELD_KINDS

    truth_npz = None
    if params.truth == "gan_sample":
        from orchestrator.stages.generators import export_gan_sample

        _, truth_npz = export_gan_sample(ctx, params.gan)
    scene_id = ensure_scene(ctx)
    figures = measure(ctx.clients.render, scene_id, params, truth_npz, textured=ctx.state["scene"]["kind"] == "mesh")
    if ctx.state["scene"]["kind"] in FIELD_KINDS:
        figures["decoder_sha256"] = decoder_digest(ctx.clients.render.export(scene_id, "npz"))
    if params.expressions and ctx.state["scene"]["kind"] == "dmtet_expression":
        figures["expressions"] = expression_figures(ctx.clients.render, scene_id, params, ctx.state["expressions"])
    sections = ctx.state.setdefault("report", {})
    sections.setdefault("ground_truth", {"note": "a test against the oracle prior's known head, not a result"})
    sections["ground_truth"][params.label or ctx.stage] = figures
    ctx.progress(1, 1, "measured", psnr_db=figures["psnr_db"], chamfer=figures["chamfer"])


def run_mesh(ctx: StageContext, params: GroundTruthMeshParams) -> None:
    """ground_truth_mesh, a TEST stage: the known head (a variant of it) as a GLB artifact."""
    import trimesh

    from services.core.procedural_head import EXPRESSIONS, head_mesh

    if params.expression not in EXPRESSIONS:
        raise InvalidArgument("expression", f"the procedural head's variants are {sorted(EXPRESSIONS)}")
    v, f, colours = head_mesh(params.resolution, markings=True, expression=params.expression)
    mesh = trimesh.Trimesh(v, f, vertex_colors=(np.clip(colours, 0, 1) * 255).astype(np.uint8), process=False)
    ctx.artifact(params.artifact, mesh.export(file_type="glb"))
    ctx.progress(1, 1, f"the known head ({params.expression}), {len(f)} triangles")


def run_targets(ctx: StageContext, params: GroundTruthTargetsParams) -> None:
    """ground_truth_targets, a TEST stage: the known head's views as regression targets, in render_targets'
    format (targets/<stage>.npz), for a check recipe whose paper recipe regresses onto views of its initial
    surface (e.g. Portrait3D-ID's normals of the 3D-GAN): the oracle's exemplars instead."""
    import io

    from orchestrator.stages.cameras import target_views

    truth_npz = None
    if params.truth == "gan_sample":
        from orchestrator.stages.generators import export_gan_sample

        _, truth_npz = export_gan_sample(ctx, params.gan)
    views = target_views(params.cameras, params.target_views, ctx.seed)
    cams = [v.full_camera for v in views]
    images, alpha = known_head_views(cams, params.output, truth_npz)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, alpha=alpha, K=np.stack([c.K for c in cams]),
                        world_to_camera=np.stack([c.world_to_camera for c in cams]), output=np.array(params.output))
    ctx.artifact(f"targets/{ctx.stage}.npz", buf.getvalue())
    ctx.progress(1, 1, f"{len(cams)} known-head views")
