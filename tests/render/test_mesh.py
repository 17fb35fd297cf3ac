"""Triangle meshes: the pure-torch rasteriser (conventions, finite-difference gradient checks, silhouette
anti-aliasing, speed), MeshScene (outputs, regularisers, fitting to the procedural head, file round
trips, bad input) and texture back-projection. The nvdiffrast path is checked against the torch one
on a GPU machine (tests marked gpu).

Everything runs single-threaded (module fixture): these loops are thousands of small tensor ops, where
OpenMP's fork/join costs more than it gains on 2 cores and oversubscription on a shared runner is ruinous.
"""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
import torch

from services.core.cameras import orbit_camera, sample_orbit_cameras
from services.core.camera_batch import CameraBatch
from services.core.procedural_head import head_albedo, head_mesh, render_head
from services.render.representations import mesh_io
from services.render.representations.mesh import MeshScene
from services.render.representations.mesh_render import unique_edges
from services.render.representations.mesh_nvdiffrast import get_rasterizer, nvdiffrast_available, opengl_clip_positions
from services.render.representations.mesh_raster import TorchRasterizer, edge_neighbors, project_vertices
from services.render.representations.texture import back_project, fuse_projections, texel_surface

gpu = pytest.mark.gpu
needs_nvdiffrast = pytest.mark.skipif(not nvdiffrast_available(), reason="needs CUDA and nvdiffrast")


