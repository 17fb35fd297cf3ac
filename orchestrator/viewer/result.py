"""What a result folder (`headforge generate --out`, `headforge fetch`) holds that the viewer shows: its 3D
assets, its images and its report, as the JSON manifest the page reads."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.errors import FailedPrecondition, NotFound

REPORT = "report.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
# the pictures a person looks at first, in this order; the other images follow by name
FIRST_IMAGES = ("contact_sheet.png", "turntable.gif", "input.png", "texture.png")
SKIPPED_FOLDERS = ("checkpoints",)   # resumable job state, nothing to look at
GAUSSIANS_PROPERTIES = (b"f_dc_0", b"opacity", b"scale_0", b"rot_0")   # a 3DGS PLY (gaussians_ply.py)


def ply_kind(path: Path) -> str:
    """"gaussians" for a 3DGS PLY (its header has the SH, opacity, scale and rotation properties), else
    "mesh" (a point or triangle PLY the page draws with three.js's PLYLoader)."""
    with open(path, "rb") as f:
        header = f.read(8192).split(b"end_header", 1)[0]
    names = {line.split()[-1] for line in header.splitlines() if line.startswith(b"property")}
    return "gaussians" if all(p in names for p in GAUSSIANS_PROPERTIES) else "mesh"


def _files(folder: Path) -> list[str]:
    """Relative "/" names of the folder's complete files (no NAME.part of a download in progress, no
    checkpoints, no hidden files), sorted."""
    names = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if not p.is_file() or p.name.endswith(".part") or any(s.startswith(".") for s in rel.parts):
            continue
        if rel.parts[0] in SKIPPED_FOLDERS:
            continue
        names.append(rel.as_posix())
    return sorted(names)


def _read_report(folder: Path) -> tuple[dict | None, list[str]]:
    """(the parsed report.json or None, warnings about reading it)."""
    path = folder / REPORT
    if not path.is_file():
        return None, [f"no {REPORT} in this folder: which models made it is not known"]
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, [f"{REPORT} could not be read ({e}): which models made it is not known"]
    if not isinstance(report, dict):
        return None, [f"{REPORT} is not a JSON object: which models made it is not known"]
    return report, []


def manifest(folder: Path, *, banner: str, title: str = "") -> dict:
    """The page's manifest of a result folder:
    {"title", "assets": [{"name", "kind": "gltf" | "gaussians" | "mesh_ply"}], "images": [name],
     "report": dict | None, "warnings": [str], "not_a_result": bool, "banner": str}.
    "not_a_result" is true when report.json says result_is_real is false (a test prior or random weights
    served the job) or when there is no readable report (nothing vouches for the models); "banner" is then
    `banner` (the CLI's NOT A RESULT line: orchestrator/cli/honesty.py, which this package cannot import
    without an import cycle through orchestrator.cli), or for a missing report a line saying so. NotFound
    for a missing folder, FailedPrecondition for one with nothing to show."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFound(f"{folder}: no such folder", reason="NO_RESULT_FOLDER")
    names = _files(folder)
    assets = [{"name": n, "kind": "gltf"} for n in names if n.lower().endswith(".glb")]
    assets += [{"name": n, "kind": "gaussians" if ply_kind(folder / n) == "gaussians" else "mesh_ply"}
               for n in names if n.lower().endswith(".ply")]
    images = [n for n in FIRST_IMAGES if n in names]
    images += [n for n in names if n.lower().endswith(IMAGE_SUFFIXES) and n not in images]
    if not assets and not images:
        raise FailedPrecondition(f"{folder} has no 3D asset (.glb, .ply) and no image to show", reason="NOTHING_TO_VIEW")
    report, read_warnings = _read_report(folder)
    warnings = read_warnings + [str(w) for w in (report or {}).get("warnings", [])]
    not_a_result = report is None or report.get("result_is_real") is False
    return {"title": title or folder.name, "assets": assets, "images": images, "report": report,
            "warnings": warnings, "not_a_result": not_a_result,
            "banner": banner if not_a_result and report is not None else
            ("NOT VOUCHED FOR: " + read_warnings[0] if not_a_result else "")}
