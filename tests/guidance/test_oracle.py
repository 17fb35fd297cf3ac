"""The oracle prior (a TEST prior, services/guidance/backbones/oracle.py): Distill pulls an image towards the
procedural head rendered at the request's camera, its marking sits on the side the conventions predict,
it needs cameras, it accepts (and ignores) the ISD / identity / control / LoRA / variant fields, and it
serves over gRPC from a model-repository YAML."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.process import ServiceProcess
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera
from services.core.procedural_head import MARKING_RGB, head_normals, render_head
from services.guidance.client import GrpcGuidanceClient
from services.guidance.config import BatchingConfig, GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.guidance.types import (ReferenceView, Conditions, ControlInput, DenoiseRequest, DistillRequest, GenerateRequest,
                                     TimestepSchedule)
from tests.guidance.conftest import psnr

SIZE = 32
ORACLE = {"name": "oracle", "backend": "oracle", "default": True, "native_resolution": SIZE}


def camera(azimuth: float, elevation: float = 10.0, size: int = SIZE):
    return orbit_camera(azimuth, elevation, 3.0, fov_deg=40, width=size, height=size)


def truth(cam, markings: bool = True) -> np.ndarray:
    """(1, 3, H, W): the procedural head at `cam` on white, as the oracle renders it."""
    return render_head(CameraBatch.from_pinholes([cam]), markings=markings)["rgb"].numpy()


def marking_pixels(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of the marking's saturated green (skin, hair, lips and white are far from it)."""
    r, g, b = image
    return (g - r > 0.3) & (g - b > 0.3)


@pytest.fixture(scope="module")
def oracle():
    svc = GuidanceService(GuidanceConfig(backbones=[ORACLE], device="cpu",
                                         batching=BatchingConfig(max_queue_delay_ms=0)))
    yield InProcessGuidanceClient(svc)
    svc.close()


def grey(n: int = 1, size: int = SIZE) -> np.ndarray:
    return np.full((n, 3, size, size), 0.5, np.float32)


def test_distill_descends_to_the_truth_at_the_camera(oracle):
    cam = camera(30)
    gt, mirrored = truth(cam), truth(camera(-30))
    x = grey()
    start = psnr(x, gt)
    for step in range(20):
        r = oracle.distill(DistillRequest(x, Conditions(prompt="a head"), cameras=[cam], seed=step + 1,
                                          timesteps=TimestepSchedule(t_min=0.02, t_max=0.5)))
        x = np.clip(x - 0.5 * r.grad, 0, 1)
    assert start < 12 and psnr(x, gt) > start + 20
    assert psnr(x, gt) > psnr(x, mirrored) + 10    # it is this camera's view, not any view of the head


def test_marking_is_on_plus_x():
    """Conventions: azimuth +90 = camera on +X sees the marked side; frontal: +X on the image's right."""
    left, right, front = (truth(camera(a))[0] for a in (90, -90, 0))
    assert marking_pixels(left).sum() > 20 and marking_pixels(right).sum() == 0
    cols = np.nonzero(marking_pixels(front))[1]
    assert len(cols) > 5 and cols.min() > SIZE // 2
    assert np.allclose(left[:, marking_pixels(left)].mean(1), MARKING_RGB, atol=0.05)
    assert not marking_pixels(truth(camera(90), markings=False)[0]).any()


def test_oracle_denoises_to_the_marked_side(oracle):
    """Through the service: SDEdit from pure noise returns the view at each request camera."""
    cams = [camera(90), camera(-90), camera(0)]
    out = oracle.denoise(DenoiseRequest(grey(3), strength=1.0, cameras=cams, num_steps=10, seed=3)).images
    assert psnr(out, np.concatenate([truth(c) for c in cams])) > 25
    assert marking_pixels(out[0]).sum() > 20 and marking_pixels(out[1]).sum() == 0
    assert np.nonzero(marking_pixels(out[2]))[1].min() > SIZE // 2


