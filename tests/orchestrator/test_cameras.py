"""The recipe camera language: each sampler's views and their order, validation errors that name the
path, seeded determinism, resolution schedules, backgrounds, and patch cameras whose renders are crops
of the full view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from orchestrator.stages.cameras import CameraSpec, resolution_at, step_rng, views_for_step
from services.common.errors import InvalidArgument
from services.core.cameras import orbit_position
from tests.helpers import single_thread  # noqa: F401 - one torch thread for the render test

SPEC = TypeAdapter(CameraSpec)


def spec(**fields):
    return SPEC.validate_python(fields)


def angles(view, target=(0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """(azimuth, elevation, radius) of the camera centre around target, read back from the extrinsics."""
    d = view.camera.position - np.asarray(target)
    r = float(np.linalg.norm(d))
    return math.degrees(math.atan2(d[0], d[2])), math.degrees(math.asin(d[1] / r)), r


def vertical_fov(camera) -> float:
    return math.degrees(2 * math.atan(camera.height / 2 / camera.K[1, 1]))


def test_yaml_form_and_defaults():
    s = SPEC.validate_python(yaml.safe_load("{kind: ring, views: 8, elevation: 0, radius: 4}"))
    assert (s.kind, s.views, s.radius, s.resolution, s.patch) == ("ring", 8, 4.0, 64, None)
    (v,) = views_for_step(s, 0, 1, step_rng(0, 0), 10)
    assert (v.camera.width, v.camera.height) == (64, 64) and v.box is None
    np.testing.assert_array_equal(v.background, [1, 1, 1])
    # one number is a range of one value
    o = spec(kind="orbit", radius=4, fov=[30, 40])
    assert o.radius == (4.0, 4.0) and o.fov == (30.0, 40.0)


def test_ring_spacing_and_order():
    s = spec(kind="ring", views=8, start_azimuth=10, elevation=20, radius=3, fov=40)
    seen = [views_for_step(s, step, 3, step_rng(0, step), 100) for step in range(3)]
    # three per step, in turn, wrapping after the eighth: 0 1 2 | 3 4 5 | 6 7 0
    expected = [[0, 1, 2], [3, 4, 5], [6, 7, 0]]
    for views, idx in zip(seen, expected):
        assert [round(v.azimuth_deg, 9) for v in views] == [10 + 45 * k for k in idx]
        for v, k in zip(views, idx):
            np.testing.assert_allclose(v.camera.position, orbit_position(10 + 45 * k, 20, 3), atol=1e-9)
            assert v.elevation_deg == 20 and math.isclose(vertical_fov(v.camera), 40)
    # consecutive ring cameras are 45 degrees apart in azimuth, measured from their centres
    flat = [v for views in seen for v in views][:8]
    steps = [(angles(b)[0] - angles(a)[0]) % 360 for a, b in zip(flat, flat[1:])]
    np.testing.assert_allclose(steps, 45.0, atol=1e-9)


def test_sweep_order_elevations_and_pace():
    s = spec(kind="sweep", views=5, azimuth=[-90, 90], elevation=[0, 10, 20, 10, 0], radius=3.5)
    order = [views_for_step(s, step, 1, step_rng(0, step), 100)[0] for step in range(6)]
    assert [v.azimuth_deg for v in order] == [-90, -45, 0, 45, 90, -90]
    assert [v.elevation_deg for v in order] == [0, 10, 20, 10, 0, 0]
    for v in order:
        az, el, r = angles(v)
        assert math.isclose(az, v.azimuth_deg, abs_tol=1e-9) and math.isclose(el, v.elevation_deg, abs_tol=1e-9)
        assert math.isclose(r, 3.5)
    # a spiral without the end, two consecutive views per step
    spiral = spec(kind="sweep", views=4, azimuth=[0, 360], include_end=False, elevation=0, elevation_end=30)
    views = views_for_step(spiral, 1, 2, step_rng(0, 1), 100)
    assert [(v.azimuth_deg, v.elevation_deg) for v in views] == [(180, 20), (270, 30)]
    # pace "run": the sweep spread over the run, each view held for total / views steps
    run = spec(kind="sweep", views=4, azimuth=[0, 90], pace="run")
    assert [views_for_step(run, step, 1, step_rng(0, step), 8)[0].azimuth_deg for step in range(8)] == \
        [0, 0, 30, 30, 60, 60, 90, 90]


def test_list_views_in_turn_or_random():
    views = [{"azimuth": 0, "elevation": 0}, {"azimuth": 90, "elevation": 10, "radius": 2.5, "fov": 50},
             {"azimuth": -90, "elevation": -5}]
    s = spec(kind="list", views=views)
    got = views_for_step(s, 1, 2, step_rng(0, 1), 10)   # views 2 then 0
    assert [(v.azimuth_deg, v.elevation_deg) for v in got] == [(-90, -5), (0, 0)]
    (second,) = views_for_step(s, 1, 1, step_rng(0, 1), 10)
    assert math.isclose(angles(second)[2], 2.5) and math.isclose(vertical_fov(second.camera), 50)
    r = spec(kind="list", views=views, order="random")
    drawn = {views_for_step(r, step, 1, step_rng(3, step), 100)[0].azimuth_deg for step in range(40)}
    assert drawn == {0, 90, -90}


@pytest.mark.parametrize("fields,loc", [
    (dict(kind="list", views=[{"azimuth": 0, "elevation": 0}, {"azimuth": 0, "elevation": 95}]),
     ("list", "views", 1, "elevation")),
    (dict(kind="list", views=[{"azimuth": 400, "elevation": 0}]), ("list", "views", 0, "azimuth")),
    (dict(kind="list", views=[{"azimuth": 0, "elevation": 0, "radius": 0}]), ("list", "views", 0, "radius")),
    (dict(kind="list", views=[{"azimuth": 0, "elevation": 0, "fov": 170}]), ("list", "views", 0, "fov")),
    (dict(kind="list", views=[{"azimuth": 0, "elevation": 0, "fov": 1}]), ("list", "views", 0, "fov")),
    (dict(kind="list", views=[{"azimuth": 0, "elevation": 0, "zoom": 2}]), ("list", "views", 0, "zoom")),
    (dict(kind="list", views=[]), ("list", "views")),
    (dict(kind="orbit", elevation=[30, -10]), ("orbit", "elevation")),
    (dict(kind="orbit", fov=[20, 200]), ("orbit", "fov", 1)),
    (dict(kind="ring", views=0), ("ring", "views")),
    (dict(kind="ring", views=4, resolution=[0, 64, 9000, 100]), ("ring", "resolution")),
    (dict(kind="ring", views=4, background={"kind": "fixed", "color": [0, 0, 2]}),
     ("ring", "background", "fixed", "color", 2)),
    (dict(kind="ring", views=4, patch={"size": 32, "scale": [0.5, 1.5]}), ("ring", "patch", "scale", 1)),
    (dict(kind="teleport"), ()),
])
def test_validation_errors_name_the_path(fields, loc):
    with pytest.raises(ValidationError) as e:
        SPEC.validate_python(fields)
    assert e.value.errors()[0]["loc"] == loc


def test_sweep_elevation_list_must_match_views():
    with pytest.raises(ValidationError, match="one value per view"):
        spec(kind="sweep", views=3, elevation=[0, 10])


def test_orbit_ranges_and_look_at_target():
    target = (0.2, -0.3, 0.5)
    s = spec(kind="orbit", azimuth=[-60, 120], elevation=[-15, 40], radius=[2.5, 3.5], fov=[30, 45], target=target)
    views = [v for step in range(50) for v in views_for_step(s, step, 4, step_rng(7, step), 50)]
    az, el, r = np.array([angles(v, target) for v in views]).T
    fov = np.array([vertical_fov(v.camera) for v in views])
    for values, (lo, hi) in [(az, (-60, 120)), (el, (-15, 40)), (r, (2.5, 3.5)), (fov, (30, 45))]:
        assert values.min() >= lo - 1e-9 and values.max() <= hi + 1e-9
        assert values.max() - values.min() > 0.8 * (hi - lo)   # the range is covered, not one value
    np.testing.assert_allclose(az, [v.azimuth_deg for v in views], atol=1e-9)
    np.testing.assert_allclose(el, [v.elevation_deg for v in views], atol=1e-9)
    for v in views:
        axis = v.camera.camera_to_world[:3, 2]          # OpenCV +z, the optical axis in world space
        to_target = np.asarray(target) - v.camera.position
        np.testing.assert_allclose(axis, to_target / np.linalg.norm(to_target), atol=1e-9)
        assert np.allclose(v.camera.project(np.asarray([target]))[0], [32, 32])   # target at the centre


def test_same_seed_and_step_give_identical_views():
    s = spec(kind="orbit", background={"kind": "random"}, patch={"size": 16, "scale": [0.2, 0.9]})

    def draw(seed, step):
        return views_for_step(s, step, 3, step_rng(seed, step), 100)

    def same(a, b):
        return all(np.array_equal(x.camera.K, y.camera.K) and np.array_equal(x.camera.world_to_camera,
                                                                             y.camera.world_to_camera)
                   and np.array_equal(x.background, y.background) and x.box == y.box for x, y in zip(a, b))

    first = draw(5, 12)
    draw(5, 11)                                  # other steps in between change nothing (a resumed job)
    assert same(first, draw(5, 12))
    assert not same(first, draw(5, 13)) and not same(first, draw(6, 12))


def test_resolution_schedule():
    s = spec(kind="ring", views=4, resolution=[0, 64, 256, 1000])
    assert [resolution_at(s, step) for step in (0, 100, 250, 500, 1000, 5000)] == [64, 80, 112, 160, 256, 256]
    for step, size in [(0, 64), (500, 160), (2000, 256)]:
        (v,) = views_for_step(s, step, 1, step_rng(0, step), 2000)
        assert (v.camera.width, v.camera.height) == (size, size)
        assert math.isclose(vertical_fov(v.camera), 35)            # fov fixed, focal grows with the size
    assert resolution_at(spec(kind="ring", views=1, resolution=100), 0) == 104   # halves round up
    # with a patch the full view follows the schedule and the rendered patch keeps its size
    p = spec(kind="ring", views=1, resolution=[0, 64, 256, 1000], patch={"size": 32, "scale": [0.5, 1]})
    (v,) = views_for_step(p, 1000, 1, step_rng(0, 1000), 1000)
    assert (v.full_camera.width, v.camera.width, v.camera.height) == (256, 32, 32)


def test_random_backgrounds_are_in_range_and_seeded():
    s = spec(kind="ring", views=4, background={"kind": "random"})
    colours = np.array([v.background for step in range(100)
                        for v in views_for_step(s, step, 2, step_rng(1, step), 100)])
    assert colours.shape == (200, 3) and colours.dtype == np.float32
    assert colours.min() >= 0 and colours.max() <= 1 and colours.std(axis=0).min() > 0.2
    assert len({tuple(c) for c in colours}) == 200
    again = [v.background for v in views_for_step(s, 7, 2, step_rng(1, 7), 100)]
    np.testing.assert_array_equal(again, colours[14:16])
    choice = spec(kind="ring", views=4, background={"kind": "random_choice", "colors": [[0, 0, 0], [1, 1, 1]]})
    picked = {tuple(v.background) for step in range(30) for v in views_for_step(choice, step, 1, step_rng(2, step), 30)}
    assert picked == {(0, 0, 0), (1, 1, 1)}
    fixed = spec(kind="ring", views=4, background={"kind": "fixed", "color": [0.1, 0.2, 0.3]})
    np.testing.assert_allclose(views_for_step(fixed, 0, 1, step_rng(0, 0), 1)[0].background, [0.1, 0.2, 0.3])


def test_patch_boxes_and_projection():
    s = spec(kind="orbit", radius=3, resolution=64, patch={"size": 24, "scale": [0.25, 0.75]})
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (20, 3))
    sides = []
    for step in range(40):
        for v in views_for_step(s, step, 2, step_rng(0, step), 40):
            x0, y0, x1, y1 = v.box
            side = x1 - x0
            assert y1 - y0 == side and 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64 and 16 <= side <= 48
            sides.append(side)
            # a point at full-view pixel p lands at (p - box corner) * size / side in the patch
            full, patch = v.full_camera.project(points), v.camera.project(points)
            np.testing.assert_allclose(patch, (full - [x0, y0]) * 24 / side, atol=1e-9)
    assert min(sides) < 24 < max(sides)


def test_bad_step_arguments():
    s = spec(kind="ring", views=4)
    for kwargs, field in [(dict(step=0, n=0, total_steps=1), "views_per_step"),
                          (dict(step=-1, n=1, total_steps=1), "step"), (dict(step=0, n=1, total_steps=0), "step")]:
        with pytest.raises(InvalidArgument) as e:
            views_for_step(s, rng=step_rng(0, 0), **kwargs)
        assert e.value.field == field


@pytest.fixture(scope="module")
def textured_head():
    """A render client holding a coarse procedural-head mesh with a random texture (so crops differ)."""
    from services.core.procedural_head import head_mesh
    from services.render.service import InProcessRenderClient, RenderService
    from services.render.types import RenderLimits

    v, f, _ = head_mesh(resolution=24)
    d = v / np.linalg.norm(v, axis=1, keepdims=True)
    uvs = np.stack([np.arctan2(d[:, 0], d[:, 2]) / (2 * np.pi) + 0.5, np.arccos(np.clip(d[:, 1], -1, 1)) / np.pi], 1)
    texture = np.random.default_rng(0).uniform(0, 1, (3, 32, 32)).astype(np.float32)
    client = InProcessRenderClient(RenderService(RenderLimits()))
    scene = client.create_scene("mesh", {"vertices": v, "faces": f, "uvs": uvs.astype(np.float32),
                                         "texture": texture, "texture_size": 32})
    yield client, scene.scene_id
    client.close()


def test_patch_render_is_the_crop_of_the_full_render(textured_head):
    """A patch whose side equals its size renders exactly the full view's pixels in its box. The mesh
    renderer's silhouette anti-aliasing blends each edge pixel with its neighbour, which a patch lacks
    beyond its border, so rgb and alpha are compared one pixel inside it; depth everywhere."""
    client, sid = textured_head
    s = spec(kind="orbit", radius=3, resolution=64, background={"kind": "random"},
             patch={"size": 24, "scale": [0.375, 0.375]})
    compared = 0
    for step in range(3):
        for v in views_for_step(s, step, 2, step_rng(1, step), 3):
            x0, y0, x1, y1 = v.box
            assert x1 - x0 == 24
            full = client.render(sid, [v.full_camera], ["rgb", "alpha", "depth"], background=v.background).outputs
            patch = client.render(sid, [v.camera], ["rgb", "alpha", "depth"], background=v.background).outputs
            assert patch["rgb"].shape == (1, 3, 24, 24)
            for name, inner in [("rgb", 1), ("alpha", 1), ("depth", 0)]:
                crop = full[name][:, :, y0:y1, x0:x1]
                a, b = (x[:, :, inner:24 - inner, inner:24 - inner] for x in (crop, patch[name]))
                np.testing.assert_allclose(b, a, atol=1e-5, err_msg=name)
            compared += int(patch["alpha"].min() < 0.5 < patch["alpha"].max())   # patches on the silhouette
    assert compared >= 2


def test_gaussians_patch_render_is_the_crop_up_to_the_3dgs_frustum_clamp(monkeypatch):
    """Gaussians have no silhouette anti-aliasing: a patch is the crop everywhere, to float precision,
    once the EWA Jacobian's frustum clamp (3DGS/gsplat, gaussians_projection.JACOBIAN_CLAMP) cannot act;
    with it, Gaussians centred far outside the patch are drawn a little differently (stated bound)."""
    from services.core.procedural_head import head_mesh
    from services.render.representations import gaussians_projection
    from services.render.service import InProcessRenderClient, RenderService
    from services.render.types import RenderLimits

    v, _, colours = head_mesh(resolution=32)
    client = InProcessRenderClient(RenderService(RenderLimits()))
    sid = client.create_scene("gaussians", {"points": v.astype(np.float32), "colors": colours.astype(np.float32),
                                            "opacity": 0.8}).scene_id
    s = spec(kind="orbit", radius=3, resolution=64, background={"kind": "random"},
             patch={"size": 24, "scale": [0.375, 0.375]})
    views = [v for step in range(2) for v in views_for_step(s, step, 2, step_rng(1, step), 2)]

    def worst(name: str) -> float:
        diffs = []
        for view in views:
            x0, y0, x1, y1 = view.box
            full = client.render(sid, [view.full_camera], [name], background=view.background).outputs[name]
            patch = client.render(sid, [view.camera], [name], background=view.background).outputs[name]
            diffs.append(float(np.abs(patch - full[:, :, y0:y1, x0:x1]).max()))
        return max(diffs)

    clamped = {name: worst(name) for name in ("rgb", "alpha", "depth")}
    monkeypatch.setattr(gaussians_projection, "JACOBIAN_CLAMP", 1e3)
    exact = {name: worst(name) for name in ("rgb", "alpha", "depth")}
    client.close()
    assert max(exact.values()) < 2e-5, exact
    assert max(clamped.values()) < 5e-3, clamped
