"""`headforge view OUT_DIR` as a user runs it: a real `fast` head (reduced size) plus a 3DGS PLY the render
service exported, served by the command's process on loopback, and the page checked in headless Chromium
(the system's, driven by playwright-core from orchestrator/viewer/node_modules): the head is on screen and
the console has no errors. Screenshots are kept under out/viewer-test/ for a person to look at."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli.honesty import NOT_A_RESULT_BANNER
from orchestrator.viewer.result import manifest as manifest_of
from orchestrator.viewer.server import NODE_MODULES, STATIC
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.process import ROOT
from tests.helpers import single_thread  # noqa: F401  (torch on one thread for this module)
from tests.viewer.viewer_process import ViewerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
SCREENSHOTS = ROOT / "out" / "viewer-test"
BACKGROUND = (0x30, 0x34, 0x3A)   # the page's 3D background (viewer.js)


def manifest(folder: Path) -> dict:
    return manifest_of(folder, banner=NOT_A_RESULT_BANNER)


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory, astronaut) -> Path:
    """The fast recipe on the astronaut at reduced size (what `make demo` writes, smaller), plus
    export/head.ply: 3D Gaussians on the GLB's surface coloured by its texture, exported by the render
    service as a standard 3DGS PLY."""
    import trimesh

    from orchestrator.fast import run_fast
    from services.face.service import FaceService, InProcessFaceClient
    from services.render.service import InProcessRenderClient

    render = InProcessRenderClient()
    out = tmp_path_factory.mktemp("view") / "astronaut"
    run_fast(astronaut, out, face_client=InProcessFaceClient(FaceService()), render_client=render,
             texture_size=256, fit_steps=2, turntable_frames=4)
    mesh = trimesh.load(out / "asset.glb", file_type="glb", force="mesh")
    mesh.apply_scale(10.0)   # the GLB is in metres; Gaussians recipes and the invert stage write world units
    points, faces = trimesh.sample.sample_surface_even(mesh, 5000, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[faces], points)
    uv = np.einsum("nk,nkj->nj", bary, mesh.visual.uv[mesh.faces[faces]])
    colors = mesh.visual.material.to_color(uv)[:, :3].astype(np.float32) / 255
    scene = render.create_scene("gaussians", {"points": points.astype(np.float32), "colors": colors, "opacity": 0.9})
    (out / "export").mkdir()
    (out / "export" / "head.ply").write_bytes(render.export(scene.scene_id, "ply"))
    render.close_scene(scene.scene_id)
    # and the same head as a vertex-coloured mesh PLY (what the invert stage writes), via trimesh
    coloured = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=mesh.visual.to_color().vertex_colors,
                               process=False)
    coloured.export(out / "export" / "mesh.ply")
    return out


def require_packages() -> None:
    if not (NODE_MODULES / "three" / "package.json").is_file():
        pytest.skip(f"the viewer's npm packages are not installed in {NODE_MODULES}: run `make install`")


@pytest.fixture(scope="module")
def viewer(result_dir):
    require_packages()
    proc = ViewerProcess([str(result_dir)])
    yield proc
    proc.stop()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def screenshot(url: str, name: str) -> tuple[dict, np.ndarray]:
    """(the page check's JSON, the 3D canvas as (H, W, 3) uint8); skips without Chromium."""
    if CHROMIUM is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")
    if NODE is None or not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        pytest.skip(f"no node, or playwright-core is not installed in {NODE_MODULES}: run `make install`")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    canvas, page = SCREENSHOTS / f"{name}.png", SCREENSHOTS / f"{name}_page.png"
    r = subprocess.run([NODE, str(STATIC.parent / "screenshot.mjs"), url, str(canvas), str(page), "120000"],
                       capture_output=True, text=True, timeout=240, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), np.asarray(Image.open(canvas).convert("RGB"))


def check_page(check: dict, asset: str) -> None:
    assert check["state"] == "ready" and check["asset"] == asset, check
    errors = [m for m in check["console"] if m["type"] == "error"]
    assert errors == [] and check["page_errors"] == [] and check["http_errors"] == [], check


def check_head_on_screen(img: np.ndarray) -> None:
    """Not blank, the background at the corners, and a face in the centre: skin-coloured pixels (red over
    green over blue, not dark) over a good part of the middle of the view."""
    h, w, _ = img.shape
    assert img.std() > 20, "the 3D view is uniform"
    for corner in (img[5, 5], img[5, w - 6], img[h - 30, w - 6]):
        assert np.abs(corner.astype(int) - BACKGROUND).max() <= 3, corner
    centre = img[int(0.35 * h):int(0.65 * h), int(0.35 * w):int(0.65 * w)].astype(int)
    r, g, b = centre[..., 0], centre[..., 1], centre[..., 2]
    skin = (r > 120) & (r > g) & (g > b) & (r - b > 25)
    assert skin.mean() > 0.4, f"only {skin.mean():.0%} of the centre is skin-coloured"


def test_manifest_lists_the_assets_images_and_report(result_dir):
    m = manifest(result_dir)
    assert m["assets"] == [{"name": "asset.glb", "kind": "gltf"}, {"name": "export/head.ply", "kind": "gaussians"},
                           {"name": "export/mesh.ply", "kind": "mesh_ply"}]
    assert m["images"][:2] == ["contact_sheet.png", "turntable.gif"] and "texture.png" in m["images"]
    assert m["report"]["recipe"] == "fast" and m["not_a_result"] is False and m["banner"] == ""
    assert manifest(result_dir / "eval")["assets"] == []   # images only is fine
    with pytest.raises(NotFound):
        manifest(result_dir / "missing")
    with pytest.raises(FailedPrecondition):
        manifest(result_dir / "fit")                      # vertices.npy only: nothing to show


def test_a_test_prior_report_gets_the_banner(result_dir, tmp_path):
    folder = tmp_path / "prior"
    shutil.copytree(result_dir, folder, ignore=shutil.ignore_patterns("export"))
    report = json.loads((folder / "report.json").read_text())
    report.update(result_is_real=False, warnings=["guidance (analytic test prior) is a test prior: not a result"])
    (folder / "report.json").write_text(json.dumps(report))
    m = manifest(folder)
    assert m["not_a_result"] and m["banner"] == NOT_A_RESULT_BANNER and m["warnings"] == report["warnings"]
    (folder / "report.json").unlink()
    m = manifest(folder)
    assert m["not_a_result"] and m["banner"].startswith("NOT VOUCHED FOR") and "no report.json" in m["warnings"][0]


def test_server_serves_only_the_page_its_packages_and_the_listed_files(viewer, result_dir):
    status, kind, body = get(viewer.url)
    assert status == 200 and kind == "text/html" and b'id="view3d"' in body
    assert b"https://" not in body and b"http://" not in body          # no CDN: every module from this server
    status, _, body = get(viewer.url + "manifest.json")
    assert status == 200 and json.loads(body)["assets"][0]["name"] == "asset.glb"
    status, kind, body = get(viewer.url + "files/asset.glb")
    assert status == 200 and kind == "model/gltf-binary" and body == (result_dir / "asset.glb").read_bytes()
    status, kind, _ = get(viewer.url + "vendor/three/build/three.module.js")
    assert status == 200 and kind == "text/javascript"
    status, _, _ = get(viewer.url + "vendor/gaussian-splats-3d/build/gaussian-splats-3d.module.js")
    assert status == 200
    for path in ("files/fit/vertices.npy",                 # in the folder but not something the page shows
                 "files/../astronaut/asset.glb", "files/%2e%2e/x", "static/../server.py",
                 "vendor/three/../../server.py", "vendor/left-pad/index.js", "nothing"):
        status, _, _ = get(viewer.url + path)
        assert status == 404, path
    assert viewer.url.startswith("http://127.0.0.1:")


def test_page_shows_the_glb_head_without_console_errors(viewer):
    check, img = screenshot(viewer.url, "glb")
    check_page(check, "asset.glb")
    assert check["banner"] is None and check["warnings"] == []
    check_head_on_screen(img)
    shutil.copy(SCREENSHOTS / "glb_page.png", SCREENSHOTS / "viewer.png")


def test_page_shows_the_gaussians_ply_in_the_splat_viewer(viewer):
    check, img = screenshot(viewer.url + "?asset=export/head.ply", "gaussians")
    check_page(check, "export/head.ply")
    check_head_on_screen(img)


def test_page_shows_a_vertex_coloured_mesh_ply(viewer):
    check, img = screenshot(viewer.url + "?asset=export/mesh.ply", "mesh_ply")
    check_page(check, "export/mesh.ply")
    check_head_on_screen(img)


def test_a_busy_or_bad_port_is_a_clear_error(result_dir):
    import socket

    from orchestrator.viewer.server import ViewerServer

    require_packages()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(FailedPrecondition, match="cannot listen on 127.0.0.1:.*--port 0"):
            ViewerServer(result_dir, banner=NOT_A_RESULT_BANNER, port=busy.getsockname()[1])
    with pytest.raises(InvalidArgument, match="0..65535"):
        ViewerServer(result_dir, banner=NOT_A_RESULT_BANNER, port=70000)


def test_page_shows_a_test_prior_banner_under_its_warnings(result_dir, tmp_path):
    folder = tmp_path / "prior"
    shutil.copytree(result_dir, folder, ignore=shutil.ignore_patterns("export"))
    report = json.loads((folder / "report.json").read_text())
    warning = "guidance (analytic test prior) is a test prior: not a result"
    report.update(result_is_real=False, warnings=[warning])
    (folder / "report.json").write_text(json.dumps(report))
    require_packages()
    proc = ViewerProcess([str(folder)])
    try:
        check, _ = screenshot(proc.url, "test_prior")
    finally:
        proc.stop()
    check_page(check, "asset.glb")
    assert check["banner"] == NOT_A_RESULT_BANNER and check["warnings"] == [f"warning: {warning}"]


def test_the_screenshot_check_rejects_a_blank_or_faceless_view():
    blank = np.broadcast_to(np.array(BACKGROUND, np.uint8), (640, 640, 3)).copy()
    with pytest.raises(AssertionError, match="uniform"):
        check_head_on_screen(blank)
    grey_head = blank.copy()
    yy, xx = np.mgrid[:640, :640]
    grey_head[(yy - 320) ** 2 + (xx - 320) ** 2 < 200 ** 2] = 170   # an untextured head: no skin colour
    with pytest.raises(AssertionError, match="skin-coloured"):
        check_head_on_screen(grey_head)
    skin_head = blank.copy()
    skin_head[(yy - 320) ** 2 + (xx - 320) ** 2 < 200 ** 2] = (208, 172, 144)
    check_head_on_screen(skin_head)
