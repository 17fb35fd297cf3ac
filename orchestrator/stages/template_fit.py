"""template_fit: the project's head template (orchestrator/head_template) deformed to the photo's 3D
landmarks, the face bent onto MediaPipe's 468-point mesh when the face service gave one
(head_template.dense_fit; a warning says so when it did not), then its silhouette pulled onto the photo's
head mask through the render service (head_template.fit.refine_silhouette). The fitted vertices go to
fit/vertices.npy for the texture stage; landmark errors, the dense fit's distances and mask IoUs to the
report's fit section."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import TemplateFitParams
from orchestrator.stages.preprocess import load_photo_face

VERTICES = "fit/vertices.npy"


def run(ctx: StageContext, params: TemplateFitParams) -> None:
    from orchestrator.head_template.build import VERSION, load_template, template_hash
    from orchestrator.head_template.dense_fit import fit_dense
    from orchestrator.head_template.fit import fit_to_landmarks, landmark_error, refine_silhouette

    face = load_photo_face(ctx)
    template = load_template()
    cam, lm68 = face.camera, face.landmarks_68
    err_template = landmark_error(template.vertices, template.anchors, cam, lm68)
    v_lm = fit_to_landmarks(template, face.landmarks_3d_68)
    err_lm = landmark_error(v_lm, template.anchors, cam, lm68)
    dense_report = None
    if face.landmarks_3d_478 is not None:
        dense = fit_dense(template, v_lm, face.landmarks_3d_478)
        v_lm = dense.vertices
        dense_report = {"points": dense.points_used, "rms_mm_before": round(dense.rms_before * 100, 2),
                        "rms_mm_after": round(dense.rms_after * 100, 2)}
    else:
        ctx.warn("the face shape is the template's: the face service's detector gives 68 landmarks, not "
                 "MediaPipe's 478 (serve face with --detector auto or mediapipe for a face shaped like the person)")
    err_dense = landmark_error(v_lm, template.anchors, cam, lm68)
    ctx.progress(0, max(params.fit_steps, 1), "silhouette")

    def progress(k: int, n: int) -> None:
        ctx.check_cancelled()
        ctx.progress(k, n, "silhouette")

    sil = refine_silhouette(ctx.clients.render, template, v_lm, cam, face.head_mask, lm68, steps=params.fit_steps,
                            progress=progress)
    buf = io.BytesIO()
    np.save(buf, np.asarray(sil.vertices, np.float64))
    ctx.artifact(VERTICES, buf.getvalue())
    ctx.state["fit"] = {"vertices": VERTICES}
    err_fit = landmark_error(sil.vertices, template.anchors, cam, lm68)
    ctx.add_report_section("fit", {
        "template_version": VERSION, "template_hash": template_hash(),
        "vertices": int(len(sil.vertices)), "faces": int(len(template.faces)),
        "landmark_rms_px": {"template": round(err_template, 2), "landmark_fit": round(err_lm, 2),
                            "dense_fit": round(err_dense, 2), "silhouette_fit": round(err_fit, 2)},
        "dense_fit": dense_report,
        "mask_iou": {"before": round(sil.iou_before, 4), "after": round(sil.iou_after, 4)},
        "silhouette_steps": sil.steps})
    ctx.add_report_section("models", {"head_template": f"headforge-template-v{VERSION}"})


def load_fitted_vertices(ctx: StageContext) -> np.ndarray:
    """(V, 3) float64, the template_fit stage's vertices (FailedPrecondition without one)."""
    from services.common.errors import FailedPrecondition

    if "fit" not in ctx.state:
        raise FailedPrecondition(f"{ctx.stage} needs a fitted head: put a template_fit stage before it",
                                 reason="NO_TEMPLATE_FIT")
    return np.load(io.BytesIO(ctx.read_artifact(ctx.state["fit"]["vertices"])))