def test_exemplars_are_composited_over_the_request_background(oracle):
    """A render over a random background is the truth when the request says so: Distill of the exact
    exemplar over that colour has no gradient, and Denoise returns each image's own background."""
    cams = [camera(20), camera(-60)]
    colours = np.array([[0.9, 0.1, 0.2], [0.1, 0.3, 0.8]], np.float32)
    batch = CameraBatch.from_pinholes(cams)
    exact = render_head(batch, torch.from_numpy(colours), markings=True)["rgb"].numpy()
    on_white = render_head(batch, markings=True)["rgb"].numpy()
    schedule = TimestepSchedule(t_min=0.02, t_max=0.3)
    grad = oracle.distill(DistillRequest(exact, cameras=cams, seed=5, timesteps=schedule, background=colours)).grad
    wrong = oracle.distill(DistillRequest(exact, cameras=cams, seed=5, timesteps=schedule)).grad
    corner = (slice(None), slice(None), slice(0, 4), slice(0, 4))
    assert np.abs(grad).max() < 0.05 * np.abs(wrong).max()
    assert np.abs(wrong[corner]).mean() > 10 * max(np.abs(grad[corner]).mean(), 1e-8)
    out = oracle.denoise(DenoiseRequest(grey(2), strength=1.0, cameras=cams, num_steps=10, seed=3,
                                        background=colours[0])).images
    assert np.allclose(out[:, :, 0, 0], colours[0], atol=0.05)
    assert psnr(out[:1], exact[:1]) > 25 and psnr(out[:1], on_white[:1]) < 20
    with pytest.raises(InvalidArgument) as e:
        oracle.distill(DistillRequest(exact, cameras=cams, seed=1, background=np.ones((3, 3), np.float32)))
    assert e.value.field == "background"


def test_normal_lora_gives_normal_pictures(oracle):
    cam = camera(45)
    out = oracle.denoise(DenoiseRequest(grey(), strength=1.0, cameras=[cam], num_steps=10, seed=4,
                                        conditions=Conditions(loras=[("normal", 1.0)]))).images
    want = (head_normals(CameraBatch.from_pinholes([cam]), "camera") + 1).numpy() / 2
    assert psnr(out, want) > 25
    assert np.allclose(out[0, :, 0, 0], 0.5, atol=0.05)     # off the head: the zero normal


def test_generate_normal_and_depth_maps_at_the_cameras():
    """A normal oracle and a depth oracle stand in for text-to-normal / text-to-depth models: Generate samples
    the known head's maps at each camera (depth: normalised inverse depth, 1 at the nearest point)."""
    svc = GuidanceService(GuidanceConfig(device="cpu", batching=BatchingConfig(max_queue_delay_ms=0), backbones=[
        {**ORACLE, "name": "oracle_normal", "output_kind": "normal"},
        {**ORACLE, "name": "oracle_depth", "output_kind": "depth", "default": False}]))
    try:
        cams = [camera(0), camera(90)]
        normal = svc.generate(GenerateRequest(Conditions(backbone="oracle_normal"), num_images=2, seed=3,
                                              num_steps=20, cameras=cams))
        depth = svc.generate(GenerateRequest(Conditions(backbone="oracle_depth"), num_images=2, seed=3,
                                             num_steps=20, cameras=cams))
        with pytest.raises(InvalidArgument) as e:
            svc.generate(GenerateRequest(Conditions(backbone="oracle_depth"), num_images=2, cameras=cams[:1]))
        assert e.value.field == "cameras"
    finally:
        svc.close()
    want_n = (head_normals(CameraBatch.from_pinholes(cams), "camera") + 1).numpy() / 2
    assert normal.output_kind == "normal" and normal.images.shape == (2, 3, SIZE, SIZE)
    assert psnr(normal.images, want_n) > 25
    z = render_head(CameraBatch.from_pinholes(cams))["depth"].numpy()
    on = z > 0
    assert depth.output_kind == "depth" and depth.depth_convention == "inverse_depth"
    assert depth.images.shape == (2, 1, SIZE, SIZE)
    for i in range(2):
        want = z[i][on[i]].min() / z[i][on[i]]
        assert np.abs(depth.images[i][on[i]] - want).mean() < 0.05
        assert np.abs(depth.images[i][~on[i]]).mean() < 0.05        # background 0
    assert not np.allclose(depth.images[0], depth.images[1], atol=0.05)   # keyed by camera


def test_needs_cameras(oracle):
    with pytest.raises(InvalidArgument) as e:
        oracle.generate(GenerateRequest(seed=1))
    assert e.value.field == "cameras"
    with pytest.raises(InvalidArgument) as e:
        oracle.distill(DistillRequest(grey(), seed=1))
    assert e.value.field == "cameras"
    with pytest.raises(InvalidArgument) as e:
        oracle.denoise(DenoiseRequest(grey(), strength=0.5, seed=1))
    assert e.value.field == "cameras"


