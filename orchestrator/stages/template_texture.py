"""template_texture: the photo back-projected by the render service onto the fitted template, the unseen
side mirrored and the rest inpainted towards hair and skin tones from the photo (orchestrator/texture.py).
The textured mesh becomes the job's scene (checkpointed like any scene); texture.png is written beside it
and the report gets the texture section (coverage figures)."""

from __future__ import annotations

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import TemplateTextureParams
from orchestrator.stages.preprocess import load_photo_face
from orchestrator.stages.template_fit import load_fitted_vertices
from services.common.images import encode_png

TEXTURE = "texture.png"


def _photo_yaw(ctx: StageContext) -> float:
    """The photo's face yaw in degrees (preprocess/face.json pose.yaw: preprocess writes it with the face
    that load_photo_face needs)."""
    import json

    return float(json.loads(ctx.read_artifact("preprocess/face.json"))["pose"]["yaw"])


def run(ctx: StageContext, params: TemplateTextureParams) -> None:
    from orchestrator.head_template.build import load_template
    from orchestrator.head_template.fit import mesh_glb
    from orchestrator.stages.scene import close_scene, set_job_scene
    from orchestrator.texture import complete_texture, photo_tones, projection_mask

    face = load_photo_face(ctx)
    vertices = load_fitted_vertices(ctx)
    template = load_template()
    render = ctx.clients.render
    size = params.texture_size
    grey = np.full((size, size, 3), 0.5, np.float32)
    probe = render.create_scene("mesh", asset=(mesh_glb(vertices, template, grey), "glb"), label=f"{ctx.job_id}-tex")
    try:
        ctx.progress(1, 3, "back-project")
        bp = render.back_project(probe.scene_id, face.rgb, face.camera,
                                 mask=projection_mask(face.head_mask, face.landmarks_68), min_cosine=0.2)
    finally:
        render.close_scene(probe.scene_id)
    ctx.progress(2, 3, "complete")
    tones = photo_tones(face.rgb, face.landmarks_68, face.head_mask, face.face_mask)
    texture, stats = complete_texture(bp.texture.transpose(1, 2, 0), bp.visibility[0], template, tones,
                                      yaw_deg=_photo_yaw(ctx))
    ctx.artifact(TEXTURE, encode_png((texture * 255 + 0.5).astype(np.uint8)))
    close_scene(ctx)
    info = render.create_scene("mesh", asset=(mesh_glb(vertices, template, texture), "glb"), label=ctx.job_id)
    set_job_scene(ctx, "mesh", info.scene_id)
    ctx.state["texture"] = TEXTURE
    ctx.add_report_section("texture", {"size": size, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                        for k, v in stats.items()}})
    ctx.add_report_section("models", {"render": {"kind": "mesh", "backend": getattr(info, "backend", "")}})
    ctx.progress(3, 3, "done")