def outward(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Faces wound counter-clockwise from outside (positive signed volume), whatever the source did."""
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum()
    return np.ascontiguousarray(f if vol > 0 else f[:, ::-1])


def head(resolution: int = 40):
    v, f, c = head_mesh(resolution)
    return v, outward(v, f), c


def cams(views, size=64, dtype=torch.float32) -> CameraBatch:
    return CameraBatch.from_pinholes([orbit_camera(a, e, 3.0, fov_deg=40, width=size, height=size) for a, e in views],
                                     dtype=dtype)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, dB, for (N, C, H, W) in [0, 1]."""
    return -10 * torch.log10(((a - b) ** 2).mean((1, 2, 3)))


def uv_sphere(n: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude-longitude sphere with 4 n (n - 1) triangles, CCW from outside."""
    theta = np.linspace(0, np.pi, n + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius
    m = 2 * n
    idx = lambda i, j: 1 + i * m + j % m  # noqa: E731
    faces = [[0, idx(0, j + 1), idx(0, j)] for j in range(m)]
    for i in range(n - 2):
        for j in range(m):
            faces += [[idx(i, j), idx(i, j + 1), idx(i + 1, j)], [idx(i, j + 1), idx(i + 1, j + 1), idx(i + 1, j)]]
    last = len(v) - 1
    faces += [[last, idx(n - 2, j), idx(n - 2, j + 1)] for j in range(m)]
    f = np.array(faces)
    return v.astype(np.float32), outward(v, f)


# a triangle in the z = 0 plane, counter-clockwise seen from +Z (from the frontal camera)
TRI = np.array([[-0.5, -0.45, 0.0], [0.55, -0.4, 0.0], [0.05, 0.5, 0.0]], np.float32)


# ------------------------------------------------------------------------------------------- conventions

def test_triangle_lands_where_projection_says():
    cam = orbit_camera(0, 0, 3, fov_deg=40, width=64, height=48)
    batch = CameraBatch.from_pinholes([cam])
    scene = MeshScene.create(TRI, [[0, 1, 2]], uvs=[[0, 1], [1, 1], [0.5, 0]], texture=np.zeros((3, 4, 4), np.float32),
                             texture_size=4)
    out = scene.render(batch, ["alpha", "triangle_id", "depth", "normal_camera", "normal_world", "uv"])
    # pixel centres inside the projected triangle (same-side test in pixel space) <=> triangle_id == 0
    q = cam.project(TRI.astype(np.float64))
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    p = np.stack([xs, ys], -1)

    def side(a, b):
        return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])

    s = np.stack([side(q[0], q[1]), side(q[1], q[2]), side(q[2], q[0])])
    inside = (s > 0).all(0) | (s < 0).all(0)
    tid = out["triangle_id"][0, 0].numpy()
    assert out["triangle_id"].dtype == torch.int32
    np.testing.assert_array_equal(tid == 0, inside)
    assert (tid[~inside] == -1).all()
    # +Y up in the world is up on screen: the apex (y = 0.5) projects above the base
    assert q[2, 1] < q[0, 1]
    interior = torch.as_tensor(inside)
    depth = out["depth"][0, 0][interior]
    torch.testing.assert_close(depth, torch.full_like(depth, 3.0), atol=1e-4, rtol=0)
    # the front face looks at the camera: n_z < 0 in the OpenCV camera frame, +Z in the world (unit
    # where alpha = 1; silhouette pixels are alpha-weighted)
    assert (out["normal_camera"][0, 2][interior] < 0).all()
    full = out["alpha"][0, 0] == 1
    n_cam = out["normal_camera"][0][:, full]
    assert full.sum() > 200 and (n_cam[2] < -0.9999).all()
    torch.testing.assert_close(out["normal_world"][0][:, full], torch.tensor([0.0, 0, 1])[:, None].expand_as(n_cam))
    # uv: barycentric interpolation of the vertex UVs at each pixel centre (an affine map on a plane
    # facing the camera head-on)
    A = np.c_[q, np.ones(3)]
    p_h = np.stack([p[..., 0], p[..., 1], np.ones_like(p[..., 0])], -1)
    uv_expected = p_h @ np.linalg.inv(A) @ np.array([[0, 1], [1, 1], [0.5, 0]])
    uv = out["uv"][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(uv[inside], uv_expected[inside], atol=1e-4)
    assert (uv[~inside] == 0).all()
    # the rasteriser's barycentrics at the same pixels: the weights of the three vertices
    r = TorchRasterizer()
    bary = r.barycentrics(r.rasterize(torch.tensor(TRI), torch.tensor([[0, 1, 2]]), batch))[0].permute(1, 2, 0)
    expected = p_h @ np.linalg.inv(A)
    np.testing.assert_allclose(bary.numpy()[inside], expected[inside], atol=1e-5)


def test_texture_orientation_and_nearest_surface():
    """v down: the top texel row shows at the top of the quad; the nearer of two overlapping quads wins."""
    quad = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], np.float32)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    tex = np.zeros((8, 8, 3), np.float32)
    tex[:4, :, 0] = 1.0          # top half red
    tex[4:, :, 2] = 1.0          # bottom half blue
    tex[:, :4, 1] = 1.0          # left half green
    scene = MeshScene.create(quad, [[0, 1, 2], [0, 2, 3]], uvs=uvs, texture=(tex * 255).astype(np.uint8))
    assert scene.texture.shape == (1024, 1024, 3)                # MeshInit: texture_size 0 = 1024
    rgb = scene.render(cams([(0, 0)], 64), ["rgb"])["rgb"][0]
    top, bottom = rgb[:, 20, 40], rgb[:, 44, 40]
    assert top[0] > 0.9 and top[2] < 0.1 and bottom[2] > 0.9 and bottom[0] < 0.1
    assert rgb[1, 30, 20] > 0.9 and rgb[1, 30, 44] < 0.1      # +X (subject's left) on the image's right
    front = quad + np.array([0, 0, 0.3], np.float32)
    two = MeshScene.create(np.concatenate([quad, front * 0.5]), [[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    tid = two.render(cams([(0, 0)], 64), ["triangle_id"])["triangle_id"][0, 0]
    assert set(tid[32, 28:36].tolist()) <= {2, 3}                # the smaller quad in front covers the centre
    assert set(tid[20, 28:36].tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------------- gradients

def _small_mesh():
    v = torch.tensor([[-0.61, -0.47, 0.05], [0.58, -0.52, -0.11], [0.07, 0.55, 0.09], [0.66, 0.43, -0.2]],
                     dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return v, f


def test_interpolation_gradients_match_finite_differences():
    """d(interpolated attributes, depth)/d(vertex positions, attributes), float64 central differences."""
    v0, f = _small_mesh()
    batch = cams([(8, 5), (-15, -7)], 20, torch.float64)
    r = TorchRasterizer()
    attr0 = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.4, 0.3], [0.6, 0.5]], dtype=torch.float64)

    def fn(v, attr):
        fr = r.rasterize(v, f, batch)
        return torch.cat([r.interpolate(fr, attr), r.depth(fr)], 1)

    assert (fn(v0, attr0)[:, 0] != 0).sum() > 100
    assert torch.autograd.gradcheck(fn, (v0.clone().requires_grad_(), attr0.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_texture_gradients_match_finite_differences():
    v0, f = _small_mesh()
    scene = MeshScene.create(v0.numpy(), f.numpy(), uvs=[[0.1, 0.9], [0.9, 0.8], [0.2, 0.1], [0.8, 0.2]],
                             texture=np.random.default_rng(0).uniform(0.2, 0.8, (3, 6, 6)).astype(np.float32),
                             texture_size=6)
    scene = scene.double()
    batch = cams([(5, 3)], 16, torch.float64)
    tex0 = scene.texture.detach().clone()
    inputs = (v0.clone().requires_grad_(), tex0.requires_grad_())
    assert torch.autograd.gradcheck(lambda v, tex: _render_with(scene, v, tex, batch), inputs, eps=1e-6, atol=1e-6,
                                    rtol=1e-4)


def _render_with(scene: MeshScene, v: torch.Tensor, tex: torch.Tensor, batch: CameraBatch) -> torch.Tensor:
    """scene.render with the given vertex / texture tensors substituted (so gradcheck can perturb them)."""
    from services.render.representations.mesh_render import render_triangles

    return render_triangles(TorchRasterizer(), v, scene.faces, scene.topology()["neighbors"], batch, ["rgb", "alpha"],
                            torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64), texture=tex, uvs=scene.uvs,
                            uv_faces=scene.uv_faces)["rgb"]


def test_antialiased_silhouette_gradients():
    """The silhouette blend is differentiable w.r.t. vertex positions (finite differences), covers
    about the triangle's area, and its gradient is about the analytic area gradient."""
    v0 = torch.tensor(TRI, dtype=torch.float64) + torch.tensor([0.013, -0.021, 0.0], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2]])
    batch = cams([(0, 0)], 24, torch.float64)
    r = TorchRasterizer()
    nb = edge_neighbors(f)
    colour = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.7]], dtype=torch.float64)

    def fn(v):
        fr = r.rasterize(v, f, batch)
        mask = (fr.tri_id >= 0).double()[:, None]
        rgb = r.interpolate(fr, colour) * mask + 0.5 * (1 - mask)
        return r.antialias(fr, torch.cat([rgb, mask], 1), nb)

    assert torch.autograd.gradcheck(fn, (v0.clone().requires_grad_(),), eps=1e-6, atol=1e-6, rtol=1e-4)
    screen, _ = project_vertices(v0, batch)

    def area(q):
        return 0.5 * ((q[1, 0] - q[0, 0]) * (q[2, 1] - q[0, 1]) - (q[1, 1] - q[0, 1]) * (q[2, 0] - q[0, 0])).abs()

    v = v0.clone().requires_grad_()
    coverage = fn(v)[:, 3].sum()
    coverage.backward()
    analytic = torch.autograd.grad(area(project_vertices(v, batch)[0][0]), v)[0]
    assert abs(coverage.item() - area(screen[0]).item()) < 0.02 * area(screen[0]).item()
    # without anti-aliasing the coverage would be piecewise constant: zero gradient
    cos = torch.nn.functional.cosine_similarity(v.grad.flatten(), analytic.flatten(), dim=0)
    assert cos > 0.95 and 0.7 < v.grad.norm() / analytic.norm() < 1.3


