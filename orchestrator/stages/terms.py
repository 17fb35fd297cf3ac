"""The optimise stage's terms as image-space gradients: each function renders what its terms need through
the render service (with a step handle), computes dLoss/dImage (losses.py here, Distill from the guidance
service, IdentityLoss from the face service) and returns GradientTerms for ApplyGradients, plus the step's
figures. The Subject holds what the terms read about the photo, loaded once per stage run."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from orchestrator.stages import losses
from orchestrator.stages.cameras import View
from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import Term
from orchestrator.stages.schedules import schedule_at
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import decode_png
from services.core.cameras import PinholeCamera, camera_for_box
from services.guidance.types import Conditions, ControlInput, DistillRequest, ReferenceView, TimestepSchedule
from services.render.types import EnvironmentMap, GradientTerm

WHITE = np.ones(3, np.float32)


@dataclass
class Look:
    """What a step's renders show besides the cameras: the expression (index into a dmtet_expression
    scene's codes, and its text for the terms' expression conditioning) and the shading of the sds /
    identity views ("" = the scene's default; "pbr" / "pbr_diffuse" with `environment`)."""

    expression: int = 0
    expression_text: str = ""
    shading: str = ""
    environment: EnvironmentMap | None = None


@dataclass
class Subject:
    """The photo as the terms see it: the reference camera at the stage's reference resolution R, the
    photo (1, 3, R, R) and head mask (1, 1, R, R) in [0, 1], the identity embedding, the 3D landmarks
    (68, 3) and (478, 3) when the face model gave them (head frame, or aligned to the scene by align_landmarks),
    the full-size reference picture for image-conditioned priors, and loaded targets."""

    camera: PinholeCamera | None = None
    rgb: np.ndarray | None = None
    mask: np.ndarray | None = None
    embedding: np.ndarray | None = None
    landmarks_3d: np.ndarray | None = None
    landmarks_3d_478: np.ndarray | None = None
    reference: ReferenceView | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)       # reference normal / depth maps
    regress: dict[str, tuple[np.ndarray, list[PinholeCamera]]] = field(default_factory=dict)
    noise: dict[int, np.ndarray] = field(default_factory=dict)         # fixed noise per sds term
    lpips: dict[tuple[str, str], object] = field(default_factory=dict)  # perceptual terms' networks


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) float -> (C, size, size), bilinear."""
    return np.stack([cv2.resize(c.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) for c in array])


def load_subject(ctx: StageContext, terms: list[Term], resolution: int) -> Subject:
    """What the terms need, read from preprocess's state and the job's artifacts (FailedPrecondition
    naming what is missing)."""
    s = Subject()
    if any(t.needs_photo() for t in terms):
        ref = ctx.state.get("reference")
        if not ref:
            raise FailedPrecondition(f"{ctx.stage}: its terms need the photo; put a preprocess stage before it",
                                     reason="NO_PREPROCESS")
        photo = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
        mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0]
        full = camera_from_json(ref["camera"])
        s.camera = camera_for_box(full, (0, 0, full.width, full.height), resolution)
        s.rgb = _resize(photo.transpose(2, 0, 1) / 255.0, resolution)[None]
        s.mask = _resize(mask[None] / 255.0, resolution)[None]
        s.reference = ReferenceView(photo, full)
        if "embedding" in ref:
            s.embedding = np.asarray(ref["embedding"], np.float32)
        if "photo" in ctx.state:
            from orchestrator.stages.align_landmarks import aligned_landmarks
            from orchestrator.stages.preprocess import load_photo_face

            aligned = aligned_landmarks(ctx)
            if aligned is None:
                face = load_photo_face(ctx)
                aligned = {"landmarks_3d_68": face.landmarks_3d_68, "landmarks_3d_478": face.landmarks_3d_478}
            s.landmarks_3d, s.landmarks_3d_478 = aligned["landmarks_3d_68"], aligned.get("landmarks_3d_478")
    for i, t in enumerate(terms):
        where = f"terms[{i}].target"
        if t.kind in ("reference_normal", "reference_depth"):
            target = np.load(_artifact_file(ctx, t.target, where))
            channels = 3 if t.kind == "reference_normal" else 1
            if target.ndim != 3 or target.shape[0] != channels:
                raise InvalidArgument(where, f"{t.target} must be ({channels}, H, W), got {list(target.shape)}")
            s.targets[t.target] = _resize(target, resolution)[None]
        elif t.kind == "regress":
            data = np.load(_artifact_file(ctx, t.target, where))
            stored = str(data["output"]) if "output" in data.files else "rgb"
            if stored != t.output:
                raise InvalidArgument(where, f"{t.target} holds {stored} targets; the term regresses {t.output}")
            cams = [PinholeCamera(K, w2c, data["images"].shape[-1], data["images"].shape[-2])
                    for K, w2c in zip(data["K"], data["world_to_camera"])]
            s.regress[t.target] = (data["images"].astype(np.float32), cams)
        elif t.kind == "perceptual" and (t.lpips_vgg, t.lpips_lin) not in s.lpips:
            from services.core.lpips import LPIPS

            s.lpips[(t.lpips_vgg, t.lpips_lin)] = LPIPS.from_files(ctx.model_path(t.lpips_vgg),
                                                                   ctx.model_path(t.lpips_lin) or None)
        if t.identity_scale > 0 or t.kind == "identity":
            if s.embedding is None:
                raise FailedPrecondition(f"{ctx.stage}: terms[{i}] needs the photo's identity embedding (the "
                                         "face service gave none)", reason="NO_EMBEDDING")
        if any(c.kind == "landmarks" for c in t.controls) and s.landmarks_3d is None:
            raise FailedPrecondition(f"{ctx.stage}: terms[{i}] draws landmark controls: preprocess must run first",
                                     reason="NO_PREPROCESS")
        if any(c.kind == "landmarks" and c.points == 478 for c in t.controls) and s.landmarks_3d_478 is None:
            raise FailedPrecondition(f"{ctx.stage}: terms[{i}] draws MediaPipe's 478 landmarks, but the face model "
                                     "gave 68 points only (use a MediaPipe detector, or points: 68)",
                                     reason="NO_DENSE_LANDMARKS")
    return s


def _artifact_file(ctx: StageContext, name: str, where: str):
    import io

    try:
        return io.BytesIO(ctx.read_artifact(name))
    except (FileNotFoundError, KeyError) as e:
        raise InvalidArgument(where, f"the job has no artifact {name!r}") from e


def reference_terms(ctx: StageContext, scene_id: str, subject: Subject, due: list[tuple[Term, float]],
                    metrics: dict, look: Look | None = None) -> list[GradientTerm]:
    """The reference_* terms: one render at the photo's camera on white (of the step's expression)."""
    outputs = sorted(set().union(*(t.render_outputs() for t, _ in due)))
    r = ctx.clients.render.render(scene_id, [subject.camera], outputs, requires_grad=True, background=WHITE,
                                  expression=(look or Look()).expression)
    out, grads = r.outputs, []
    # normal and depth targets only inside the head and where the render is solid (the normal loss's
    # gradient grows like 1/alpha at soft edges)
    inside = (subject.mask > 0.5) & (out["alpha"] > 0.5) if "alpha" in out else subject.mask > 0.5
    for t, w in due:
        if t.kind == "reference_rgb":
            loss, g, name = *losses.photometric(out["rgb"], subject.rgb, l1_weight=t.l1, l2_weight=t.l2), "rgb"
        elif t.kind == "reference_mask":
            loss, g, name = *losses.mask_loss(out["alpha"], subject.mask), "alpha"
        elif t.kind == "perceptual":
            loss, g, name = *perceptual(subject.lpips[(t.lpips_vgg, t.lpips_lin)], out["rgb"], subject.rgb), "rgb"
        elif t.kind == "reference_normal":
            loss, g, name = *losses.normal_loss(out["normal_camera"], subject.targets[t.target], inside), "normal_camera"
        else:
            loss, g, name = *losses.pearson_depth_loss(out["depth"], subject.targets[t.target], inside), "depth"
        metrics[t.kind] = loss
        grads.append(GradientTerm(r.step_handle, name, (w * g).astype(np.float32), name=t.kind))
    return grads


def perceptual(lpips, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean LPIPS distance of pred (N, 3, H, W) in [0, 1] to target (1 or N, 3, H, W), and its gradient
    with respect to pred (torch autograd through the VGG)."""
    import torch

    x = torch.tensor(np.asarray(pred, np.float32), requires_grad=True)
    d = lpips(x, torch.as_tensor(np.asarray(target, np.float32))).mean()
    d.backward()
    return float(d.detach()), x.grad.numpy()


