"""Fitting the head template to one subject.

1. rbf_deform / fit_to_landmarks: a smooth landmark-driven deformation (a 3D polyharmonic spline,
   kernel |r|, with an affine part) that carries the template's 68 anchor vertices onto the subject's
   3D landmarks from the face service (which project exactly onto the photo's 2D landmarks). The affine
   part scales the whole head to the subject's face; the spline part shapes the face locally.
2. refine_silhouette: through the render service (any RenderClient: in-process or gRPC), the mesh's
   rendered alpha at the photo's camera is pulled onto the photo's head mask (hair included, made convex)
   above the jaw line. Only silhouette pixels carry gradients; each step's displacement is spread
   smoothly over the cranium while the face, ears and neck stay pinned, so the face keeps its landmark
   fit (landmark_error measures it before and after).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np

from services.core.cameras import PinholeCamera
from services.core.cameras import camera_for_box as crop_camera  # noqa: F401 (re-exported)


def rbf_deform(points: np.ndarray, src: np.ndarray, dst: np.ndarray, smooth: float = 1e-6,
               affine: bool = True) -> np.ndarray:
    """Deform points (N, 3) by the polyharmonic spline (kernel |r|) that maps src (K, 3) to dst (K, 3)
    (exactly when smooth = 0; smooth > 0 relaxes it for near-duplicate controls). affine=False keeps only
    the translation in the polynomial part."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    K = len(src)
    Phi = np.linalg.norm(src[:, None] - src[None], axis=-1) - smooth * np.eye(K)
    P = np.concatenate([np.ones((K, 1)), src], 1) if affine else np.ones((K, 1))
    m = P.shape[1]
    A = np.zeros((K + m, K + m))
    A[:K, :K], A[:K, K:], A[K:, :K] = Phi, P, P.T
    b = np.zeros((K + m, 3))
    b[:K] = dst - src
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    w, c = sol[:K], sol[K:]
    pts = np.asarray(points, np.float64)
    out = pts.copy()
    for start in range(0, len(pts), 8192):
        p = pts[start:start + 8192]
        k = np.linalg.norm(p[:, None] - src[None], axis=-1)
        q = np.concatenate([np.ones((len(p), 1)), p], 1) if affine else np.ones((len(p), 1))
        out[start:start + 8192] = p + k @ w + q @ c
    return out


def fit_to_landmarks(template, landmarks_3d: np.ndarray) -> np.ndarray:
    """Template vertices deformed so the anchors land on the subject's (68, 3) landmarks (head frame).
    The jaw contour (dlib points 0-16, the visible outline, not a fixed anatomical point) and the inner
    lips get a softer pull (regularised) than eyes, brows, nose and mouth corners."""
    lm = np.asarray(landmarks_3d, np.float64)
    src = template.vertices[template.anchors]
    keep = [i for i in range(68) if i not in (61, 62, 63, 65, 66, 67)]   # inner lips duplicate the outer
    return rbf_deform(template.vertices, src[keep], lm[keep], smooth=1e-3)


def landmark_error(vertices: np.ndarray, anchors: np.ndarray, camera: PinholeCamera, lm68: np.ndarray) -> float:
    """RMS distance in pixels between the projected anchor vertices and the photo's 2D landmarks."""
    p = camera.project(np.asarray(vertices)[anchors])
    return float(np.sqrt(((p - lm68) ** 2).sum(1).mean()))


def below_jaw_mask(lm68: np.ndarray, shape: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """bool (H, W): pixels below the jaw polyline (neck, shoulders); margin > 0 moves the line down."""
    up = lm68[27] - lm68[8]
    up = up / max(np.linalg.norm(up), 1e-6)
    jaw = lm68[0:17] - up * margin
    far = float(np.linalg.norm(shape)) * 2
    poly = np.concatenate([jaw, [jaw[-1] - up * far], [jaw[0] - up * far]])
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1)
    return m.astype(bool)


@dataclass
class SilhouetteFit:
    vertices: np.ndarray
    steps: int
    iou_before: float
    iou_after: float
    losses: list[float] = field(default_factory=list)