def test_triangle_budget_and_timing():
    """Forward + backward at 128 x 128 for about 10k and 100k triangles (printed: pytest -rP shows them)."""
    r = TorchRasterizer()
    batch = cams([(30, 10)], 128)
    for n, limit in ((50, 2.0), (158, 10.0)):
        v, f = uv_sphere(n)
        c = np.abs(v)
        vt, ft, ct = torch.tensor(v, requires_grad=True), torch.tensor(f), torch.tensor(c, requires_grad=True)
        nb = edge_neighbors(ft)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fr = r.rasterize(vt, ft, batch)
            img = r.antialias(fr, r.interpolate(fr, ct), nb)
            img.square().sum().backward()
            times.append(time.perf_counter() - t0)
        print(f"torch rasteriser, {len(f)} triangles, 128x128, forward+backward: {1000 * min(times):.0f} ms")
        assert min(times) < limit, f"{len(f)} triangles took {min(times):.2f}s"


# ------------------------------------------------------------------------------------------- scene

def test_outputs_shapes_and_regularisers():
    v, f, c = head(24)
    scene = MeshScene.create(v, f, vertex_colors=c)
    assert scene.report.watertight and scene.report.manifold
    out = scene.render(cams([(0, 0), (90, 20)], 32), sorted(MeshScene.outputs), background=torch.tensor([0.0, 0, 0]))
    for name, x in out.items():
        channels = {"rgb": 3, "albedo": 3, "normal_camera": 3, "normal_world": 3, "uv": 2}.get(name, 1)
        assert x.shape == (2, channels, 32, 32), name
    assert 0 <= out["alpha"].min() and out["alpha"].max() <= 1
    assert (out["depth"][out["alpha"] == 0] == 0).all()
    assert out["rgb"][:, :, 0, 0].abs().max() == 0                    # black background in the corner
    regs = scene.regularizers()
    values = {k: fn() for k, fn in regs.items()}
    assert all(torch.isfinite(x) and x >= 0 for x in values.values())
    sum(values.values()).backward()
    assert scene.vertices.grad.abs().sum() > 0
    # a flat grid: no normal inconsistency; bending it creates some
    g = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)), -1).reshape(-1, 2)
    quads = [[i * 5 + j, i * 5 + j + 1, (i + 1) * 5 + j + 1, (i + 1) * 5 + j] for i in range(4) for j in range(4)]
    tris = np.array([[a, b, c_] for a, b, c_, d in quads] + [[a, c_, d] for a, b, c_, d in quads])
    flat = MeshScene.create(np.c_[g, np.zeros(25)], tris)
    assert flat.regularizers()["normal_consistency"]().item() < 1e-6
    bent = MeshScene.create(np.c_[g, g[:, 0] ** 2], tris)
    assert bent.regularizers()["normal_consistency"]().item() > 1e-3


