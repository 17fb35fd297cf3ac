"""The expression adapter (ID-to-3D's lambda_exp; format in services/guidance/backbones/expression_adapter.py)
beside the FaceID identity adapter (lambda_id), both active in one UNet call, on the tiny random SD models.

Scale semantics checked at two levels:
- predict_noise (BatchConditions): a scale of 0 switches that adapter off, and the output is bit-identical to
  the backbone loaded without that adapter (expression) or called without an identity (identity);
- the service (Distill, Denoise): guidance.proto's "0 = 1.0" holds for both request scales, so "off" there is the
  field left empty (no expression text / no identity embedding); the change grows with each scale."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from services.common.errors import FailedPrecondition
from services.guidance.backbones.base import BatchConditions, ModelFilesError
from services.guidance.backbones.diffusers_loader import load_diffusers_backbone
from services.guidance.backbones.expression_adapter import write_expression_adapter
from services.guidance.config import BatchingConfig, load_config
from services.guidance.service import GuidanceService
from services.guidance.types import Conditions, DenoiseRequest, DistillRequest, TimestepSchedule

RNG = np.random.default_rng(1)
X = RNG.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
IDENTITY = RNG.normal(size=512).astype(np.float32)
IDENTITY /= np.linalg.norm(IDENTITY)
EXPR_FILE = Path("expression-adapter-tiny") / "expression_adapter.safetensors"


@pytest.fixture(scope="module")
def tiny(tiny_guidance_yaml) -> Path:
    return Path(tiny_guidance_yaml).parent


@pytest.fixture(scope="module")
def entry(tiny_guidance_yaml) -> dict:
    return load_config(tiny_guidance_yaml, device="cpu").backbones[0]


@pytest.fixture(scope="module")
def backbone(tiny_service):
    return tiny_service.backbones["sd15-tiny"]


@pytest.fixture(scope="module")
def no_expression(tiny, entry):
    """The same backbone (ControlNets, FaceID, LoRA) loaded without the expression adapter."""
    return load_diffusers_backbone({**entry, "expression_adapters": []}, tiny, "cpu")


@pytest.fixture(scope="module")
def rows(backbone):
    g = torch.Generator().manual_seed(3)
    text = backbone.encode_text(["a portrait of a person", "a photo of a face"])
    latents = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([600, 300])
    identity = torch.nn.functional.normalize(torch.randn(2, 512, generator=g), dim=-1)
    expression = backbone.encode_expression(["smiling", "angry"])
    return text, latents, t, identity, expression


def _dist(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().mean())


# -- the file and Describe -------------------------------------------------------------------------------------


def test_tiny_file_is_in_the_documented_format_and_describe_shows_it(tiny, tiny_service, backbone):
    with safe_open(str(tiny / EXPR_FILE), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta == {"headforge_adapter": "expression", "num_tokens": "2", "embedding": "text_encoder_pooled"}
    assert {k.split(".")[1] for k in keys if k.startswith("ip_adapter.")} == {"1", "3", "5", "7"}
    assert {k for k in keys if k.startswith("image_proj.")} == {
        f"image_proj.{k}" for k in ("proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias",
                                    "norm.weight", "norm.bias")}
    (info, _), = tiny_service.describe().backbones
    assert info.expression_adapter and info.identity_adapters == ("faceid",)
    record = next(m for m in info.models if m.role == "expression_adapter:expression")
    assert record.provenance == "random_weights"
    assert backbone.encode_expression(["smiling"]).shape == (1, 32)     # the tiny text encoder's pooled dim


# -- both adapters in one UNet call --------------------------------------------------------------------------


def test_scale_zero_is_the_adapter_absent_exactly(backbone, no_expression, rows):
    text, latents, t, identity, expression = rows
    p = lambda bb, **kw: bb.predict_noise(latents, t, BatchConditions(text=text, **kw))   # noqa: E731
    # expression_scale 0 == the backbone loaded without the expression adapter, with and without identity
    torch.testing.assert_close(p(backbone, expression=expression, expression_scale=0.0), p(no_expression),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(p(backbone, identity=identity, expression=expression, expression_scale=0.0),
                               p(no_expression, identity=identity), rtol=0, atol=1e-6)
    # identity_scale 0 == no identity, with the expression active
    torch.testing.assert_close(p(backbone, identity=identity, identity_scale=0.0, expression=expression),
                               p(backbone, expression=expression), rtol=0, atol=1e-6)
    # both off == the plain model's output
    torch.testing.assert_close(p(backbone, identity=identity, identity_scale=0.0, expression=expression,
                                 expression_scale=0.0), p(no_expression), rtol=0, atol=1e-6)


def test_both_active_differs_from_each_alone_and_each_scale_grows_the_change(backbone, rows):
    text, latents, t, identity, expression = rows
    p = lambda **kw: backbone.predict_noise(latents, t, BatchConditions(text=text, **kw))   # noqa: E731
    plain, id_only, expr_only = p(), p(identity=identity), p(expression=expression)
    both = p(identity=identity, expression=expression)
    for alone in (plain, id_only, expr_only):
        assert _dist(both, alone) > 1e-3
    assert _dist(p(identity=identity, expression=expression.flip(0)), both) > 1e-3   # the text matters
    exp_sweep = [_dist(p(identity=identity, expression=expression, expression_scale=s), id_only)
                 for s in (0.5, 1.0, 2.0)]
    id_sweep = [_dist(p(identity=identity, identity_scale=s, expression=expression), expr_only)
                for s in (0.5, 1.0, 2.0)]
    assert 0 < exp_sweep[0] < exp_sweep[1] < exp_sweep[2], exp_sweep
    assert 0 < id_sweep[0] < id_sweep[1] < id_sweep[2], id_sweep


def _distill(expression="", expression_scale=0.0, identity=True, identity_scale=0.0, seed=5):
    return DistillRequest(images=X, guidance_scale=7.5, timesteps=TimestepSchedule(t=[0.3, 0.6]), seed=seed,
                          conditions=Conditions(prompt="a portrait of a person", expression=expression,
                                                expression_scale=expression_scale, identity_scale=identity_scale,
                                                identity_embedding=IDENTITY if identity else None))


def test_distill_and_denoise_with_both_adapters(tiny_service):
    """Through the service: the SDS gradient with identity + expression in one call; each request scale (0.5,
    1, 2; the proto's 0 means 1.0) moves it further from the gradient without that adapter."""
    g = lambda **kw: tiny_service.distill(_distill(**kw)).grad   # noqa: E731
    id_only, expr_only = g(), g(identity=False, expression="smiling")
    both = g(expression="smiling")
    assert _dist(both, id_only) > 0 and _dist(both, expr_only) > 0
    np.testing.assert_array_equal(g(expression="smiling", expression_scale=1.0), both)    # 0 = 1.0
    exp_sweep = [_dist(g(expression="smiling", expression_scale=s), id_only) for s in (0.5, 1.0, 2.0)]
    id_sweep = [_dist(g(expression="smiling", identity_scale=s), expr_only) for s in (0.5, 1.0, 2.0)]
    assert 0 < exp_sweep[0] < exp_sweep[1] < exp_sweep[2], exp_sweep
    assert 0 < id_sweep[0] < id_sweep[1] < id_sweep[2], id_sweep

    d = lambda **kw: tiny_service.denoise(DenoiseRequest(   # noqa: E731
        images=X, strength=0.5, num_steps=2, seed=4, conditions=Conditions(prompt="a head", **kw))).images
    plain, with_expr = d(), d(expression="angry", identity_embedding=IDENTITY)
    assert with_expr.shape == X.shape and not np.allclose(plain, with_expr)


def test_batched_rows_with_different_scales_equal_unbatched(tiny_guidance_yaml, tiny_service):
    reqs = [_distill(expression="smiling", seed=11), _distill(expression="angry", seed=12),
            _distill(expression="smiling", expression_scale=0.5, seed=13),
            _distill(expression="smiling", identity_scale=1.5, seed=14)]
    expected = [tiny_service.distill(r).grad for r in reqs]
    batched = GuidanceService(load_config(tiny_guidance_yaml, device="cpu").model_copy(
        update={"batching": BatchingConfig(max_queue_delay_ms=1500)}))
    try:
        with ThreadPoolExecutor(4) as pool:
            got = [r.grad for r in pool.map(batched.distill, reqs)]
        stats = batched.batcher.stats
    finally:
        batched.close()
    # the two scale-1 rows (different texts) share a call; each other (identity, expression) scale pair runs alone
    assert stats.largest_batch_requests == 2 and stats.batches == 3, stats
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * float(np.abs(e).max()))