def _timesteps(t: Term, step: int, total: int) -> TimestepSchedule:
    """The term's timestep range at a step: piecewise-linear t_anneal points when given, else t_range
    annealed to t_range_end over the stage."""
    if t.t_anneal:
        points = t.t_anneal
        if step <= points[0][0]:
            lo, hi = points[0][1:]
        elif step >= points[-1][0]:
            lo, hi = points[-1][1:]
        else:
            k = next(i for i in range(1, len(points)) if step < points[i][0])
            (s0, a0, b0), (s1, a1, b1) = points[k - 1], points[k]
            f = (step - s0) / (s1 - s0)
            lo, hi = a0 + (a1 - a0) * f, b0 + (b1 - b0) * f
        return TimestepSchedule(t_min=lo, t_max=hi, sampling=t.t_sampling)
    end = t.t_range_end or (0.0, 0.0)
    return TimestepSchedule(t_min=t.t_range[0], t_max=t.t_range[1], t_min_end=end[0], t_max_end=end[1],
                            training_fraction=step / max(1, total - 1), sampling=t.t_sampling)


def _controls(t: Term, subject: Subject, views: list[View], out: dict) -> list[ControlInput]:
    controls = []
    for c in t.controls:
        if c.kind == "landmarks":
            landmarks = subject.landmarks_3d_478 if c.points == 478 else subject.landmarks_3d
            points = np.stack([losses.landmark_control_points(landmarks, v.camera) for v in views])
            controls.append(ControlInput(kind="landmarks", name=c.name, scale=c.scale,
                                         landmarks=losses.landmark_control(points).landmarks))
        elif c.kind == "normal":
            controls.append(ControlInput(kind="normal", name=c.name, scale=c.scale, image=out["normal_camera"]))
        else:
            controls.append(ControlInput(kind="depth", name=c.name, scale=c.scale, image=out["depth"]))
    return controls