def test_config_round_trip_and_checkpoint_tensors():
    v, f, c = head(24)
    scene = MeshScene.create(v, f, texture_size=64)
    with torch.no_grad():
        scene.texture.uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    copy = MeshScene.from_config(scene.config())
    copy.load_state_tensors(scene.state_tensors())
    batch = cams([(40, 10)], 32)
    a, b = scene.render(batch, ["rgb", "depth"]), copy.render(batch, ["rgb", "depth"])
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert set(scene.parameter_groups()) == {"vertices", "texture"}


@pytest.fixture(scope="module")
def head_views():
    """render_head targets at 128 x 128: a ring of 12 training views (every 30 degrees, elevation
    alternating 25 / -15) and 3 held-out random orbit views (seeded)."""
    ring = [orbit_camera(a, -15 if i % 2 else 25, 3.0, fov_deg=38, width=128, height=128)
            for i, a in enumerate(range(0, 360, 30))]
    train = CameraBatch.from_pinholes(ring)
    test = CameraBatch.from_pinholes(sample_orbit_cameras(3, np.random.default_rng(1), width=128, height=128))
    return train, render_head(train), test, render_head(test)


def test_fit_mesh_to_procedural_head(head_views):
    """Coarse start: head_mesh(40) smoothed by 5 Laplacian steps and jittered (sigma 5 mm), grey texture
    on xatlas UVs (128 texels). 200 Adam steps of 4 random views (vertices lr 1e-3, texture lr 3e-2,
    L2 on rgb and alpha + 2 x Laplacian) reach >= 25 dB PSNR on held-out views at 128 x 128 (about
    28 dB). About 20 s on one idle core, plus ~6 s for the 15 target renders (2-3x that on a busy
    shared runner)."""
    train, gt, test, gt_test = head_views
    torch.manual_seed(0)
    v, f, _ = head(40)
    vt = torch.tensor(v)
    e = unique_edges(torch.tensor(f))
    deg = torch.zeros(len(vt)).index_add(0, e[:, 0], torch.ones(len(e))).index_add(0, e[:, 1], torch.ones(len(e)))
    for _ in range(5):
        s = torch.zeros_like(vt).index_add(0, e[:, 0], vt[e[:, 1]]).index_add(0, e[:, 1], vt[e[:, 0]])
        vt = 0.5 * vt + 0.5 * s / deg[:, None]
    vt = vt + 0.005 * torch.randn(vt.shape, generator=torch.Generator().manual_seed(1))
    scene = MeshScene.create(vt.numpy(), f, texture_size=128)
    with torch.no_grad():
        start = psnr(scene.render(test, ["rgb"])["rgb"], gt_test["rgb"])
    opt = torch.optim.Adam([{"params": [scene.vertices], "lr": 1e-3}, {"params": [scene.texture], "lr": 3e-2}])
    laplacian = scene.regularizers()["laplacian"]
    g = torch.Generator().manual_seed(2)
    for step in range(200):
        idx = torch.randperm(len(train), generator=g)[:4]
        out = scene.render(train.select(idx), ["rgb", "alpha"])
        loss = ((out["rgb"] - gt["rgb"][idx]) ** 2).mean() + ((out["alpha"] - gt["alpha"][idx]) ** 2).mean() \
            + 2.0 * laplacian()
        opt.zero_grad()
        loss.backward()
        opt.step()
        scene.after_step(step, opt)
    with torch.no_grad():
        final = psnr(scene.render(test, ["rgb"])["rgb"], gt_test["rgb"])
    assert (final >= 25).all(), f"held-out PSNR {final.tolist()} (start {start.tolist()})"
    assert 0 <= scene.texture.detach().min().item() and scene.texture.detach().max().item() <= 1


