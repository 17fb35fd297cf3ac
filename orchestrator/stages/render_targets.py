"""render_targets: the job's scene rendered at a set of views and stored as regression targets
(targets/<stage>.npz: images (V, C, H, W), alpha (V, 1, H, W), K (V, 3, 3), world_to_camera (V, 4, 4), the
render output's name), for a later optimise stage's `regress` term. Portrait3D-ID renders the inverted 3D-GAN's
normals over cameras of the GAN's range and fits the DMTet made from it to them (the first step of its geometry
sculpting)."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.stages.cameras import target_views
from orchestrator.stages.context import StageContext
from orchestrator.stages.params import RenderTargetsParams
from orchestrator.stages.scene import ensure_scene


def run(ctx: StageContext, params: RenderTargetsParams) -> None:
    scene_id = ensure_scene(ctx)
    views = target_views(params.cameras, params.target_views, ctx.seed)
    images, alphas = [], []
    for k, v in enumerate(views):
        ctx.check_cancelled()
        out = ctx.clients.render.render(scene_id, [v.full_camera], [params.output, "alpha"],
                                        background=v.background).outputs
        images.append(out[params.output][0])
        alphas.append(out["alpha"][0])
        ctx.progress(k + 1, len(views), f"view {k}")
    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.stack(images).astype(np.float32), alpha=np.stack(alphas).astype(np.float32),
                        K=np.stack([v.full_camera.K for v in views]),
                        world_to_camera=np.stack([v.full_camera.world_to_camera for v in views]),
                        output=np.array(params.output))
    name = f"targets/{ctx.stage}.npz"
    ctx.artifact(name, buf.getvalue())
    ctx.add_report_section("render_targets", {ctx.stage: {"artifact": name, "views": len(views),
                                                          "output": params.output}})