def mesh_glb(vertices: np.ndarray, template, texture: np.ndarray | None = None) -> bytes:
    """A GLB of the template topology with the given vertices (UV seams split as glTF needs; the render
    service welds them back by position, keeping this vertex order) and an optional (T, T, 3) float texture."""
    import trimesh
    from PIL import Image
    from trimesh.visual.material import PBRMaterial

    faces, uv_faces = template.faces, template.uv_faces
    pairs = np.stack([faces.ravel(), uv_faces.ravel()], 1)
    # geometry vertices first, in order, each with the UV of its first corner; then extra seam copies
    V = len(vertices)
    first_uv = np.full(V, -1, np.int64)
    order = np.argsort(pairs[:, 0], kind="stable")
    fv, fu = pairs[order, 0], pairs[order, 1]
    starts = np.r_[True, fv[1:] != fv[:-1]]
    first_uv[fv[starts]] = fu[starts]
    key_to_idx = {(int(v), int(first_uv[v])): int(v) for v in range(V)}
    extra_v, extra_u = [], []
    corner_idx = np.empty(len(pairs), np.int64)
    for n, (v, u) in enumerate(pairs.tolist()):
        k = (v, u)
        idx = key_to_idx.get(k)
        if idx is None:
            idx = V + len(extra_v)
            key_to_idx[k] = idx
            extra_v.append(v)
            extra_u.append(u)
        corner_idx[n] = idx
    pos = np.concatenate([vertices, np.asarray(vertices)[extra_v]]) if extra_v else np.asarray(vertices)
    uv = np.concatenate([template.uvs[first_uv], template.uvs[extra_u]]) if extra_u else template.uvs[first_uv]
    uv_gl = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)   # glTF/trimesh: v up
    tex = np.full((64, 64, 3), 0.5) if texture is None else np.asarray(texture)
    image = Image.fromarray((np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8))
    material = PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uv_gl, material=material)
    mesh = trimesh.Trimesh(pos, corner_idx.reshape(-1, 3), visual=visual, process=False)
    return trimesh.Scene(mesh).export(file_type="glb")


def _checkpoint_vertices(data: bytes) -> np.ndarray:
    from safetensors.numpy import load

    return np.asarray(load(data)["rep/vertices"], np.float64)


def _with_vertices(data: bytes, vertices: np.ndarray) -> bytes:
    """The same scene checkpoint (safetensors + its JSON metadata) with other vertex positions."""
    from safetensors.numpy import load, save

    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    tensors = load(data)
    tensors["rep/vertices"] = np.asarray(vertices, np.float32)
    return save(tensors, metadata=metadata)


def scene_vertices(render_client, scene_id: str) -> np.ndarray:
    """The scene's current vertex positions, read from its checkpoint (safetensors)."""
    return _checkpoint_vertices(render_client.get_state(scene_id, exclude_optimizer=True))


