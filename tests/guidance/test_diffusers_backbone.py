"""The diffusers backbone on tiny models written in the real on-disk formats (services.guidance.tiny_models),
loaded through the same code path as real weights: StableDiffusionPipeline.from_pretrained, ControlNetModel,
diffusers' IP-Adapter loader and its peft LoRA loader."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from services.guidance.backbones.base import BatchConditions, ControlBatch, ModelFilesError
from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig
from services.guidance.backbones.diffusers_loader import load_diffusers_backbone
from services.core.models import mark_random_weights
from services.guidance.tiny_models import write_tiny_models
from services.guidance.types import ControlSpec, LoraSpec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny models' folder; guidance.yaml lies in it."""
    root = tmp_path_factory.mktemp("guidance-models")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="module")
def entry(tiny) -> dict:
    return yaml.safe_load((tiny / "guidance.yaml").read_text())["backbones"][0]


@pytest.fixture(scope="module")
def backbone(tiny, entry):
    return load_diffusers_backbone(entry, tiny, "cpu")


@pytest.fixture(scope="module")
def plain(tiny, entry):
    """The same SD folder with no ControlNet, adapter or LoRA loaded."""
    return load_diffusers_backbone({**entry, "controlnets": [], "identity_adapters": [], "expression_adapters": [],
                                    "loras": []}, tiny, "cpu")


@pytest.fixture(scope="module")
def inputs(backbone):
    g = torch.Generator().manual_seed(0)
    text = backbone.encode_text(["a photo of a person", "", "a portrait of a woman, side view"])
    latents = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([500, 200, 900])
    identity = torch.nn.functional.normalize(torch.randn(3, 512, generator=g), dim=-1)
    control = torch.rand(3, 3, 64, 64, generator=g)
    return text, latents, t, identity, control


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the files -------------------------------------------------------------------------------------------------


