"""`headforge eval OUT_DIR --reference IMAGE`: the papers' evaluation protocol (orchestrator/evaluation.py)
on a head that `headforge generate` wrote, against the photo analysed the way generate analysed it."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.evaluation import Evaluation, Reference, evaluate_scene
from orchestrator.photo_intake import intake_photo


# where a head's asset lies in an output folder: `headforge generate` (fast) writes asset.glb; a recipe's
# export stage (and so a fetched job folder) writes export/<stem>.glb|.ply; first match wins
ASSET_PATTERNS = (("asset.glb", "mesh", "glb"), ("export/*.glb", "mesh", "glb"), ("export/*.ply", "gaussians", "ply"),
                  ("*.glb", "mesh", "glb"), ("*.ply", "gaussians", "ply"))


def find_asset(out_dir: Path) -> tuple[Path, str, str]:
    """(path, scene kind, format) of the head in out_dir (a `generate` output or a fetched job folder);
    FileNotFoundError naming out_dir and what was looked for when none is there."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(2, "No such file or directory", str(out_dir))
    for pattern, kind, fmt in ASSET_PATTERNS:
        found = sorted(out_dir.glob(pattern))
        if found:
            return found[0], kind, fmt
    raise FileNotFoundError(f"no head asset in {out_dir}: looked for {', '.join(p for p, _, _ in ASSET_PATTERNS)} "
                            "(run `headforge generate`, or `headforge fetch JOB_ID` for a job)")


def evaluate_asset(out_dir: Path, reference_image, *, face_client, render_client, face_index: int | None = None,
                   clip_model: str | None = None, lpips_weights: str | None = None) -> Evaluation:
    """`headforge eval OUT_DIR --reference IMAGE`: load the head in OUT_DIR (find_asset: a mesh GLB or a
    Gaussians PLY) into the render service and run the protocol against the reference photo (analysed the
    same way `generate` analysed it)."""
    out_dir = Path(out_dir)
    asset, kind, fmt = find_asset(out_dir)
    if face_index is None:
        report = out_dir / "report.json"
        face_index = json.loads(report.read_text()).get("face", {}).get("index", 0) if report.exists() else 0
    rgb, face, _, _ = intake_photo(face_client, reference_image, face_index)
    scene = render_client.create_scene(kind, asset=(asset.read_bytes(), fmt), label="eval")
    try:
        ref = Reference(rgb, face.camera, face.head_mask, face.embedding, face.embedding_norm)
        return evaluate_scene(render_client, face_client, scene.scene_id, ref, clip_model=clip_model,
                              lpips_weights=lpips_weights)
    finally:
        render_client.close_scene(scene.scene_id)