# -- failures ----------------------------------------------------------------------------------------------------


def _bad_copy(tiny: Path, tmp_path: Path, edit, meta=None) -> Path:
    tensors = load_file(str(tiny / EXPR_FILE))
    edit(tensors)
    folder = tmp_path / "bad-expression"
    shutil.rmtree(folder, ignore_errors=True)
    path = folder / "expression_adapter.safetensors"
    write_expression_adapter(path, tensors, 2)
    if meta is not None:
        from safetensors.torch import save_file
        save_file(tensors, str(path), metadata=meta)
    return folder


@pytest.mark.parametrize("edit, meta, message", [
    (lambda t: t.pop("ip_adapter.3.to_v_ip.weight"), None, "missing tensors ['ip_adapter.3.to_v_ip.weight']"),
    (lambda t: t.update({"ip_adapter.2.to_k_ip.weight": torch.zeros(32, 32)}), None, "unexpected tensors"),
    (lambda t: t.update({"image_proj.proj.0.weight": torch.zeros(64, 16)}), None,
     "image_proj.proj.0.weight has shape (64, 16)"),
    (lambda t: t.update({"ip_adapter.1.to_k_ip.weight": torch.zeros(32, 24)}), None,
     "ip_adapter.1.to_k_ip.weight has shape (32, 24), expected (32, 32)"),
    (lambda t: None, {"headforge_adapter": "lora"}, "headforge_adapter is 'lora'"),
])
def test_a_bad_expression_file_fails_at_config_load_naming_it(tiny, entry, tmp_path, edit, meta, message):
    folder = _bad_copy(tiny, tmp_path, edit, meta)
    bad = {**entry, "expression_adapters": [{"name": "expression", "path": str(folder)}]}
    with pytest.raises(ModelFilesError) as err:
        load_diffusers_backbone(bad, tiny, "cpu")
    assert str(folder / "expression_adapter.safetensors") in str(err.value) and message in str(err.value), err.value