def smoothing_operator(template, spread: float = 400.0):
    """d -> (I + spread L + pin)^-1 d (L: the mesh's graph Laplacian; pin: a large weight on the
    landmark-fitted face, the ears, the neck): spreads a displacement that only silhouette vertices received over the
    surrounding surface as a smooth bump, and keeps the face where the landmarks put it. Factorised once."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    tv = template.vertices
    V = len(tv)
    f = template.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.unique(np.sort(e, 1), axis=0)
    A = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V))
    A = (A + A.T).tocsr()
    L = sp.diags(np.asarray(A.sum(1)).ravel()) - A
    face = (tv[:, 2] > 0.25) & (tv[:, 1] < 0.62) & (tv[:, 1] > -1.05) & (np.abs(tv[:, 0]) < 0.62)
    # only the cranium and ears move (the outline carries the hair volume); face and neck stay where they are
    pinned = face | (template.region == 3) | ((template.region == 0) & (tv[:, 1] < -0.1))
    lu = splu((sp.identity(V) + spread * L + sp.diags(pinned * 1e3)).tocsc())
    return lambda d: lu.solve(np.ascontiguousarray(d, np.float64))


def head_box(head_mask: np.ndarray, lm68: np.ndarray, grow: float = 1.25) -> tuple[float, float, float, float]:
    """A square pixel box around the head mask and the landmarks, grown by `grow`."""
    ys, xs = np.nonzero(np.asarray(head_mask) > 0)
    pts = np.concatenate([lm68, np.stack([xs, ys], 1)]) if len(xs) else lm68
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, (hi - lo).max() / 2 * grow
    return float(c[0] - half), float(c[1] - half), float(c[0] + half), float(c[1] + half)


def silhouette_target(head_mask: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """The outline the cranium is fitted to: the head mask above the jaw line, made convex (GrabCut's
    notches and stray wisps would become bumps on the skull), float (H, W) in {0, 1}."""
    m = (np.asarray(head_mask) > 0).astype(np.uint8)
    m[below_jaw_mask(lm68, m.shape)] = 0
    pts = cv2.findNonZero(m)
    if pts is None:
        return m.astype(np.float32)
    hull = np.zeros_like(m)
    cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
    return hull.astype(np.float32)


def _crop_problem(camera, head_mask, lm68, size):
    box = head_box(head_mask, lm68)
    cam = crop_camera(camera, box, size)
    s = size / (box[2] - box[0])
    M = np.array([[s, 0, -box[0] * s], [0, s, -box[1] * s]])
    target = cv2.warpAffine(silhouette_target(head_mask, lm68), M, (size, size), flags=cv2.INTER_AREA)
    lm = (lm68 - [box[0], box[1]]) * s
    ignore = below_jaw_mask(lm, (size, size), margin=-0.02 * size)
    return cam, target, (~ignore).astype(np.float32)


def refine_silhouette(render_client, template, vertices: np.ndarray, camera: PinholeCamera,
                      head_mask: np.ndarray, lm68: np.ndarray, *, steps: int = 20, size: int = 160,
                      step_size: tuple[float, float] = (0.04, 0.006), progress=None) -> SilhouetteFit:
    """Pull the mesh's silhouette at the photo's camera onto head_mask (uint8/bool (H, W)) above the jaw
    line, through the render service. Each step: Render alpha with a step handle, send dLoss/dAlpha of
    the masked squared error, let the service take a plain gradient step (Adam with beta1 = 0 and a large
    eps is gradient descent), read the displacement back, spread it smoothly over the surface
    (smoothing_operator; the face stays pinned), normalise it to the step size and write it with SetState.
    Returns the new vertices and the mask IoU before/after."""
    from services.render.types import LrSchedule, OptimizerSpec
    from services.render.types import GradientTerm

    crop_cam, target, weight = _crop_problem(camera, head_mask, lm68, size)
    camera = crop_cam
    probe = 1e-4   # the service's step is lr * g / eps = probe * g: small and linear in the gradient
    spec = OptimizerSpec(lrs={"vertices": LrSchedule.constant(probe * 1e6)}, frozen={"texture"}, betas=(0.0, 0.999),
                         eps=1e6)
    scene = render_client.create_scene("mesh", asset=(mesh_glb(vertices, template), "glb"), optimizer=spec,
                                       label="fast-fit")
    smooth = smoothing_operator(template)
    current = np.asarray(vertices, np.float64)
    losses: list[float] = []
    try:
        ious = []
        for step in range(steps + 1):
            out = render_client.render(scene.scene_id, [camera], ["alpha"], requires_grad=step < steps)
            alpha = out.outputs["alpha"][0, 0]
            inter = float(((alpha > 0.5) & (target > 0.5) & (weight > 0)).sum())
            union = float((((alpha > 0.5) | (target > 0.5)) & (weight > 0)).sum())
            ious.append(inter / max(union, 1.0))
            if step == steps:
                break
            diff = (alpha - target) * weight
            losses.append(float((diff ** 2).mean()))
            grad = (2 * diff)[None, None].astype(np.float32)
            render_client.apply_gradients(scene.scene_id, [GradientTerm(out.step_handle, "alpha", grad)])
            state = render_client.get_state(scene.scene_id, exclude_optimizer=True)
            moved = _checkpoint_vertices(state) - current
            d = smooth(moved)
            peak = float(np.linalg.norm(d, axis=1).max())
            if peak < 1e-12:
                break
            f = step / max(steps - 1, 1)
            current = current + d * (step_size[0] * (1 - f) + step_size[1] * f) / peak
            render_client.set_state(scene.scene_id, _with_vertices(state, current))
            if progress:
                progress(step + 1, steps)
    finally:
        render_client.close_scene(scene.scene_id)
    return SilhouetteFit(current, len(losses), ious[0], ious[-1], losses)