def test_on_disk_layout_is_the_real_one(tiny):
    sd = tiny / "sd15-tiny"
    index = json.loads((sd / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    for f in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
              "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
              "tokenizer/special_tokens_map.json", "scheduler/scheduler_config.json"):
        assert (sd / f).is_file(), f
    sched = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["num_train_timesteps"],
            sched["prediction_type"]) == ("scaled_linear", 0.00085, 0.012, 1000, "epsilon")
    for cn in ("controlnet-landmarks-tiny", "controlnet-normal-tiny"):
        assert (tiny / cn / "config.json").is_file() and (tiny / cn / "diffusion_pytorch_model.safetensors").is_file()

    state = torch.load(tiny / "ip-adapter-faceid-tiny" / "ip-adapter-faceid_sd15.bin", weights_only=True)
    assert set(state["image_proj"]) == {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias",
                                        "norm.weight", "norm.bias"}
    assert state["image_proj"]["proj.0.weight"].shape == (1024, 512)       # FaceID MLP, mult 2
    ip = state["ip_adapter"]
    ip_numbers = sorted({int(k.split(".")[0]) for k in ip if "_ip." in k})
    assert ip_numbers == [1, 3, 5, 7]                                       # the cross-attention processors
    assert {"0.to_q_lora.down.weight", "0.to_out_lora.up.weight", "7.to_v_lora.up.weight"} <= set(ip)

    from safetensors import safe_open

    with safe_open(str(tiny / "lora-normal-tiny" / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("unet.") and (k.endswith(".lora.down.weight") or k.endswith(".lora.up.weight"))
                        for k in keys)


def test_tiny_models_are_deterministic(tiny, tmp_path):
    again = tmp_path / "again"
    write_tiny_models(again)
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert _sha(tiny / rel) == _sha(again / rel), rel


# -- loading ---------------------------------------------------------------------------------------------------


def test_info_from_the_loaded_configs(tiny, backbone, plain):
    info = backbone.info
    assert (info.name, info.backend, info.family) == ("sd15-tiny", "diffusers", "sd15")
    assert (info.latent_channels, info.latent_scale_factor, info.native_resolution) == (4, 8, 64)
    assert (info.prediction_type, info.num_train_timesteps) == ("epsilon", 1000)
    assert info.controls == (ControlSpec("landmarks", "landmarks"), ControlSpec("normal", "normal"))
    assert info.identity_adapters == ("faceid",) and info.identity_embedding_dim == 512
    assert info.loras == (LoraSpec("normal", "normal"),)
    assert info.variants == ("sds", "isd") and plain.info.variants == ("sds",)
    assert plain.info.identity_embedding_dim == 0
    assert info.denoise and info.inpaint and info.generate
    roles = {m.role: m for m in info.models}
    assert set(roles) == {"unet", "vae", "text_encoder", "controlnet:landmarks", "controlnet:normal",
                          "identity_adapter:faceid", "expression_adapter:expression", "lora:normal"}
    assert all(m.backend == "diffusers" and len(m.sha256) == 16 for m in info.models)
    assert roles["identity_adapter:faceid"].sha256 == _sha(
        tiny / "ip-adapter-faceid-tiny" / "ip-adapter-faceid_sd15.bin")[:16]
    assert roles["unet"].sha256 == _sha(tiny / "sd15-tiny" / "unet" / "diffusion_pytorch_model.safetensors")[:16]

    ac = backbone.alphas_cumprod()
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    assert ac[0].item() == pytest.approx(1 - 0.00085)
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    assert ac[-1].item() == pytest.approx(np.prod(1 - betas), rel=1e-9)
    assert backbone.scheduler_config()["beta_schedule"] == "scaled_linear"


def test_config_rejects_unknown_fields():
    with pytest.raises(Exception):
        DiffusersBackboneConfig.model_validate({"name": "x", "path": "p", "bogus": 1})


# -- VAE and text ----------------------------------------------------------------------------------------------


def test_encode_decode_shapes_and_gradient(backbone):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    latents = backbone.encode_images(images)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    (latents ** 2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    one = backbone.encode_images(images[1:].detach())
    assert torch.allclose(one, latents[1:].detach(), atol=1e-5)       # posterior mean: deterministic, row-wise
    decoded = backbone.decode_latents(latents.detach())
    assert decoded.shape == (2, 3, 64, 64) and decoded.min() >= 0 and decoded.max() <= 1
    assert not decoded.requires_grad


def test_encode_text(backbone):
    text = backbone.encode_text(["a photo of a person", "a photo of a person", "a head"])
    assert text.shape == (3, 77, 32)
    assert torch.equal(text[0], text[1]) and not torch.allclose(text[0], text[2])


# -- noise prediction ------------------------------------------------------------------------------------------


def test_batched_equals_row_by_row_with_every_condition(backbone, inputs):
    text, latents, t, identity, control = inputs
    identity = identity.clone()
    identity[1] = 0
    controls = [ControlBatch("landmarks", control, torch.tensor([1.0, 0.5, 0.0])),
                ControlBatch("normal", control.flip(-1), torch.tensor([0.3, 1.0, 2.0]))]
    cond = BatchConditions(text=text, identity=identity, identity_scale=0.7, controls=controls,
                           loras=(("normal", 0.8),))
    batched = backbone.predict_noise(latents, t, cond)
    assert batched.shape == latents.shape and batched.dtype == torch.float32
    for i in range(3):
        row = BatchConditions(text=text[i:i + 1], identity=identity[i:i + 1], identity_scale=0.7,
                              controls=[ControlBatch(c.name, c.image[i:i + 1], c.scale[i:i + 1]) for c in controls],
                              loras=(("normal", 0.8),))
        single = backbone.predict_noise(latents[i:i + 1], t[i:i + 1], row)
        torch.testing.assert_close(single, batched[i:i + 1], atol=1e-5, rtol=0)


def test_control_changes_eps_and_scale_zero_is_no_control(backbone, inputs):
    text, latents, t, _, control = inputs
    base = backbone.predict_noise(latents, t, BatchConditions(text=text))
    on = backbone.predict_noise(latents, t, BatchConditions(
        text=text, controls=[ControlBatch("landmarks", control, torch.tensor([1.0, 1.0, 0.0]))]))
    assert (on[:2] - base[:2]).abs().amax() > 1e-3
    assert torch.equal(on[2], base[2])                         # a row at scale 0 is exactly the uncontrolled row
    off = backbone.predict_noise(latents, t, BatchConditions(
        text=text, controls=[ControlBatch("normal", control, torch.zeros(3))]))
    assert torch.equal(off, base)
    other = backbone.predict_noise(latents, t, BatchConditions(
        text=text, controls=[ControlBatch("normal", control, torch.ones(3))]))
    assert (other - on).abs().amax() > 1e-3                    # the two ControlNets differ


def test_identity(backbone, plain, inputs):
    """Verified: an identity changes eps and different identities differ; a zero row is IP-Adapter's negative
    (unconditional) embedding: it does not depend on the other rows and, as in diffusers' FaceID pipeline, it is
    not the adapter-off output (the FaceID projection of zeros and the FaceID LoRA are active); identity None (or
    identity_scale 0) switches the adapter off entirely: exactly the plain SD model's output, also right after an
    identity call."""
    text, latents, t, identity, _ = inputs
    base_plain = plain.predict_noise(latents, t, BatchConditions(text=text))
    with_id = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=identity))
    assert (with_id - base_plain).abs().amax() > 1e-3
    swapped = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=identity.flip(0)))
    assert (swapped[0] - with_id[0]).abs().amax() > 1e-4

    none = backbone.predict_noise(latents, t, BatchConditions(text=text))
    assert torch.equal(none, base_plain)
    scale0 = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=identity, identity_scale=0.0))
    assert torch.equal(scale0, base_plain)

    zeros = torch.zeros_like(identity)
    neg = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=zeros))
    mixed = identity.clone()
    mixed[1] = 0
    part = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=mixed))
    torch.testing.assert_close(part[1], neg[1], atol=1e-5, rtol=0)
    assert (neg - base_plain).abs().amax() > 1e-4

    weaker = backbone.predict_noise(latents, t, BatchConditions(text=text, identity=identity, identity_scale=0.3))
    assert (weaker - with_id).abs().amax() > 1e-4