def test_two_expression_adapters_and_a_missing_file_are_config_errors(tiny, entry):
    one = entry["expression_adapters"][0]
    with pytest.raises(ModelFilesError, match="at most one"):
        load_diffusers_backbone({**entry, "expression_adapters": [one, {**one, "name": "other"}]}, tiny, "cpu")
    with pytest.raises(ModelFilesError, match="gone.safetensors"):
        load_diffusers_backbone({**entry, "expression_adapters": [{**one, "weight_name": "gone.safetensors"}]},
                                tiny, "cpu")


def test_expression_on_a_backbone_without_the_adapter_is_adapter_unsupported(tiny_guidance_yaml, entry,
                                                                             no_expression, rows):
    config = load_config(tiny_guidance_yaml, device="cpu")
    svc = GuidanceService(config.model_copy(update={"backbones": [{**entry, "expression_adapters": []}],
                                                    "batching": BatchingConfig(max_queue_delay_ms=0)}))
    try:
        (info, _), = svc.describe().backbones
        assert not info.expression_adapter
        with pytest.raises(FailedPrecondition) as err:
            svc.distill(_distill(expression="smiling"))
        assert err.value.reason == "ADAPTER_UNSUPPORTED"
    finally:
        svc.close()
    text, latents, t, _, expression = rows
    with pytest.raises(FailedPrecondition) as err:
        no_expression.predict_noise(latents, t, BatchConditions(text=text, expression=expression))
    assert err.value.reason == "ADAPTER_UNSUPPORTED"
