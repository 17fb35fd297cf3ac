"""The guidance service on a diffusers backbone (the tiny random SD1.5-layout models, loaded through the
same code path as real weights): the SDS gradient against the formula computed directly from the diffusers
modules, ISD conditions, batching with adapters and controls, and the sampling RPCs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.guidance.backbones.base import ModelFilesError
from services.guidance.config import BatchingConfig, load_config
from services.guidance.service import GuidanceService
from services.guidance.types import (Conditions, ControlInput, DenoiseRequest, DistillRequest, GenerateRequest,
                                     InpaintRequest, TimestepSchedule)

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
IDENTITY = RNG.normal(size=512).astype(np.float32)
IDENTITY /= np.linalg.norm(IDENTITY)
LANDMARKS = np.stack([np.linspace(10, 54, 68), 32 + 12 * np.sin(np.linspace(0, 6, 68))], axis=1).astype(np.float32)


@pytest.mark.parametrize("size", [64, 80])
def test_sds_gradient_equals_the_formula_through_the_vae(tiny_service, size):
    """grad = d/dx <stopgrad(g), E(resize(x))> with g = w(t) (eps_u + s (eps_c - eps_u) - eps), all terms
    computed here directly from the pipeline's modules."""
    bb = tiny_service.backbones["sd15-tiny"]
    pipe = bb.pipe
    x = np.ascontiguousarray(X[:, :, :size, :size]) if size <= 64 else \
        RNG.uniform(0, 1, (2, 3, size, size)).astype(np.float32)
    r = tiny_service.distill(DistillRequest(images=x, conditions=Conditions(prompt="a portrait of a person"),
                                            guidance_scale=7.5, timesteps=TimestepSchedule(t=[0.25, 0.75]),
                                            seed=3, return_noise=True))
    xt = torch.from_numpy(x).requires_grad_(True)
    x64 = torch.nn.functional.interpolate(xt, size=(64, 64), mode="bilinear", align_corners=False) if size != 64 else xt
    z = pipe.vae.encode(x64 * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    steps = torch.tensor([250, 750])
    a = bb.alphas_cumprod()[steps].float().view(-1, 1, 1, 1)
    eps = torch.from_numpy(r.noise)
    with torch.no_grad():
        z_t = a.sqrt() * z + (1 - a).sqrt() * eps

        def text(p):
            ids = pipe.tokenizer([p] * 2, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 return_tensors="pt").input_ids
            return pipe.text_encoder(ids)[0]

        # one UNet call, conditional rows first, as the service batches classifier-free guidance (two calls
        # of 2 rows and one of 4 round differently in float32)
        eps_c, eps_u = pipe.unet(torch.cat([z_t, z_t]), torch.cat([steps, steps]),
                                 encoder_hidden_states=torch.cat([text("a portrait of a person"), text("")]),
                                 added_cond_kwargs={"image_embeds": [torch.zeros(4, 1, 512),        # FaceID, off
                                                                     torch.zeros(4, 1, 32)]}         # expression, off
                                 ).sample.chunk(2)
        g = (1 - a) * (eps_u + 7.5 * (eps_c - eps_u) - eps)
    (expected,) = torch.autograd.grad(z, xt, g)
    np.testing.assert_allclose(r.grad, expected.numpy(), rtol=1e-3, atol=1e-6 * float(expected.abs().max()))
    np.testing.assert_allclose([d.latent_grad_norm for d in r.diagnostics], g.flatten(1).norm(dim=1), rtol=1e-4)


def _isd(seed, **kw):
    return DistillRequest(
        images=X[:1], seed=seed, variant="isd", guidance_scale=7.5,
        conditions=Conditions(prompt="a photo of a face", identity_embedding=IDENTITY,
                              controls=[ControlInput(kind="landmarks", landmarks=LANDMARKS, scale=0.8)], **kw))


def test_isd_conditions_change_the_gradient(tiny_service):
    plain = tiny_service.distill(DistillRequest(images=X[:1], seed=5, guidance_scale=7.5,
                                                conditions=Conditions(prompt="a photo of a face")))
    isd = tiny_service.distill(_isd(5))
    assert [d.timestep for d in plain.diagnostics] == [d.timestep for d in isd.diagnostics]
    assert not np.allclose(plain.grad, isd.grad, atol=1e-6)
    weaker = tiny_service.distill(_isd(5, identity_scale=0.3))
    assert not np.allclose(weaker.grad, isd.grad, atol=1e-6)
    with pytest.raises(InvalidArgument):
        tiny_service.distill(DistillRequest(images=X[:1], variant="isd"))          # ISD without identity
    with pytest.raises(InvalidArgument):
        tiny_service.distill(DistillRequest(images=X[:1], conditions=Conditions(identity_embedding=IDENTITY[:128])))
    with pytest.raises(FailedPrecondition):
        tiny_service.distill(DistillRequest(images=X[:1], conditions=Conditions(
            controls=[ControlInput(kind="depth", image=np.ones((1, 64, 64), np.float32))])))


def test_batched_equals_unbatched_with_adapter_controls_and_lora(tiny_guidance_yaml):
    reqs = [_isd(11), _isd(12), _isd(13, loras=[("normal", 0.7)]), _isd(14, loras=[("normal", 0.7)])]
    solo = GuidanceService(load_config(tiny_guidance_yaml, device="cpu").model_copy(
        update={"batching": BatchingConfig(max_queue_delay_ms=0)}))
    expected = [solo.distill(r).grad for r in reqs]
    solo.close()
    batched = GuidanceService(load_config(tiny_guidance_yaml, device="cpu").model_copy(
        update={"batching": BatchingConfig(max_queue_delay_ms=1500)}))
    with ThreadPoolExecutor(4) as pool:
        got = [r.grad for r in pool.map(batched.distill, reqs)]
    stats = batched.batcher.stats
    batched.close()
    assert stats.largest_batch_requests == 2 and stats.batches == 2, stats   # LoRA and no-LoRA never mix
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(np.abs(e).max()))


