"""refine: image-space refinement of the job's scene. Each round renders the target views, has the guidance
service Denoise them into targets (noise of `strength`, the prompt; the picture keeps its layout), stores
them (refine/<stage>/targets_<round>.npz: images and cameras) and regresses the scene onto them for
`iterations` steps, one target view per step in turn, optionally on a random square patch of it (the patch
camera renders exactly that crop of the view). Denoise can also be conditioned on the photo's identity and
the view's rendered normals; each step can add LPIPS to the target and the reference view's L2 to the photo
(Portrait3D-ID's L_MSE + L_percep + L_MSE^ref). Round and step are checkpointed."""

from __future__ import annotations

import io

import cv2
import numpy as np

from orchestrator.stages import losses
from orchestrator.stages import terms as T
from orchestrator.stages.cameras import step_rng, target_views
from orchestrator.stages.context import StageContext
from orchestrator.stages.params import RefineParams, Term
from orchestrator.stages.scene import ensure_scene, use_optimizer
from services.core.cameras import PinholeCamera, camera_for_box
from services.common.errors import FailedPrecondition
from services.guidance.types import Conditions, ControlInput, DenoiseRequest
from services.render.types import GradientTerm


def _embedding(ctx: StageContext, params: RefineParams) -> np.ndarray | None:
    if params.identity_scale == 0:
        return None
    ref = ctx.state.get("reference") or {}
    if "embedding" not in ref:
        raise FailedPrecondition(f"{ctx.stage}: identity_scale > 0 needs the photo's identity embedding (run a "
                                 "preprocess stage with a face model that gives one)", reason="NO_EMBEDDING")
    return np.asarray(ref["embedding"], np.float32)


def _make_targets(ctx: StageContext, scene_id: str, params: RefineParams, round_: int) -> str:
    views = target_views(params.cameras, params.target_views, ctx.seed, round_, params.rounds)
    cams = [v.full_camera for v in views]
    render = ctx.clients.render
    outputs = ["rgb", "normal_camera"] if params.normal_control > 0 else ["rgb"]
    rendered = [render.render(scene_id, [c], outputs, background=v.background).outputs for c, v in zip(cams, views)]
    images = np.concatenate([o["rgb"] for o in rendered])
    embedding = _embedding(ctx, params)
    guidance = ctx.clients.guidance
    per_call = max(1, guidance.describe().max_batch_images)   # more views than one request may carry: in turn
    parts = []
    for i in range(0, len(views), per_call):
        part = slice(i, i + per_call)
        controls = [ControlInput(kind="normal", scale=params.normal_control,
                                 image=np.concatenate([o["normal_camera"] for o in rendered[part]]))] \
            if params.normal_control > 0 else []
        parts.append(guidance.denoise(DenoiseRequest(
            images=np.clip(images[part], 0, 1).astype(np.float32), strength=params.strength, cameras=cams[part],
            conditions=Conditions(backbone=params.backbone, prompt=params.prompt or ctx.prompt,
                                  negative_prompt=params.negative_prompt, identity_embedding=embedding,
                                  identity_scale=params.identity_scale, identity_adapter=params.identity_adapter,
                                  controls=controls),
            num_steps=params.num_steps, guidance_scale=params.guidance_scale, seed=ctx.seed + 907 + round_ + i,
            background=np.stack([v.background for v in views[part]]).astype(np.float32))).images)
    targets = np.concatenate(parts)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=targets.astype(np.float32), K=np.stack([c.K for c in cams]),
                        world_to_camera=np.stack([c.world_to_camera for c in cams]),
                        backgrounds=np.stack([v.background for v in views]))
    name = f"refine/{ctx.stage}/targets_{round_}.npz" if params.keep_targets == "all" else \
        f"refine/{ctx.stage}/targets.npz"
    ctx.artifact(name, buf.getvalue())
    return name