def test_lora_changes_eps_and_deselecting_restores_exactly(backbone, plain, inputs):
    text, latents, t, _, _ = inputs
    base = backbone.predict_noise(latents, t, BatchConditions(text=text))
    with_lora = backbone.predict_noise(latents, t, BatchConditions(text=text, loras=(("normal", 1.0),)))
    assert (with_lora - base).abs().amax() > 1e-3
    half = backbone.predict_noise(latents, t, BatchConditions(text=text, loras=(("normal", 0.5),)))
    assert (half - with_lora).abs().amax() > 1e-4
    again = backbone.predict_noise(latents, t, BatchConditions(text=text))
    assert torch.equal(again, base)
    assert torch.equal(again, plain.predict_noise(latents, t, BatchConditions(text=text)))


def test_v_prediction_is_converted_to_eps(tiny, entry, tmp_path, inputs):
    sd = tmp_path / "sd15-v"
    shutil.copytree(tiny / "sd15-tiny", sd)
    cfg_path = sd / "scheduler" / "scheduler_config.json"
    sched = json.loads(cfg_path.read_text())
    sched["prediction_type"] = "v_prediction"
    cfg_path.write_text(json.dumps(sched))
    v_backbone = load_diffusers_backbone({"name": "v", "path": str(sd)}, tmp_path, "cpu")
    assert v_backbone.info.prediction_type == "v_prediction"
    text, latents, t, _, _ = inputs
    eps = v_backbone.predict_noise(latents, t, BatchConditions(text=text))
    with torch.no_grad():
        v = v_backbone.unet(latents, t, encoder_hidden_states=text).sample
    ac = v_backbone.alphas_cumprod()[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, ac.sqrt() * v + (1 - ac).sqrt() * latents, atol=1e-5, rtol=1e-5)


# -- missing files and config errors ---------------------------------------------------------------------------