# ------------------------------------------------------------------------------------------- back-projection

def test_back_projection_reconstructs_texture():
    """Renders of a textured head from 12 views, back-projected into an empty texture (fused by viewing
    cosine), re-render like the original from new views."""
    v, f, _ = head(40)
    T = 128
    src = MeshScene.create(v, f, texture_size=T)
    surf = texel_surface(src.vertices.detach(), src.faces, src.uvs, src.uv_faces, T)
    with torch.no_grad():
        src.texture.copy_(torch.where(surf["valid"][..., None], head_albedo(surf["points"]), torch.zeros(3)))
    views = [(a, e) for a in range(0, 360, 60) for e in (-35, 40)]
    batch = cams(views, 192)
    with torch.no_grad():
        ref = src.render(batch, ["rgb", "alpha"])
    dst = MeshScene.create(v, f, uvs=src.uvs.numpy(), uv_faces=src.uv_faces.numpy(),
                           texture=np.zeros((T, T, 3), np.float32), texture_size=T)
    texs, vis = [], []
    for i in range(len(views)):
        t, w, written = back_project(dst, ref["rgb"][i], batch.select([i]), mask=ref["alpha"][i], write="none")
        assert written == 0 and t.shape == (T, T, 3) and w.shape == (T, T)
        assert 0 <= float(w.min()) and float(w.max()) <= 1 and (t[w == 0] == 0).all()
        texs.append(t)
        vis.append(w)
    fused, seen = fuse_projections(texs, vis)
    assert dst.texture.detach().abs().max().item() == 0, "write='none' leaves the scene alone"
    with torch.no_grad():
        dst.texture.copy_(fused)
    covered = seen > 0
    assert covered[surf["inside"]].float().mean() > 0.9
    assert (fused - src.texture.detach())[covered].abs().mean() < 0.02
    test = cams([(30, 10), (150, 0), (250, 15)], 128)
    with torch.no_grad():
        a, b = src.render(test, ["rgb"])["rgb"], dst.render(test, ["rgb"])["rgb"]
    assert (psnr(a, b) > 30).all(), psnr(a, b).tolist()


