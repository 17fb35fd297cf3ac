"""`headforge eval OUT_DIR --reference IMAGE`: the papers' evaluation protocol (orchestrator/evaluation.py)
on a head that `headforge generate` wrote, against the photo analysed the way generate analysed it."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.evaluation import Evaluation, Reference, evaluate_scene
from orchestrator.photo_intake import analyse_photo, prepare_image


def evaluate_asset(out_dir: Path, reference_image, *, face_client, render_client, face_index: int | None = None,
                   clip_model: str | None = None, lpips_weights: str | None = None) -> Evaluation:
    """`headforge eval OUT_DIR --reference IMAGE`: load OUT_DIR/asset.glb into the render service and run
    the protocol against the reference photo (analysed the same way `generate` analysed it)."""
    out_dir = Path(out_dir)
    glb = out_dir / "asset.glb"
    if not glb.exists():
        raise FileNotFoundError(f"{glb} does not exist (run `headforge generate` first)")
    if face_index is None:
        report = out_dir / "report.json"
        face_index = json.loads(report.read_text()).get("face", {}).get("index", 0) if report.exists() else 0
    rgb = prepare_image(reference_image)
    rgb, face, _, _ = analyse_photo(face_client, rgb, face_index)
    scene = render_client.create_scene("mesh", asset=(glb.read_bytes(), "glb"), label="eval")
    try:
        ref = Reference(rgb, face.camera, face.head_mask, face.embedding, face.embedding_norm)
        return evaluate_scene(render_client, face_client, scene.scene_id, ref, clip_model=clip_model,
                              lpips_weights=lpips_weights)
    finally:
        render_client.close_scene(scene.scene_id)
