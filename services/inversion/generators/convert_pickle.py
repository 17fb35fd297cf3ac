"""Convert an official EG3D / PanoHead / 3DPortraitGAN network pickle to the HeadForge safetensors format.

A 3DPortraitGAN network (state with backbone.synthesis.b3d<r>.* 3D-aware blocks or pose_branch.*) goes
to convert_portraitgan.py, which states what it maps and what it cannot convert; the rest of this
docstring is the EG3D / PanoHead path.

Pickles execute code when loaded, so nothing here unpickles a file unless the caller passes
trust=True (the server's `--trust-pickles`, the CLI's `--trust-pickle`); without it the call fails
with FailedPrecondition reason PICKLE_NOT_TRUSTED before the file is opened. The official pickles also
need their code importable (`dnnlib`, `torch_utils`: put the EG3D or PanoHead repository on PYTHONPATH).

What is read: the dict's "G_ema" (else "G") network; its state_dict() gives the tensors and, when
present, its init_kwargs (z_dim, w_dim, img_resolution, rendering_kwargs: box_warp, ray_start,
ray_end, depth_resolution, depth_resolution_importance, avg_camera_radius, avg_camera_pivot, ...) the
settings. Everything else is inferred from tensor shapes:
  c_dim / w_dim / z_dim   backbone.mapping.embed.weight (w_dim, c_dim), fc0.weight (w_dim, z_dim + w_dim)
  plane resolution        the largest synthesis block b<R>
  channels x depth        the last block's torgb.weight rows = 3 * C * D, D from rendering_kwargs
                          triplane_depth (PanoHead; D > 1 means "trigrid"), else "triplane" unless
                          overrides say {"kind": "trigrid"} (D then defaults to PanoHead's 3)
  conditioning            c_scale from rendering_kwargs (0 when c_gen_conditioning_zero; the official
                          default 0 when rendering_kwargs lack it; 1 without rendering_kwargs)
Not converted (their tensors are ignored and logged): PanoHead's background network (bcg_synthesis),
camera self-adaptation mapping (t_mapping) and optional raw toRGB layer; decoders with an activation
other than EG3D's sigmoid are refused.
  synthesis widths        conv1.weight rows per block -> channel_base / channel_max
  decoder                 decoder.net.0.weight (hidden, C), decoder.net.2.weight (1 + K, hidden)
  super-resolution        superresolution.block<i>.conv1.weight rows; neural resolution from
                          init_kwargs / the network's neural_rendering_resolution / half the first SR
                          block's noise size; output = neural * 2^blocks
The official modules use the same parameter names and equalised-lr storage as ours (layers.py), so
tensors copy by name; official-only buffers (e.g. unused fp16 flags) are ignored and reported.
`overrides` (GeneratorConfig fields) win over everything inferred, e.g. {"kind": "trigrid",
"depth": 3, "crop_style": "head", "azimuth_min": -180, "azimuth_max": 180} for PanoHead.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from services.common.errors import FailedPrecondition
from services.inversion.generators.checkpoint import load_state
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator

log = logging.getLogger("headforge.inversion.convert")
TRUST_FLAG = "--trust-pickles"


def load_network_pickle(path: str | Path, *, trust: bool) -> Any:
    """Unpickle a network file; FailedPrecondition PICKLE_NOT_TRUSTED unless trust (checked first)."""
    if not trust:
        raise FailedPrecondition(
            f"{path} is a Python pickle, which can run arbitrary code when loaded; start the server with "
            f"{TRUST_FLAG} (config inversion.trust_pickles) to load it, or convert it once with "
            "`headforge models convert-gan PKL OUTDIR --trust-pickle`", reason="PICKLE_NOT_TRUSTED",
            metadata={"flag": TRUST_FLAG, "path": str(path)})
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 -- guarded by the explicit trust flag above
    except FileNotFoundError:
        raise FailedPrecondition(f"{path} does not exist", reason="GENERATOR_NOT_FOUND") from None
    except Exception as e:  # missing dnnlib/torch_utils, corrupt file, ...
        raise FailedPrecondition(f"{path}: cannot unpickle ({type(e).__name__}: {e}); official pickles need the "
                                 "EG3D / PanoHead / 3DPortraitGAN code (dnnlib, torch_utils, training) on PYTHONPATH",
                                 reason="GENERATOR_LOAD_FAILED") from None


def _network(data: Any):
    if isinstance(data, dict):
        for key in ("G_ema", "G"):
            if key in data:
                return data[key]
        raise FailedPrecondition(f"pickle holds {sorted(map(str, data))}; expected a 'G_ema' or 'G' network",
                                 reason="CHECKPOINT_MISMATCH")
    return data


def sr_settings(state: dict[str, torch.Tensor], kw: dict, rk: dict, prefer_sr_noise: bool = False
                ) -> tuple[int, int, tuple[int, ...]]:
    """(neural resolution, output resolution, SR block widths) from superresolution.block<i> tensors and
    init_kwargs / rendering_kwargs (see the module docstring). prefer_sr_noise: take the neural resolution
    from the first SR block's noise size (its input) even when the network says otherwise."""
    sr_blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"superresolution\.block(\d+)\.", k))})
    neural = int(rk.get("neural_rendering_resolution", kw.get("neural_rendering_resolution", 0)) or 0)
    img_res = int(kw.get("img_resolution", 0) or 0)
    if sr_blocks:
        noise0 = state.get("superresolution.block0.conv1.noise_const")
        if (prefer_sr_noise or not neural) and noise0 is not None:  # the first SR block works at twice the input
            neural = int(noise0.shape[-1]) // 2
        neural = neural or (img_res >> len(sr_blocks) if img_res else 64)
        output = neural << len(sr_blocks)
        sr_channels = tuple(tuple(state[f"superresolution.block{i}.conv1.weight"].shape)[0] for i in sr_blocks)
    else:
        neural = neural or img_res or 64
        output, sr_channels = neural, (128, 64)
    return neural, output, sr_channels