def test_back_projection_visibility_and_write_modes():
    v, f, _ = head(32)
    scene = MeshScene.create(v, f, texture_size=64)
    front = cams([(0, 0)], 96)
    red = torch.zeros(3, 96, 96)
    red[0] = 1
    tex, vis, written = back_project(scene, red, front, write="visible")
    surf = texel_surface(scene.vertices.detach(), scene.faces, scene.uvs, scene.uv_faces, 64)
    to_cam = torch.tensor([0.0, 0, 3]) - surf["points"]
    cosine = (surf["normals"] * to_cam).sum(-1) / to_cam.norm(dim=-1)
    facing = (cosine > 0.5) & (surf["points"][..., 2] > 0.3) & surf["inside"]
    behind = (surf["points"][..., 2] < -0.3) & surf["inside"]
    assert facing.sum() > 100 and vis[facing].gt(0).float().mean() > 0.95 and (vis[behind] == 0).all()
    assert written == int((vis > 0).sum()) and (scene.texture_seen > 0).sum() == written
    assert torch.allclose(scene.texture.detach()[vis > 0], torch.tensor([1.0, 0, 0]), atol=1e-5)
    assert (scene.texture.detach()[vis == 0] == 0.5).all()
    # "unseen" only fills texels not written before; a mask limits it to the left half of the picture
    blue = torch.zeros(3, 96, 96)
    blue[2] = 1
    side = cams([(60, 0)], 96)
    mask = torch.zeros(96, 96)
    mask[:, :48] = 1
    _, vis2, written2 = back_project(scene, blue, side, mask=mask, write="unseen")
    new = (vis2 > 0) & (vis == 0)
    assert written2 == int(new.sum()) > 0
    assert torch.allclose(scene.texture.detach()[vis > 0], torch.tensor([1.0, 0, 0]), atol=1e-5)
    assert torch.allclose(scene.texture.detach()[new], torch.tensor([0.0, 0, 1]), atol=1e-5)
    seen = scene.render(side, ["texture_seen", "alpha"])
    assert seen["texture_seen"].max() > 0.99
    with pytest.raises(ValueError, match="UV texture"):
        back_project(MeshScene.create(v, f), red, front)
    with pytest.raises(ValueError, match="camera"):
        back_project(scene, red, cams([(0, 0)], 64))


# ------------------------------------------------------------------------------------------- files

@pytest.fixture(scope="module")
def textured_head():
    v, f, _ = head(32)
    scene = MeshScene.create(v, f, texture_size=64)
    surf = texel_surface(scene.vertices.detach(), scene.faces, scene.uvs, scene.uv_faces, 64)
    with torch.no_grad():
        scene.texture.copy_(torch.where(surf["valid"][..., None], head_albedo(surf["points"]), torch.zeros(3)))
    return scene


