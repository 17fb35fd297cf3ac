"""Convert a 3DPortraitGAN (`3DPortraitGAN_pyramid`, e.g. the released model_512.pkl) network to a
HeadForge generator: kind "pyramid_trigrid", pyramid_style "3dportraitgan" (the architecture is
described in generators/portraitgan.py). convert_pickle.convert_network_pickle dispatches here when
the network's state has 3D-aware blocks (backbone.synthesis.b3d<r>.*) or a pose branch
(pose_branch.*); the trust flag is checked there, before the file is opened.

Settings: z_dim / w_dim from backbone.mapping.fc0.weight; the label width 25 and pose_dim = embed
inputs - 25 (6: the body-pose parameters, fed zeros); plane resolution R = the largest 2D block b<R>
(256), levels 2r for every b3d<r> (8..512); channels x depth from b<R>.torgb.weight rows = 3 * C * D
with D = rendering_kwargs triplane_depth (default 3; C = 12); decoder from decoder.net.{0,2}
(hidden 32, 32 features), decoder_activation from rendering_kwargs ("none" for model_512; "sigmoid"
also accepted); raw_torgb when the network has `torgb.*`; super-resolution as for EG3D (neural
resolution = half the first SR block's noise size: 128 for SuperresolutionHybrid8XDC); rendering from
rendering_kwargs (box_warp 0.7, ray_start 2.385, ray_end 3.12, 48 + 48 samples, c_scale, camera
radius / pivot); focal 6.5104 (the released code's average camera label), a 360-degree "head" crop.
conv_clamp from init_kwargs (the synthesis kwargs), default 256. `overrides` win over all of it.

Tensors copy by name (the official module names are ours: backbone.mapping.*, backbone.synthesis.b<r>.*,
backbone.synthesis.b3d<r>.block.*, decoder.net.*, torgb.*, superresolution.*) except two mapped ones:
  backbone.synthesis.b4.const      (1, 3CD, 4, 4) -> (3CD, 4, 4)
  decoder.net.0.weight             times 1 / (3 * levels): the official sampler averages over levels
                                   and its decoder over planes; ours sums both (plane_reduction
                                   "sum"), and the first decoder layer is linear, so this is exact.
Not converted (listed by name in the report, logged): pose_branch (GPoseBranch), the SMPL deformation
of sample points (apply_def; renderer.* SMPL buffers), the background network bcg_synthesis, the
renderer's triplane_crop, pose conditioning (p = 0 always), and the official 64 -> 128 resize before
super-resolution (HeadForge renders at the SR input resolution directly); any other official-only
tensor is listed as ignored.
"""

from __future__ import annotations

import logging
import re

import torch

from services.common.errors import FailedPrecondition
from services.inversion.generators.checkpoint import load_state
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator

log = logging.getLogger("headforge.inversion.convert")

LABEL_DIM = 25
PORTRAIT_FOCAL = 6.5104  # normalised focal of the released code's average camera label (avg_c)

NOT_PORTED = {
    "pose_branch": "GPoseBranch (z, c -> 6 body-pose parameters); HeadForge conditions the mapping with pose 0",
    "renderer": "the SMPL body model buffers of the renderer's deformation",
    "bcg_synthesis": "background synthesis network (fills 1 - alpha of the feature image); HeadForge "
                     "composites over zero features",
}
ALWAYS_NOT_PORTED = [
    "SMPL deformation: sample points are not deformed by a body pose (apply_def, thickness)",
    "triplane_crop: the official renderer's density cut near the box's side walls is not applied",
    "pose conditioning: the 6 pose inputs of backbone.mapping.embed are always 0",
]


def is_portraitgan(state: dict[str, torch.Tensor]) -> bool:
    return any(re.match(r"backbone\.synthesis\.b3d\d+\.", k) or k.startswith("pose_branch.") for k in state)


def _fail(message: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="CHECKPOINT_MISMATCH")