def _fixed_noise(ctx: StageContext, index: int, t: Term, n: int, size: int, subject: Subject) -> np.ndarray:
    """The same noise for view slot k of this term at every step (latent shape from the backbone)."""
    if index not in subject.noise:
        backbones = ctx.clients.guidance.describe().backbones
        info = next((i for i, is_default in backbones if (i.name == t.backbone if t.backbone else is_default)),
                    backbones[0][0])
        r = (t.resolution or info.native_resolution) // info.latent_scale_factor
        rng = np.random.default_rng([ctx.seed, 7919, index])
        subject.noise[index] = rng.standard_normal((n, info.latent_channels, r, r)).astype(np.float32)
    return subject.noise[index]


def view_terms(ctx: StageContext, scene_id: str, subject: Subject, due: list[tuple[int, Term, float]],
               views: list[View], step: int, total: int, metrics: dict, look: Look | None = None) -> list[GradientTerm]:
    """The sds and identity terms on the step's views: one render with every output they need, of the
    step's expression and shading (look)."""
    look = look or Look()
    outputs = sorted(set().union(*(t.render_outputs() for _, t, _ in due)))
    size = views[0].camera.height
    background = np.stack([np.broadcast_to(v.background[:, None, None], (3, size, size)) for v in views])
    r = ctx.clients.render.render(scene_id, [v.camera for v in views], outputs, requires_grad=True,
                                  background=background, expression=look.expression, shading=look.shading,
                                  environment=look.environment)
    out, grads = r.outputs, []
    rng = np.random.default_rng([ctx.seed, step, 1])
    for index, t, w in due:
        if t.kind == "identity":
            result = ctx.clients.face.identity_loss(np.clip(out["rgb"], 0, 1), subject.embedding)
            metrics["identity_loss"] = float(np.mean(result.loss))
            grads.append(GradientTerm(r.step_handle, "rgb", result.grad.astype(np.float32), weight=w, name="identity"))
            continue
        normals = t.output.startswith("normal")
        # renders can overshoot [0, 1] slightly (unclamped colours): the prior sees them clipped and its
        # gradient passes straight through; normal maps go as pictures (n + 1) / 2
        images = np.clip((out[t.output] + 1) / 2 if normals else out[t.output], 0, 1)
        conditions = Conditions(
            backbone=t.backbone, prompt=t.prompt or ctx.prompt, negative_prompt=t.negative_prompt,
            view_dependent_prompt=t.view_dependent_prompt, loras=[(lora.name, lora.scale) for lora in t.loras],
            identity_embedding=subject.embedding if t.identity_scale > 0 else None,
            identity_scale=t.identity_scale, identity_adapter=t.identity_adapter,
            expression=look.expression_text if t.expression_scale > 0 else "",
            expression_scale=t.expression_scale if look.expression_text else 0.0,
            controls=_controls(t, subject, views, out))
        d = ctx.clients.guidance.distill(DistillRequest(
            images=np.ascontiguousarray(images, np.float32), cameras=[v.camera for v in views], conditions=conditions,
            variant=t.variant, reference=subject.reference if t.reference_view else None,
            guidance_scale=t.guidance_scale, timesteps=_timesteps(t, step, total), weighting=t.weighting,
            noise=_fixed_noise(ctx, index, t, len(views), size, subject) if t.noise == "fixed" else None,
            seed=int(rng.integers(1, 2 ** 62)), resolution=t.resolution, grad_clip=t.grad_clip,
            background=np.stack([v.background for v in views]).astype(np.float32)))
        metrics["sds_loss" if t.output == "rgb" else f"sds_{t.output}_loss"] = float(np.mean([x.loss for x in d.diagnostics]))
        grad = d.grad.astype(np.float32) * (0.5 if normals else 1.0)
        grads.append(GradientTerm(r.step_handle, t.output, grad, weight=w, name=f"sds:{t.output}"))
    return grads