@pytest.mark.parametrize("fmt", ["glb", "obj_zip"])
def test_textured_export_reload_render(textured_head, fmt):
    data = textured_head.export(fmt)
    assert mesh_io.detect_format(data) == fmt
    if fmt == "obj_zip":
        assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == ["mesh.mtl", "mesh.obj", "texture.png"]
    back = MeshScene.from_asset(data)
    assert back.texture is not None and back.texture.shape == textured_head.texture.shape
    assert back.vertices.shape == textured_head.vertices.shape and back.faces.shape == textured_head.faces.shape
    batch = cams([(20, 10), (200, -5)], 96)
    with torch.no_grad():
        a = textured_head.render(batch, ["rgb", "alpha", "depth"])
        b = back.render(batch, ["rgb", "alpha", "depth"])
    torch.testing.assert_close(b["alpha"], a["alpha"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b["depth"], a["depth"], atol=1e-3, rtol=0)
    assert (b["rgb"] - a["rgb"]).abs().max() < 4 / 255            # 8-bit PNG texture


def test_glb_is_y_up_with_base_color_texture(textured_head):
    import trimesh

    loaded = trimesh.load(io.BytesIO(textured_head.export("glb", scale=0.1)), file_type="glb")
    mesh = loaded.dump()[0] if isinstance(loaded, trimesh.Scene) else loaded
    assert mesh.visual.material.baseColorTexture is not None
    # same axes (glTF is +Y up like the world: no swap), positions times the scale
    v = textured_head.vertices.detach().numpy()
    np.testing.assert_allclose(mesh.bounds, 0.1 * np.stack([v.min(0), v.max(0)]), rtol=1e-5, atol=1e-7)


def test_vertex_colour_ply_round_trip():
    v, f, c = head(24)
    scene = MeshScene.create(v, f, vertex_colors=c)
    for fmt in ("ply", "glb", "obj_zip"):
        back = MeshScene.from_asset(scene.export(fmt))
        assert back.texture is None
        batch = cams([(45, 10)], 64)
        with torch.no_grad():
            a, b = scene.render(batch, ["rgb", "alpha"]), back.render(batch, ["rgb", "alpha"])
        assert (a["rgb"] - b["rgb"]).abs().max() < 3 / 255, fmt
        torch.testing.assert_close(a["alpha"], b["alpha"], atol=1e-3, rtol=0)
    # a textured mesh as PLY keeps its geometry; colours become per-vertex samples of the texture
    tex = MeshScene.create(v, f, texture_size=32)
    assert MeshScene.from_asset(tex.export("ply"), "ply").vertex_colors is not None


# ------------------------------------------------------------------------------------------- bad input

def test_bad_meshes_are_refused_clearly():
    v, f, _ = head(16)
    with pytest.raises(mesh_io.EmptyMeshError, match="empty"):
        MeshScene.create(np.zeros((0, 3)), np.zeros((0, 3), int))
    with pytest.raises(mesh_io.FaceIndexError, match=r"\[0, 3\)"):
        MeshScene.create(TRI, [[0, 1, 3]])
    with pytest.raises(mesh_io.FaceIndexError):
        MeshScene.create(TRI, [[0, -1, 2]])
    bad = v.copy()
    bad[5, 1] = np.nan
    with pytest.raises(mesh_io.NonFiniteMeshError, match="NaN"):
        MeshScene.create(bad, f)
    with pytest.raises(mesh_io.TooManyTrianglesError, match="limit of 100") as err:
        MeshScene.create(v, f, max_triangles=100)
    assert isinstance(err.value, ValueError) and err.value.metadata["limit"] == "100"
    with pytest.raises(mesh_io.MeshShapeError):
        MeshScene.create(v[:, :2], f)
    with pytest.raises(mesh_io.MeshShapeError):
        MeshScene.create(v, f, uvs=np.zeros((3, 2)))
    with pytest.raises(mesh_io.TooManyTrianglesError):
        MeshScene.from_asset(MeshScene.create(v, f).export("ply"), max_triangles=10)
    for garbage in (b"not a mesh at all", b"glTF" + b"\x00" * 20, b"ply\nformat nonsense\n",
                    b"PK\x03\x04garbage", _zip({"readme.txt": b"hi"})):
        with pytest.raises(mesh_io.MeshError):
            MeshScene.from_asset(garbage)
    with pytest.raises(ValueError, match="cannot export"):
        MeshScene.create(v, f).export("npz")
    with pytest.raises(ValueError, match="cannot render"):
        MeshScene.create(v, f).render(cams([(0, 0)], 8), ["opacity"])


def test_non_manifold_mesh_accepted_and_reported():
    """Three triangles on one edge plus a dangling one: rendered, and the report says what is wrong."""
    verts = np.array([[0, -0.5, 0], [0, 0.5, 0], [0.5, 0, 0], [-0.5, 0, 0.1], [0, 0, 0.5], [1, 1, 1]], np.float32)
    faces = [[0, 1, 2], [1, 0, 3], [0, 1, 4]]
    scene = MeshScene.create(verts, faces)
    r = scene.report
    assert r.non_manifold_edges == 1 and not r.watertight and not r.manifold and r.unreferenced_vertices == 1
    out = scene.render(cams([(10, 10)], 32), ["alpha", "normal_camera"])
    assert out["alpha"].sum() > 10 and torch.isfinite(out["normal_camera"]).all()
    assert torch.isfinite(scene.regularizers()["normal_consistency"]())


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, d in files.items():
            z.writestr(k, d)
    return buf.getvalue()


def _first_hits(origin: np.ndarray, dirs: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force ray casting (Moller-Trumbore, float64, both sides): for rays origin + t dirs (R, 3)
    against triangles (F, 3, 3), the nearest hit's triangle index (R,) (-1 for none) and its t (R,)."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    s = origin - tris[:, 0]
    q = np.cross(s, e1)
    best_t, best = np.full(len(dirs), np.inf), np.full(len(dirs), -1)
    for lo in range(0, len(dirs), 256):
        d = dirs[lo:lo + 256, None]
        p = np.cross(d, e2)
        det = (p * e1).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (p * s).sum(-1) / det
            b = (q * d).sum(-1) / det
            t = (q * e2).sum(-1) / det
        hit = (np.abs(det) > 1e-12) & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
        t = np.where(hit, t, np.inf)
        best[lo:lo + 256] = np.where(np.isfinite(t.min(1)), t.argmin(1), -1)
        best_t[lo:lo + 256] = t.min(1)
    return best, best_t


def test_visibility_and_depth_match_ray_casting():
    """An independent reference for the z-buffer: one ray through every pixel centre (u + 0.5, v + 0.5)
    of an off-centre, non-square camera, intersected with every triangle. The first triangle hit is the
    rasteriser's triangle id, and the hit's camera z its depth."""
    v, f, _ = head(24)
    batch = CameraBatch.from_pinholes([orbit_camera(35, 15, 2.6, fov_deg=45, width=56, height=44),
                                       orbit_camera(-120, -10, 2.8, fov_deg=40, width=56, height=44)],
                                      dtype=torch.float64)
    batch.K[1, 0, 2] += 4.5
    batch.K[1, 1, 1] *= 1.15
    raster = TorchRasterizer()
    frags = raster.rasterize(torch.tensor(v, dtype=torch.float64), torch.tensor(f), batch)
    depth = raster.depth(frags)[:, 0].numpy()
    vv, uu = np.meshgrid(np.arange(44) + 0.5, np.arange(56) + 0.5, indexing="ij")
    for i in range(len(batch)):
        K, w2c = batch.K[i].numpy(), batch.world_to_camera[i].numpy()
        dirs = np.stack([uu, vv, np.ones_like(uu)], -1).reshape(-1, 3) @ np.linalg.inv(K).T @ w2c[:3, :3]
        origin = -w2c[:3, :3].T @ w2c[:3, 3]
        expected, t = _first_hits(origin, dirs, v.astype(np.float64)[f])
        expected_z = t * (dirs @ w2c[2, :3])  # camera z of the hit
        got = frags.tri_id[i].numpy().reshape(-1)
        assert (expected >= 0).mean() > 0.3 and (expected < 0).mean() > 0.2, "the head must be partly in view"
        # a pixel centre on a shared edge may go to either triangle, at the same depth
        assert (got == expected).mean() > 0.99, (got == expected).mean()
        assert ((got >= 0) != (expected >= 0)).sum() <= 2
        hit = (got >= 0) & (expected >= 0)
        np.testing.assert_allclose(depth[i].reshape(-1)[hit], expected_z[hit], rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------- nvdiffrast

def test_opengl_clip_positions_match_opencv_projection():
    """What the nvdiffrast path feeds the GPU: NDC x = 2u/W - 1 and NDC y = 1 - 2v/H (so its output rows
    flipped are OpenCV rows), for an off-centre principal point and a non-square image too."""
    batch = CameraBatch.from_pinholes([orbit_camera(35, 20, 3, fov_deg=40, width=80, height=60)], dtype=torch.float64)
    batch.K[0, 0, 2] += 3.5
    batch.K[0, 1, 2] -= 2.0
    pts = torch.tensor(head(16)[0][::7], dtype=torch.float64)
    clip = opengl_clip_positions(pts, batch)
    ndc = clip[0, :, :3] / clip[0, :, 3:]
    pix, z = project_vertices(pts, batch)
    torch.testing.assert_close(ndc[:, 0], 2 * pix[0, :, 0] / 80 - 1)
    torch.testing.assert_close(ndc[:, 1], 1 - 2 * pix[0, :, 1] / 60)
    torch.testing.assert_close(clip[0, :, 3], z[0])
    assert (ndc[:, 2].abs() < 1).all()


def test_backend_selection():
    assert get_rasterizer("auto", "cpu").name == "torch"
    with pytest.raises(ValueError, match="nvdiffrast"):
        get_rasterizer("nvdiffrast", "cpu")
    with pytest.raises(ValueError, match="unknown"):
        get_rasterizer("opengl", "cpu")


@gpu
@needs_nvdiffrast
def test_nvdiffrast_matches_torch(textured_head):
    batch = cams([(20, 10), (130, -5)], 128)
    names = ["rgb", "alpha", "depth", "normal_camera", "uv", "triangle_id"]
    cpu = textured_head.render(batch, names)
    gpu_scene = MeshScene.from_config(textured_head.config())
    gpu_scene.load_state_tensors(textured_head.state_tensors())
    gpu_scene = gpu_scene.cuda()
    assert gpu_scene.backend == "nvdiffrast"
    out = gpu_scene.render(batch, names)
    agree = (out["triangle_id"].cpu() == cpu["triangle_id"]).float().mean()
    assert agree > 0.97
    inner = (cpu["alpha"] == 1) & (out["alpha"].cpu() == 1)
    for k in ("rgb", "depth", "normal_camera", "uv"):
        diff = (out[k].cpu() - cpu[k]).abs().amax(1, keepdim=True)
        assert diff[inner].median() < 1e-3, k
    (out["rgb"].sum() + out["alpha"].sum()).backward()
    assert gpu_scene.vertices.grad.abs().sum() > 0 and gpu_scene.texture.grad.abs().sum() > 0