def shape_reader(state: dict[str, torch.Tensor], family: str):
    """name -> the shape of state[name]; FailedPrecondition CHECKPOINT_MISMATCH ("not a <family> generator")
    when the tensor is absent."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise FailedPrecondition(f"not {family} generator: no tensor {name!r}", reason="CHECKPOINT_MISMATCH")
        return tuple(state[name].shape)

    return shape


def infer_config(state: dict[str, torch.Tensor], init_kwargs: dict | None = None,
                 overrides: dict | None = None) -> GeneratorConfig:
    """A GeneratorConfig from official tensor shapes + init_kwargs + overrides (see module docstring)."""
    kw = dict(init_kwargs or {})
    rk = dict(kw.get("rendering_kwargs") or {})
    ov = dict(overrides or {})
    shape = shape_reader(state, "an EG3D/PanoHead")

    w_dim, fc0_in = shape("backbone.mapping.fc0.weight")
    c_dim = shape("backbone.mapping.embed.weight")[1] if "backbone.mapping.embed.weight" in state else 0
    z_dim = fc0_in - (w_dim if c_dim else 0)
    mapping_layers = len({m.group(1) for k in state if (m := re.match(r"backbone\.mapping\.fc(\d+)\.weight$", k))})
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k))})
    if not blocks:
        raise FailedPrecondition("no synthesis blocks backbone.synthesis.b<R> in the network", reason="CHECKPOINT_MISMATCH")
    R = blocks[-1]
    widths = {r: shape(f"backbone.synthesis.b{r}.conv1.weight")[0] for r in blocks}
    channel_max = max(widths.values())
    below = [widths[r] * r for r in blocks if widths[r] < channel_max]
    channel_base = min(below) if below else channel_max * R
    img_channels = shape(f"backbone.synthesis.b{R}.torgb.weight")[0]
    rk_depth = int(rk.get("triplane_depth", 1) or 1)  # PanoHead's rendering_kwargs
    kind = ov.get("kind") or ("trigrid" if rk_depth > 1 else "triplane")  # shapes alone cannot tell
    depth = int(ov.get("depth", rk_depth if rk_depth > 1 else (3 if kind != "triplane" else 1)))
    if img_channels % (3 * depth):
        raise FailedPrecondition(f"torgb has {img_channels} outputs, not 3 x C x depth {depth}", reason="CHECKPOINT_MISMATCH")
    hidden, channels = shape("decoder.net.0.weight")
    features = shape("decoder.net.2.weight")[0] - 1
    neural, output, sr_channels = sr_settings(state, kw, rk)
    def num(key, default):
        v = rk.get(key, default)
        return float(v) if isinstance(v, (int, float)) else default

    activation = rk.get("decoder_activation", "sigmoid")
    if activation != "sigmoid":
        raise FailedPrecondition(f"decoder_activation {activation!r} is not supported (only EG3D's sigmoid decoder, "
                                 "which the render service's field format also uses)", reason="CHECKPOINT_MISMATCH")
    # the official mapping() multiplies the label by rendering_kwargs.get('c_scale', 0)
    c_scale = 0.0 if rk.get("c_gen_conditioning_zero") else num("c_scale", 0.0 if rk else 1.0)

    values = dict(kind=kind, z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, c_scale=c_scale, mapping_layers=mapping_layers,
                  plane_resolution=R, channels=img_channels // (3 * depth), depth=depth, channel_base=channel_base,
                  channel_max=channel_max, use_noise=any(k.endswith("noise_const") for k in state),
                  decoder_hidden=hidden, decoder_features=features,
                  decoder_lr_multiplier=num("decoder_lr_mul", 1.0), neural_resolution=neural,
                  output_resolution=output, sr_channels=sr_channels, box_warp=num("box_warp", 1.0),
                  ray_start=num("ray_start", 0.0), ray_end=num("ray_end", 0.0),
                  samples_per_ray=int(num("depth_resolution", 48)),
                  importance_samples=int(num("depth_resolution_importance", 48)),
                  plane_axes="eg3d" if kind == "triplane" else "panohead",
                  camera_radius=num("avg_camera_radius", 2.7),
                  camera_target=tuple(rk.get("avg_camera_pivot", (0.0, 0.0, 0.2))))
    if kind == "pyramid_trigrid":
        values["pyramid_levels"] = tuple(ov.get("pyramid_levels", ()))
    values.update(ov)
    try:
        return GeneratorConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise FailedPrecondition(f"cannot build a generator config from the pickle: {e}",
                                 reason="CHECKPOINT_MISMATCH") from None


def convert_state(state: dict[str, torch.Tensor], cfg: GeneratorConfig, where: str) -> TriplaneGenerator:
    """A TriplaneGenerator holding the official tensors (by name; extras ignored and logged)."""
    gen = TriplaneGenerator(cfg)
    ours = gen.state_dict()
    extra = sorted(set(state) - set(ours))
    if extra:
        log.info("ignored tensors of the official network", extra={"count": len(extra), "examples": extra[:8]})
    load_state(gen, {k: v.detach().cpu() for k, v in state.items() if k in ours}, where)
    return gen


def convert_network_pickle(path: str | Path, *, trust: bool, overrides: dict | None = None,
                           report: list[str] | None = None) -> TriplaneGenerator:
    """Load (with trust) and convert an EG3D / PanoHead / 3DPortraitGAN pickle to a TriplaneGenerator;
    `report` (when given) receives one line per part that was not converted."""
    net = _network(load_network_pickle(path, trust=trust))
    if not hasattr(net, "state_dict"):
        raise FailedPrecondition(f"{path}: the network has no state_dict()", reason="CHECKPOINT_MISMATCH")
    state = {k: v for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}
    init_kwargs = getattr(net, "init_kwargs", None)
    init_kwargs = dict(init_kwargs) if isinstance(init_kwargs, dict) else {}
    if isinstance(getattr(net, "neural_rendering_resolution", None), int):  # EG3D keeps it as an attribute
        init_kwargs.setdefault("neural_rendering_resolution", net.neural_rendering_resolution)
    from services.inversion.generators.convert_portraitgan import convert_portraitgan_state, is_portraitgan

    if is_portraitgan(state):
        nrr = getattr(net, "neural_rendering_resolution", None)
        gen, lines = convert_portraitgan_state(state, init_kwargs, overrides, str(path),
                                               nrr if isinstance(nrr, int) else None)
    else:
        cfg = infer_config(state, init_kwargs, overrides)
        gen = convert_state(state, cfg, str(path))
        extra = sorted(set(state) - set(gen.state_dict()))
        lines = [f"ignored official-only tensors ({len(extra)}): {', '.join(extra[:6])}" + (", ..." if len(extra) > 6 else "")] if extra else []
    if report is not None:
        report.extend(lines)
    return gen
