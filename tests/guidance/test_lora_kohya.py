"""A UNet LoRA in the kohya-ss format (how style LoRAs such as ID-to-3D's normal / albedo ones are commonly shared)
loads beside a diffusers-format one: its output kind is declared, it changes the UNet's noise prediction as its
scale says, and deselecting it restores the base model exactly. Tiny random weights in the real layout
(services/guidance/tiny_models.py): the numbers mean nothing, the loading does."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors import safe_open

from services.guidance.backbones.base import BatchConditions
from services.guidance.backbones.diffusers_loader import load_diffusers_backbone
from services.guidance.tiny_models import write_tiny_models
from services.guidance.types import LoraSpec

ALBEDO = {"name": "albedo", "path": "lora-albedo-kohya-tiny", "weight_name": "albedo_lora.safetensors",
          "output_kind": "albedo"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("kohya")
    write_tiny_models(root)
    entry = yaml.safe_load((root / "guidance.yaml").read_text())["backbones"][0]
    return root, entry


@pytest.fixture(scope="module")
def backbone(tiny):
    root, entry = tiny
    return load_diffusers_backbone({**entry, "loras": [*entry["loras"], ALBEDO]}, root, "cpu")


def test_the_file_is_in_kohya_layout_with_the_papers_two_ranks(tiny):
    root, _ = tiny
    with safe_open(str(root / ALBEDO["path"] / ALBEDO["weight_name"]), "pt") as f:
        keys = list(f.keys())
        assert keys and all(k.startswith("lora_unet_") for k in keys)
        self_attn = next(k for k in keys if "attn1_to_q.lora_down" in k)
        cross_attn = next(k for k in keys if "attn2_to_k.lora_down" in k)
        assert f.get_tensor(self_attn).shape[0] == 4 and f.get_tensor(cross_attn).shape[0] == 8
        assert float(f.get_tensor(self_attn.replace("lora_down.weight", "alpha"))) == 4.0


def test_kohya_lora_loads_with_its_output_kind_and_acts_by_scale(backbone):
    assert LoraSpec("albedo", "albedo") in backbone.info.loras and LoraSpec("normal", "normal") in backbone.info.loras
    g = torch.Generator().manual_seed(0)
    text = backbone.encode_text(["a photo of a person", "a portrait, side view"])
    latents = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([500, 300])
    base = backbone.predict_noise(latents, t, BatchConditions(text=text))
    full = backbone.predict_noise(latents, t, BatchConditions(text=text, loras=(("albedo", 1.0),)))
    half = backbone.predict_noise(latents, t, BatchConditions(text=text, loras=(("albedo", 0.5),)))
    normal = backbone.predict_noise(latents, t, BatchConditions(text=text, loras=(("normal", 1.0),)))
    assert (full - base).abs().amax() > 1e-3
    assert (half - base).abs().amax() < (full - base).abs().amax()         # the scale scales its effect
    assert (normal - full).abs().amax() > 1e-3                             # two different LoRAs
    assert torch.equal(backbone.predict_noise(latents, t, BatchConditions(text=text)), base)   # deselected: exact


def test_every_module_gets_its_own_alpha_over_rank(backbone):
    """alpha = rank in the file, so every LoRA layer scales by exactly 1, the cross-attention ones (rank 8, not
    the file's most common rank) included: diffusers' converter alone left those at 4 / 8."""
    unet = backbone.pipe.unet
    # lora_alpha / r is the layer's scale at LoRA scale 1 (`scaling` itself holds the last call's scale)
    scales = {name: m.lora_alpha["albedo"] / m.r["albedo"] for name, m in unet.named_modules()
              if isinstance(getattr(m, "lora_alpha", None), dict) and "albedo" in m.lora_alpha}
    assert any(n.endswith("attn2.to_k") for n in scales) and any(n.endswith("attn1.to_q") for n in scales)
    assert all(v == pytest.approx(1.0) for v in scales.values()), {n: v for n, v in scales.items() if v != 1.0}