def test_sampling_rpcs_on_the_tiny_backbone(tiny_service):
    d = tiny_service.denoise(DenoiseRequest(images=X, strength=0.4, num_steps=3, seed=1,
                                            conditions=Conditions(prompt="a head")))
    assert d.images.shape == X.shape and np.isfinite(d.images).all() and 0 <= d.images.min() <= d.images.max() <= 1
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 16:48, 16:48] = 1
    normals = np.zeros((3, 64, 64), np.float32)
    normals[2] = -1
    ip = tiny_service.inpaint(InpaintRequest(images=X, mask=mask, num_steps=3, seed=2, conditions=Conditions(
        prompt="skin texture", controls=[ControlInput(kind="normal", image=normals)])))
    np.testing.assert_array_equal(ip.images[:, :, :16], X[:, :, :16])
    assert not np.allclose(ip.images[:, :, 16:48, 16:48], X[:, :, 16:48, 16:48])
    g = tiny_service.generate(GenerateRequest(conditions=Conditions(prompt="a normal map of a face",
                                                                    loras=[("normal", 1.0)]),
                                              num_images=2, num_steps=3, seed=7, width=64, height=48))
    assert g.images.shape == (2, 3, 48, 64) and g.output_kind == "normal"
    desc = tiny_service.describe()
    (info, default), = desc.backbones
    assert default and info.identity_embedding_dim == 512 and {c.kind for c in info.controls} == {"landmarks", "normal"}


def test_a_normal_loras_convention_converts_its_pictures(tiny_service, tiny_guidance_yaml):
    """The same tiny SD with its normal LoRA declared "opengl" instead of "opencv": with the LoRA active,
    Generate's pictures are the OpenCV ones with y and z negated (1 - x), x unchanged; without it, RGB as is."""
    config = load_config(tiny_guidance_yaml, device="cpu")
    entry = config.backbones[0]
    entry = {**entry, "loras": [{**lora, "normal_convention": "opengl"} if lora["name"] == "normal" else lora
                                for lora in entry["loras"]]}
    other = GuidanceService(config.model_copy(update={"backbones": [entry],
                                                      "batching": BatchingConfig(max_queue_delay_ms=0)}))
    try:
        for loras, flipped in (([("normal", 1.0)], True), ([], False)):
            req = GenerateRequest(conditions=Conditions(prompt="a normal map of a face", loras=loras), num_steps=3,
                                  seed=7, width=64, height=64)
            a, b = tiny_service.generate(req).images[0], other.generate(req).images[0]
            np.testing.assert_array_equal(b[0], a[0])
            if flipped:
                np.testing.assert_allclose(b[1:], 1 - a[1:], atol=1e-6)
            else:
                np.testing.assert_array_equal(b, a)
    finally:
        other.close()


def test_missing_model_files_name_the_file_and_layout(tiny_guidance_yaml, tmp_path):
    import shutil

    broken = tmp_path / "models"
    shutil.copytree(tiny_guidance_yaml.parent, broken)
    shutil.rmtree(broken / "sd15-tiny" / "vae")
    with pytest.raises(ModelFilesError) as e:
        GuidanceService(load_config(broken / "guidance.yaml", device="cpu"))
    assert "vae" in e.value.message and "model_index.json" in e.value.message
    with pytest.raises(ModelFilesError, match="guidance config .* not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("backbones: [{name: x, backend: tensorrt}]\n")
    with pytest.raises(ModelFilesError, match="unknown backend 'tensorrt'"):
        GuidanceService(load_config(tmp_path / "bad.yaml", device="cpu"))
    (tmp_path / "typo.yaml").write_text("backbones: [{name: x, backend: analytic}]\nbatching: {max_batch: 4}\n")
    with pytest.raises(ModelFilesError, match="max_batch"):
        load_config(tmp_path / "typo.yaml")