def test_missing_unet_names_it_and_the_layout(tiny, entry, tmp_path):
    shutil.copytree(tiny / "sd15-tiny", tmp_path / "sd", ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(ModelFilesError) as err:
        load_diffusers_backbone({**entry, "path": "sd"}, tmp_path, "cpu")
    msg = str(err.value)
    assert str(tmp_path / "sd" / "unet") in msg and "model_index.json, unet/, vae/" in msg
    assert err.value.reason == "MODEL_FILES"


def test_missing_weights_and_folders(tiny, entry, tmp_path):
    shutil.copytree(tiny / "sd15-tiny", tmp_path / "sd")
    (tmp_path / "sd" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match=r"vae/diffusion_pytorch_model\.safetensors"):
        load_diffusers_backbone({"name": "x", "path": "sd"}, tmp_path, "cpu")
    with pytest.raises(ModelFilesError, match="nowhere.*expected a diffusers Stable Diffusion folder"):
        load_diffusers_backbone({"name": "x", "path": "nowhere"}, tmp_path, "cpu")
    with pytest.raises(ModelFilesError, match="not in the local cache"):
        load_diffusers_backbone({"name": "x", "path": "nobody-here/not-a-cached-model"}, tmp_path, "cpu")
    with pytest.raises(ModelFilesError, match="controlnet-gone.*ControlNet folder"):
        load_diffusers_backbone({**entry, "controlnets": [{"name": "c", "kind": "depth", "path": "controlnet-gone"}]},
                                tiny, "cpu")


def test_a_separate_vae_replaces_the_sd_folders(tiny, backbone, tmp_path, inputs):
    """Realistic Vision's _noVAE layout: an SD folder without vae/ and the VAE in its own AutoencoderKL folder
    (the entry's `vae`); it decodes as the folder's own vae did (same weights here), and its record names it."""
    shutil.copytree(tiny / "sd15-tiny", tmp_path / "novae", ignore=shutil.ignore_patterns("vae"))
    shutil.copytree(tiny / "sd15-tiny" / "vae", tmp_path / "sd-vae-ft-mse")
    mark_random_weights(tmp_path / "sd-vae-ft-mse", "a copy of the tiny SD's random VAE")
    with pytest.raises(ModelFilesError, match="novae/vae"):
        load_diffusers_backbone({"name": "rv", "path": "novae"}, tmp_path, "cpu")
    rv = load_diffusers_backbone({"name": "rv", "path": "novae", "vae": "sd-vae-ft-mse"}, tmp_path, "cpu")
    _, latents, _, _, _ = inputs
    assert torch.allclose(rv.decode_latents(latents), backbone.decode_latents(latents))
    vae = [m for m in rv.info.models if m.role == "vae"]
    assert [m.name for m in vae] == ["sd-vae-ft-mse"] and vae[0].provenance == "random_weights"
    (tmp_path / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFilesError, match="AutoencoderKL folder"):
        load_diffusers_backbone({"name": "rv", "path": "novae", "vae": "sd-vae-ft-mse"}, tmp_path, "cpu")


def test_missing_adapter_and_lora_files_are_named(tiny, entry):
    adapter = {"name": "faceid", "path": "ip-adapter-faceid-tiny", "weight_name": "ip-adapter-faceid_sd15_gone.bin",
               "allow_pickle": True}
    with pytest.raises(ModelFilesError) as err:
        load_diffusers_backbone({**entry, "identity_adapters": [adapter]}, tiny, "cpu")
    assert "ip-adapter-faceid_sd15_gone.bin" in str(err.value) and "IP-Adapter-FaceID" in str(err.value)
    lora = {"name": "normal", "path": "lora-normal-tiny", "weight_name": "gone.safetensors"}
    with pytest.raises(ModelFilesError, match=r"gone\.safetensors.*LoRA"):
        load_diffusers_backbone({**entry, "loras": [lora]}, tiny, "cpu")


def test_pickles_need_the_flag_and_bad_config_is_a_model_files_error(tiny, entry):
    adapter = {**entry["identity_adapters"][0], "allow_pickle": False}
    with pytest.raises(ModelFilesError, match="allow_pickle"):
        load_diffusers_backbone({**entry, "identity_adapters": [adapter]}, tiny, "cpu")
    bad_kind = {**entry, "controlnets": [{"name": "x", "kind": "segmentation", "path": "controlnet-normal-tiny"}]}
    with pytest.raises(ModelFilesError, match="segmentation"):
        load_diffusers_backbone(bad_kind, tiny, "cpu")
    bad_output = {**entry, "loras": [{**entry["loras"][0], "output_kind": "sketch"}]}
    with pytest.raises(ModelFilesError, match="sketch"):
        load_diffusers_backbone(bad_output, tiny, "cpu")
    bad_frame = {**entry, "loras": [{**entry["loras"][0], "normal_convention": "directx"}]}
    with pytest.raises(ModelFilesError, match="directx"):
        load_diffusers_backbone(bad_frame, tiny, "cpu")


def test_hf_repo_id_resolves_from_the_local_cache_only(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "hub" / "models--acme--sd15-tiny"
    shutil.copytree(tiny / "sd15-tiny", repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_diffusers_backbone({"name": "cached", "path": "acme/sd15-tiny"}, tmp_path / "elsewhere", "cpu")
    assert loaded.info.native_resolution == 64
    assert {m.role: m.name for m in loaded.info.models}["unet"] == "acme/sd15-tiny/unet"


# -- control pictures ------------------------------------------------------------------------------------------


def _check_control(x: torch.Tensor, r: int):
    assert x.shape == (1, 3, r, r) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def test_prepare_control_landmarks_and_canny(backbone):
    pic = np.random.default_rng(0).random((3, 96, 96)).astype(np.float32)
    x = backbone.prepare_control(ControlSpec("landmarks", "landmarks"), pic, 64)
    _check_control(x, 64)
    same = backbone.prepare_control(ControlSpec("landmarks", "landmarks"), pic[:, :64, :64], 64)
    assert np.allclose(same[0].numpy(), pic[:, :64, :64])                    # as given at the working size

    edges = np.zeros((1, 32, 32), np.float32)
    edges[0, 10, :] = 1
    e = backbone.prepare_control(ControlSpec("canny", "canny"), edges, 32)
    _check_control(e, 32)
    assert torch.equal(e[0, 0], e[0, 2]) and e[0, 0, 10].min() == 1 and e[0, 0, 20].max() == 0

    rgb = np.zeros((3, 64, 64), np.float32)
    rgb[:, 16:48, 16:48] = 1.0                                               # a white square on black
    c = backbone.prepare_control(ControlSpec("canny", "canny"), rgb, 64)
    _check_control(c, 64)
    assert set(np.unique(c.numpy())) <= {0.0, 1.0}
    assert c[0, 0, 16:48, 15:17].max() == 1 and c[0, 0, 30, 30] == 0 and c[0, 0, 2, 2] == 0


def test_prepare_control_normal_mapping(backbone):
    """OpenCV camera normals -> normalbae colours (1 - n) / 2: facing the camera (0, 0, -1) is (0.5, 0.5, 1);
    pointing right (+x) has red 0 (red = left); pointing up (-y in OpenCV) has green 1."""
    n = np.zeros((3, 16, 16), np.float32)
    n[2, :8] = -1.0                       # top half faces the camera
    n[0, 8:, :8] = 1.0                    # bottom-left quarter points right
    n[1, 8:, 8:] = -1.0                   # bottom-right quarter points up
    x = backbone.prepare_control(ControlSpec("normal", "normal"), n, 16)
    _check_control(x, 16)
    assert torch.allclose(x[0, :, 2, 2], torch.tensor([0.5, 0.5, 1.0]))
    assert torch.allclose(x[0, :, 12, 2], torch.tensor([0.0, 0.5, 0.5]))
    assert torch.allclose(x[0, :, 12, 12], torch.tensor([0.5, 1.0, 0.5]))
    assert backbone.prepare_control(ControlSpec("normal", "normal"), n, 32).shape == (1, 3, 32, 32)


def test_prepare_control_depth_mapping(backbone):
    d = np.zeros((1, 8, 8), np.float32)
    d[0, 2, 2] = 2.0                      # the nearest point
    d[0, 5, 5] = 4.0
    x = backbone.prepare_control(ControlSpec("depth", "depth"), d, 8)
    _check_control(x, 8)
    assert x[0, 0, 2, 2] == 1.0 and x[0, 0, 5, 5] == pytest.approx(0.5) and x[0, 0, 0, 0] == 0.0
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
