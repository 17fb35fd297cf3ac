"""The `fast` recipe: one portrait -> a textured 3D head on a CPU in well under a minute, no weights
beyond the shipped dlib models.

    analyse   face service: 68 landmarks, 3D landmarks and pose, the photo's camera, head/face masks,
              identity embedding (largest face, or face_index)
    fit       the project's head template (orchestrator/head_template) deformed to the 3D landmarks,
              then its silhouette fitted to the head mask through the render service
    texture   the photo back-projected by the render service, the unseen side mirrored, the rest
              inpainted towards hair / skin tones from the photo (orchestrator/texture.py)
    export    asset.glb (render service export), texture.png
    turntable turntable.gif (render service)
    evaluate  the papers' protocol (orchestrator/evaluation.py) -> report.json, contact_sheet.png

Services are reached only through their client interfaces (in-process or gRPC). Artifacts are written to
a temporary folder beside out_dir and moved into place only when every stage succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.contact_sheet import contact_sheet, shade_normals
from orchestrator.evaluation import VIEW_BACKGROUND, Reference, encode_gif, evaluate_scene, turntable, view_camera
from services.common.images import encode_png
from orchestrator.photo_intake import analyse_photo, prepare_image

RECIPE = "fast"
ARTIFACTS = ("asset.glb", "texture.png", "turntable.gif", "contact_sheet.png", "report.json")

# progress weights of the stages (fractions of the whole run)
STAGES = {"analyse": 0.10, "fit": 0.30, "texture": 0.20, "export": 0.05, "turntable": 0.10, "evaluate": 0.25}


@dataclass
class FastResult:
    out_dir: Path
    glb: Path
    turntable: Path
    contact_sheet: Path
    report: Path
    texture: Path
    timings: dict[str, float]
    metrics: dict
    warnings: list[str] = field(default_factory=list)


class _Progress:
    def __init__(self, callback):
        self.callback = callback
        self.done = 0.0

    def stage(self, name: str, fraction: float) -> None:
        if self.callback:
            self.callback(name, self.done + STAGES[name] * min(max(fraction, 0.0), 1.0))

    def finish(self, name: str) -> None:
        self.done += STAGES[name]
        if self.callback:
            self.callback(name, self.done)


def _write_gif(path: Path, frames: list[np.ndarray], ms: int = 80) -> None:
    path.write_bytes(encode_gif(frames, ms))


def run_fast(image, out_dir, *, face_client, render_client, face_index: int = 0, progress=None,
             texture_size: int = 1024, fit_steps: int = 16, turntable_frames: int = 24, turntable_size: int = 256,
             clip_model: str | None = None, source_name: str = "") -> FastResult:
    """Build a textured head from one portrait. image: bytes, a path or a uint8 (H, W, 3) array.
    progress(stage, overall_fraction) is called as the run goes. Raises NoFaceError / FailedPrecondition
    for photos the recipe cannot use (nothing is written then)."""
    from orchestrator.head_template.build import VERSION as TEMPLATE_VERSION, load_template, template_hash
    from orchestrator.head_template.fit import fit_to_landmarks, landmark_error, mesh_glb, refine_silhouette
    from orchestrator.texture import complete_texture, photo_tones, projection_mask

    out_dir = Path(out_dir)
    p = _Progress(progress)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if isinstance(image, (str, os.PathLike)):
        source_name = source_name or str(image)
        image = Path(image).read_bytes()
    raw = image if isinstance(image, (bytes, bytearray)) else np.ascontiguousarray(image).tobytes()
    digest = hashlib.sha256(raw).hexdigest()

    # analyse -------------------------------------------------------------------------------------
    t = time.perf_counter()
    p.stage("analyse", 0.0)
    rgb = prepare_image(image)
    rgb, face, analysis, warnings = analyse_photo(face_client, rgb, face_index)
    timings["analyse"] = time.perf_counter() - t
    p.finish("analyse")

    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    scenes: list[str] = []
    try:
        # fit -------------------------------------------------------------------------------------
        t = time.perf_counter()
        template = load_template()
        cam, lm68 = face.camera, face.landmarks_68
        err_template = landmark_error(template.vertices, template.anchors, cam, lm68)
        v_lm = fit_to_landmarks(template, face.landmarks_3d_68)
        err_lm = landmark_error(v_lm, template.anchors, cam, lm68)
        p.stage("fit", 0.1)
        sil = refine_silhouette(render_client, template, v_lm, cam, face.head_mask, lm68, steps=fit_steps,
                                progress=lambda k, n: p.stage("fit", 0.1 + 0.9 * k / n))
        vertices = sil.vertices
        err_fit = landmark_error(vertices, template.anchors, cam, lm68)
        timings["fit"] = time.perf_counter() - t
        p.finish("fit")

        # texture ---------------------------------------------------------------------------------
        t = time.perf_counter()
        grey = np.full((texture_size, texture_size, 3), 0.5, np.float32)
        scene = render_client.create_scene("mesh", asset=(mesh_glb(vertices, template, grey), "glb"), label="fast-tex")
        scenes.append(scene.scene_id)
        p.stage("texture", 0.2)
        mask = projection_mask(face.head_mask, lm68)
        bp = render_client.back_project(scene.scene_id, rgb, cam, mask=mask, min_cosine=0.2)
        render_client.close_scene(scenes.pop())
        p.stage("texture", 0.6)
        tones = photo_tones(rgb, lm68, face.head_mask, face.face_mask)
        tex, tex_stats = complete_texture(bp.texture.transpose(1, 2, 0), bp.visibility[0], template, tones)
        final = render_client.create_scene("mesh", asset=(mesh_glb(vertices, template, tex), "glb"), label="fast")
        scenes.append(final.scene_id)
        timings["texture"] = time.perf_counter() - t
        p.finish("texture")

        # export ----------------------------------------------------------------------------------
        t = time.perf_counter()
        glb = render_client.export(final.scene_id, "glb")
        (work / "asset.glb").write_bytes(glb)
        (work / "texture.png").write_bytes(encode_png((tex * 255 + 0.5).astype(np.uint8)))
        timings["export"] = time.perf_counter() - t
        p.finish("export")

        # turntable -------------------------------------------------------------------------------
        t = time.perf_counter()
        frames = turntable(render_client, final.scene_id, turntable_frames, turntable_size, elevation=5.0,
                           background=VIEW_BACKGROUND, progress=lambda f: p.stage("turntable", f))
        _write_gif(work / "turntable.gif", frames)
        timings["turntable"] = time.perf_counter() - t
        p.finish("turntable")

        # evaluate --------------------------------------------------------------------------------
        t = time.perf_counter()
        ref = Reference(rgb, cam, face.head_mask, face.embedding, face.embedding_norm)
        ev = evaluate_scene(render_client, face_client, final.scene_id, ref, clip_model=clip_model,
                            progress=lambda k, n: p.stage("evaluate", 0.8 * k / n))
        geo = render_client.render(final.scene_id, [view_camera(a, 256) for a in (0, 35, 90)],
                                   ["normal_world", "alpha"])
        geometry = [shade_normals(n, a[0]) for n, a in zip(geo.outputs["normal_world"], geo.outputs["alpha"])]
        from orchestrator.head_template.fit import head_box

        sheet = contact_sheet(rgb, ev.renders, geometry, tex, ev.metrics, head_box=head_box(face.head_mask, lm68))
        (work / "contact_sheet.png").write_bytes(encode_png(sheet))
        timings["evaluate"] = time.perf_counter() - t
        p.finish("evaluate")
        render_client.close_scene(scenes.pop())
        timings["total"] = time.perf_counter() - t_all

        fr = ev.metrics["views"]["frontal"]
        if not fr["face_found"] or not fr.get("same_person", False):
            warnings.append("the frontal render is not recognised as the input's person by the face model")
        report = {
            "recipe": RECIPE,
            "input": {"source": source_name, "sha256": digest, "working_width": int(rgb.shape[1]),
                      "working_height": int(rgb.shape[0])},
            "face": {"index": face_index, "faces_found": len(analysis.faces),
                     "box": [round(float(v), 1) for v in face.box], "score": round(float(face.score), 3),
                     "yaw_deg": round(face.pose.yaw, 1), "pitch_deg": round(face.pose.pitch, 1),
                     "roll_deg": round(face.pose.roll, 1)},
            "fit": {"template_version": TEMPLATE_VERSION, "template_hash": template_hash(),
                    "vertices": int(len(vertices)), "faces": int(len(template.faces)),
                    "landmark_rms_px": {"template": round(err_template, 2), "landmark_fit": round(err_lm, 2),
                                        "silhouette_fit": round(err_fit, 2)},
                    "mask_iou": {"before": round(sil.iou_before, 4), "after": round(sil.iou_after, 4)},
                    "silhouette_steps": sil.steps},
            "texture": {"size": texture_size, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                  for k, v in tex_stats.items()}},
            "metrics": ev.metrics,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "models": {"face": [vars(m) for m in analysis.models],
                       "render": {"kind": "mesh", "backend": getattr(scene, "backend", "")},
                       "head_template": f"headforge-template-v{TEMPLATE_VERSION}"},
            "warnings": warnings,
            "artifacts": list(ARTIFACTS),
        }
        (work / "report.json").write_text(json.dumps(report, indent=1))
        # move into place: all or nothing
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ARTIFACTS:
            os.replace(work / name, out_dir / name)
    finally:
        for sid in scenes:
            try:
                render_client.close_scene(sid)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)
    return FastResult(out_dir, out_dir / "asset.glb", out_dir / "turntable.gif", out_dir / "contact_sheet.png",
                      out_dir / "report.json", out_dir / "texture.png", report["timings_s"], ev.metrics, warnings)