def _patch(image: np.ndarray, camera: PinholeCamera, size: int, rng: np.random.Generator, native: bool = False):
    """A random square crop of a target view: (camera of the crop at size x size, (1, 3, size, size)); its side
    is drawn from size/2 .. the view's side, or (native) is exactly `size` pixels of the target."""
    h = camera.height
    side = min(size, h) if native else int(rng.integers(max(8, size // 2), h + 1))
    x0, y0 = (int(v) for v in rng.integers(0, h - side + 1, size=2))
    crop = image[:, y0:y0 + side, x0:x0 + side].transpose(1, 2, 0)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    return camera_for_box(camera, (x0, y0, x0 + side, y0 + side), size), crop.transpose(2, 0, 1)[None]


def _extra_terms(params: RefineParams) -> list[Term]:
    """The optimise-stage terms whose inputs (LPIPS weights, the photo's reference view) refine's own
    perceptual and reference_l2 losses read: perceptual first, reference_rgb last."""
    extra = []
    if params.perceptual > 0:
        extra.append(Term(kind="perceptual", lpips_vgg=params.lpips_vgg, lpips_lin=params.lpips_lin))
    if params.reference_l2 > 0:
        extra.append(Term(kind="reference_rgb", l2=1.0))
    return extra


def run(ctx: StageContext, params: RefineParams) -> None:
    state = ctx.state.setdefault("refine", {}).setdefault(ctx.stage, {"round": 0, "step": 0, "targets": ""})
    fresh = state["round"] == 0 and state["step"] == 0 and not state["targets"]
    scene_id = use_optimizer(ctx, params.optimizer) if params.optimizer is not None and fresh else ensure_scene(ctx)
    render = ctx.clients.render
    extra = _extra_terms(params)
    subject = T.load_subject(ctx, extra, params.reference_resolution) if extra else None
    while state["round"] < params.rounds:
        if not state["targets"]:
            state["targets"] = _make_targets(ctx, scene_id, params, state["round"])
            ctx.checkpoint()
        data = np.load(io.BytesIO(ctx.read_artifact(state["targets"])))
        images, backgrounds = data["images"], data["backgrounds"]
        cams = [PinholeCamera(K, w2c, images.shape[-1], images.shape[-2]) for K, w2c in zip(data["K"], data["world_to_camera"])]
        for step in range(state["step"], params.iterations):
            ctx.check_cancelled()
            k = step % len(cams)
            camera, target = cams[k], images[k:k + 1]
            if params.patch_size:
                camera, target = _patch(images[k], cams[k], params.patch_size, step_rng(ctx.seed + state["round"], step),
                                        native=params.patch_crop == "native")
            outputs = ["rgb", "alpha"] if params.alpha_weighted else ["rgb"]
            r = render.render(scene_id, [camera], outputs, requires_grad=True, background=backgrounds[k])
            if params.alpha_weighted:
                loss, grad, grad_alpha = losses.alpha_weighted_photometric(
                    r.outputs["rgb"], r.outputs["alpha"], target, l1_weight=params.l1, l2_weight=params.l2)
                terms = [GradientTerm(r.step_handle, "rgb", grad.astype(np.float32), name="refine"),
                         GradientTerm(r.step_handle, "alpha", grad_alpha.astype(np.float32), name="refine_alpha")]
            else:
                loss, grad = losses.photometric(r.outputs["rgb"], target, l1_weight=params.l1, l2_weight=params.l2)
                terms = [GradientTerm(r.step_handle, "rgb", grad.astype(np.float32), name="refine")]
            metrics = {"refine": loss}
            if params.perceptual > 0:
                d, g = T.perceptual(subject.lpips[(params.lpips_vgg, params.lpips_lin)], r.outputs["rgb"], target)
                metrics["perceptual"] = d
                terms.append(GradientTerm(r.step_handle, "rgb", (params.perceptual * g).astype(np.float32),
                                          name="refine_perceptual"))
            if params.reference_l2 > 0:
                terms += T.reference_terms(ctx, scene_id, subject, [(extra[-1], params.reference_l2)], metrics)
            render.apply_gradients(scene_id, terms)
            state["step"] = step + 1
            if (step + 1) % ctx.checkpoint_every == 0 or step + 1 == params.iterations:
                ctx.checkpoint(render.get_state(scene_id))
            done = state["round"] * params.iterations + step + 1
            ctx.progress(done, params.rounds * params.iterations, f"round {state['round']}", **metrics)
        state.update(round=state["round"] + 1, step=0, targets="")
        ctx.checkpoint(render.get_state(scene_id))