def test_accepts_and_ignores_recipe_fields(oracle):
    """ISD with identity, a scale, landmark / normal controls, a LoRA, expression, the other variants: accepted,
    and the gradient is the plain request's (the oracle ignores them)."""
    cams = [camera(20), camera(-60)]
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)
    plain = oracle.distill(DistillRequest(x, cameras=cams, seed=7)).grad
    identity = np.random.default_rng(1).normal(size=512).astype(np.float32)
    landmarks = np.random.default_rng(2).uniform(4, SIZE - 4, (68, 2)).astype(np.float32)
    normals = head_normals(CameraBatch.from_pinholes(cams), "camera").numpy()
    rich = Conditions(prompt="a photo of a person", negative_prompt="blurry", identity_embedding=identity,
                      identity_scale=0.7, identity_adapter="faceid", expression="smiling",
                      controls=[ControlInput(kind="landmarks", landmarks=landmarks, scale=0.8),
                                ControlInput(kind="normal", image=normals)],
                      loras=[("albedo", 0.8)])
    reference = ReferenceView(np.full((SIZE, SIZE, 3), 200, np.uint8), cams[0])   # image_conditioned needs one
    for variant in ("isd", "image_conditioned", "video"):
        r = oracle.distill(DistillRequest(x, rich, cameras=cams, variant=variant, guidance_scale=7.5, seed=7,
                                          reference=reference))
        assert np.allclose(r.grad, plain, atol=1e-5), variant
    info = oracle.describe().backbones[0][0]
    assert info.backend == "oracle" and info.family == "test_prior" and info.generate
    assert [(m.role, m.backend, m.name) for m in info.models] == [("test_prior", "oracle", "oracle-procedural-head")]


def test_render_cache_is_bounded():
    svc = GuidanceService(GuidanceConfig(backbones=[{**ORACLE, "cache_size": 2}], device="cpu"))
    try:
        bb = svc.backbones["oracle"]
        first = bb.encode_cameras([camera(0)], (SIZE, SIZE), SIZE, [])
        assert torch.equal(bb.encode_cameras([camera(0)], (SIZE, SIZE), SIZE, []), first)
        bb.encode_cameras([camera(10), camera(20), camera(10)], (SIZE, SIZE), SIZE, [])
        assert len(bb._cache) == 2
    finally:
        svc.close()


def test_grpc_distill(tmp_path):
    path = tmp_path / "guidance.yaml"
    path.write_text(yaml.safe_dump({"backbones": [ORACLE], "batching": {"max_queue_delay_ms": 0}}))
    proc = ServiceProcess(["guidance", "--port", "0", "--config", str(path), "--device", "cpu"],
                          tmp_path / "guidance.log")
    try:
        client = GrpcGuidanceClient(proc.address)
        req = DistillRequest(grey(), Conditions(prompt="a head"), cameras=[camera(90)], seed=11,
                             background=np.array([0.2, 0.6, 0.4], np.float32))
        remote = client.distill(req)
        generated = client.generate(GenerateRequest(num_images=1, seed=5, num_steps=10, cameras=[camera(90)]))
        info = client.describe().backbones[0][0]
        client.close()
    finally:
        proc.stop()
    local = GuidanceService(load_config(path, device="cpu"))
    try:
        want = local.distill(req).grad
    finally:
        local.close()
    assert remote.backbone == "oracle" and np.abs(remote.grad).max() > 0
    assert np.allclose(remote.grad, want, atol=1e-5)
    assert info.backend == "oracle" and info.models[0].role == "test_prior"
    assert psnr(generated.images, truth(camera(90))) > 20           # GenerateRequest.cameras crossed the wire
    assert {(c.name, c.kind) for c in info.controls} == {(k, k) for k in ("landmarks", "canny", "normal", "depth")}


def test_expression_texts_select_the_known_heads_variants():
    """With `expressions`, conditions.expression picks which variant of the head the exemplars show (the id_to_3d
    check's E known shapes); an unmapped text is INVALID_ARGUMENT naming the field; without the map, ignored."""
    import numpy as np

    from services.core.cameras import orbit_camera
    from services.guidance.config import BatchingConfig, GuidanceConfig
    from services.guidance.service import GuidanceService, InProcessGuidanceClient
    from services.guidance.types import Conditions, DistillRequest, TimestepSchedule

    mapping = {"neutral": "neutral", "mouth open": "jaw_open"}
    svc = GuidanceService(GuidanceConfig(device="cpu", batching=BatchingConfig(max_queue_delay_ms=0), backbones=[
        {"name": "oracle", "backend": "oracle", "default": True, "expressions": mapping},
        {"name": "plain", "backend": "oracle"}]))
    g = InProcessGuidanceClient(svc)
    cam = orbit_camera(20, 0, 3.0, fov_deg=40, width=48, height=48)
    image = np.full((1, 3, 48, 48), 0.5, np.float32)

    def grad(expression, backbone="oracle"):
        return g.distill(DistillRequest(images=image, cameras=[cam], seed=3, conditions=Conditions(
            backbone=backbone, prompt="x", expression=expression, loras=[("normal", 1.0)]),
            timesteps=TimestepSchedule(t_min=0.3, t_max=0.3001))).grad

    assert np.abs(grad("mouth open") - grad("neutral")).max() > 0.01
    assert np.array_equal(grad("mouth open", "plain"), grad("neutral", "plain"))
    with pytest.raises(InvalidArgument) as e:
        grad("angry")
    assert e.value.field == "conditions.expression"