def infer_portraitgan_config(state: dict[str, torch.Tensor], init_kwargs: dict | None = None,
                             overrides: dict | None = None) -> GeneratorConfig:
    """A GeneratorConfig from a 3DPortraitGAN state + init_kwargs + overrides (module docstring)."""
    from services.inversion.generators.convert_pickle import shape_reader, sr_settings

    kw = dict(init_kwargs or {})
    rk = dict(kw.get("rendering_kwargs") or {})
    ov = dict(overrides or {})
    shape = shape_reader(state, "a 3DPortraitGAN")

    def num(key, default):
        v = rk.get(key, default)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    w_dim, fc0_in = shape("backbone.mapping.fc0.weight")
    c_in = shape("backbone.mapping.embed.weight")[1]
    if c_in < LABEL_DIM:
        raise _fail(f"backbone.mapping.embed takes {c_in} inputs; 3DPortraitGAN's take the 25-float label + pose")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k))})
    b3d = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.synthesis\.b3d(\d+)\.", k))})
    if not blocks or b3d != blocks:
        raise _fail(f"3DPortraitGAN has a 3D-aware block b3d<r> per synthesis block b<r>; found b{blocks}, b3d{b3d}")
    R = blocks[-1]
    img_channels = shape(f"backbone.synthesis.b{R}.torgb.weight")[0]
    depth = int(ov.get("depth", rk.get("triplane_depth", 3) or 3))
    if img_channels % (3 * depth):
        raise _fail(f"torgb has {img_channels} outputs, not 3 x C x depth {depth}")
    plane = shape(f"backbone.synthesis.b3d{R}.block.torgb.weight")[0]
    if plane * 3 != img_channels:
        raise _fail(f"b3d{R}.block.torgb has {plane} outputs; expected a third of {img_channels}")
    hidden, channels = shape("decoder.net.0.weight")
    features = shape("decoder.net.2.weight")[0] - 1
    activation = rk.get("decoder_activation", "none")
    if activation not in ("none", "sigmoid"):
        raise _fail(f"decoder_activation {activation!r} is not supported (3DPortraitGAN's 'none', or 'sigmoid')")
    neural, output, sr_channels = sr_settings(state, kw, rk, prefer_sr_noise=True)
    clamp = kw.get("conv_clamp", 256)
    values = dict(kind="pyramid_trigrid", pyramid_style="3dportraitgan", z_dim=fc0_in - w_dim, w_dim=w_dim,
                  c_dim=LABEL_DIM, pose_dim=c_in - LABEL_DIM,
                  c_scale=0.0 if rk.get("c_gen_conditioning_zero") else num("c_scale", 0.0 if rk else 1.0),
                  mapping_layers=len({m.group(1) for k in state
                                      if (m := re.match(r"backbone\.mapping\.fc(\d+)\.weight$", k))}),
                  plane_resolution=R, channels=img_channels // (3 * depth), depth=depth,
                  pyramid_levels=tuple(2 * r for r in blocks),
                  use_noise=any(k.endswith("noise_const") for k in state if k.startswith("backbone.")),
                  conv_clamp=float(clamp) if isinstance(clamp, (int, float)) else None,
                  decoder_hidden=hidden, decoder_features=features, decoder_activation=activation,
                  decoder_lr_multiplier=num("decoder_lr_mul", 1.0), raw_torgb="torgb.weight" in state,
                  neural_resolution=neural, output_resolution=output, sr_channels=sr_channels,
                  box_warp=num("box_warp", 0.7), ray_start=num("ray_start", 0.0), ray_end=num("ray_end", 0.0),
                  samples_per_ray=int(num("depth_resolution", 48)),
                  importance_samples=int(num("depth_resolution_importance", 48)),
                  plane_axes="panohead", plane_reduction="sum", crop_style="head",
                  azimuth_min=-180.0, azimuth_max=180.0, focal=PORTRAIT_FOCAL,
                  camera_radius=num("avg_camera_radius", 2.7),
                  camera_target=tuple(rk.get("avg_camera_pivot", (0.0, 0.0, 0.0))))
    if channels != values["channels"]:
        raise _fail(f"decoder.net.0 takes {channels} features; the tri-grid has {values['channels']} channels")
    values.update(ov)
    try:
        return GeneratorConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise _fail(f"cannot build a generator config from the 3DPortraitGAN network: {e}") from None


def map_state(state: dict[str, torch.Tensor], cfg: GeneratorConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our tensors by name, what was not converted) from the official state."""
    ours = TriplaneGenerator(cfg).state_dict()
    tensors = {k: state[k].detach().cpu().float() for k in ours if k in state}
    const = "backbone.synthesis.b4.const"
    if const in tensors and tensors[const].ndim == 4:
        if tensors[const].shape[0] != 1:
            raise _fail(f"{const} is {list(tensors[const].shape)}; expected (1, channels, 4, 4)")
        tensors[const] = tensors[const][0]
    if "decoder.net.0.weight" in tensors:
        tensors["decoder.net.0.weight"] = tensors["decoder.net.0.weight"] / (3 * len(cfg.pyramid_levels))
    extra = sorted(set(state) - set(ours))
    report = []
    for prefix, why in NOT_PORTED.items():
        names = [k for k in extra if k.startswith(prefix + ".")]
        if names:
            report.append(f"{prefix}: {why} ({len(names)} tensors)")
    report += ALWAYS_NOT_PORTED
    rest = [k for k in extra if k.split(".", 1)[0] not in NOT_PORTED]
    if rest:
        report.append(f"ignored official-only tensors ({len(rest)}): {', '.join(rest[:6])}"
                      + (", ..." if len(rest) > 6 else ""))
    return tensors, report


def convert_portraitgan_state(state: dict[str, torch.Tensor], init_kwargs: dict | None, overrides: dict | None,
                              where: str, network_neural_resolution: int | None = None
                              ) -> tuple[TriplaneGenerator, list[str]]:
    """(the converted generator, the report of what was not converted)."""
    cfg = infer_portraitgan_config(state, init_kwargs, overrides)
    tensors, report = map_state(state, cfg)
    if network_neural_resolution and network_neural_resolution != cfg.neural_resolution:
        report.append(f"neural rendering resolution: the network rendered at {network_neural_resolution} and resized "
                      f"to {cfg.neural_resolution} for super-resolution; HeadForge renders at {cfg.neural_resolution}")
    gen = TriplaneGenerator(cfg)
    load_state(gen, tensors, where)
    for line in report:
        log.info("3DPortraitGAN part not converted", extra={"part": line, "path": where})
    return gen, report