def regress_terms(ctx: StageContext, scene_id: str, subject: Subject, due: list[tuple[Term, float]], step: int,
                  metrics: dict, look: Look | None = None) -> list[GradientTerm]:
    """Each regress term: its next stored target view in turn, L1/L2 of the render output to it."""
    grads = []
    for t, w in due:
        images, cams = subject.regress[t.target]
        k = (step // t.every) % len(cams)
        r = ctx.clients.render.render(scene_id, [cams[k]], [t.output], requires_grad=True, background=WHITE,
                                      expression=(look or Look()).expression)
        loss, g = losses.photometric(r.outputs[t.output], images[k:k + 1], l1_weight=t.l1, l2_weight=t.l2)
        metrics["regress" if t.output == "rgb" else f"regress_{t.output}"] = loss
        grads.append(GradientTerm(r.step_handle, t.output, (w * g).astype(np.float32), name=f"regress:{t.output}"))
    return grads


def due_terms(terms: list[Term], step: int) -> list[tuple[int, Term, float]]:
    """(index, term, weight) of the terms applied at this step: step % every == phase and weight > 0."""
    due = [(i, t, schedule_at(t.weight, step)) for i, t in enumerate(terms) if step % t.every == t.phase]
    return [(i, t, w) for i, t, w in due if w > 0]
