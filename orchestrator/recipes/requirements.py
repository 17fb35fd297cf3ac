"""What a recipe needs from the services, checked when a job starts, before its first stage: every guidance
backbone a stage names (with the capability that stage calls: Generate, Distill, Denoise, Inpaint), every
inversion generator (invert, an init or ground-truth GAN sample) and LPIPS weights when an inversion's loss
is LPIPS alone. A job that cannot run fails at once naming each thing to configure (FailedPrecondition
MODELS_MISSING), not hours later in its fifth stage."""

from __future__ import annotations

from orchestrator.stages.params import (GenerateParams, GroundTruthCheckParams, InitParams, InvertParams,
                                        RefineParams, TextureInpaintParams)
from services.common.errors import FailedPrecondition


def _guidance_needs(loaded) -> list[tuple[str, str, str]]:
    """(stage, backbone name or "" for the default, capability) per guidance use."""
    needs = []
    for name, p in loaded.params.items():
        if isinstance(p, GenerateParams):
            needs.append((name, p.backbone, "generate"))
        elif isinstance(p, RefineParams):
            needs.append((name, p.backbone, "denoise"))
        elif isinstance(p, TextureInpaintParams):
            needs.append((name, p.backbone, "inpaint"))
        for t in getattr(p, "terms", ()):
            if t.kind == "sds":
                needs.append((name, t.backbone, "distill"))
    return needs


def _inversion_needs(loaded) -> list[tuple[str, str, bool]]:
    """(stage, generator name or "" for the default, whether LPIPS weights are needed) per inversion use."""
    needs = []
    for name, p in loaded.params.items():
        if isinstance(p, InvertParams):
            needs.append((name, p.generator, p.l2_weight == 0 and p.lpips_weight > 0))
        elif isinstance(p, InitParams) and p.start == "gan_sample":
            needs.append((name, p.gan.generator, False))
        elif isinstance(p, GroundTruthCheckParams) and p.truth == "gan_sample":
            needs.append((name, p.gan.generator, False))
    return needs


def missing(loaded, clients) -> list[str]:
    """One line per thing the services lack for this recipe (empty: it can run)."""
    problems: list[str] = []
    guidance = _guidance_needs(loaded)
    if guidance:
        if clients.guidance is None:
            problems.append(f"stages {sorted({s for s, _, _ in guidance})} need the guidance service")
        else:
            infos = clients.guidance.describe().backbones
            by_name = {info.name: info for info, _ in infos}
            default = next((info for info, is_default in infos if is_default), None)
            for stage, backbone, capability in guidance:
                info = by_name.get(backbone) if backbone else default
                if info is None:
                    problems.append(f"{stage}: guidance backbone {backbone!r} is not configured (configured: "
                                    f"{sorted(by_name)}); add it to the guidance service's model repository")
                elif capability != "distill" and not getattr(info, capability):
                    problems.append(f"{stage}: guidance backbone {info.name!r} cannot {capability}")
    inversion = _inversion_needs(loaded)
    if inversion:
        if clients.inversion is None:
            problems.append(f"stages {sorted({s for s, _, _ in inversion})} need the inversion service")
        else:
            desc = clients.inversion.describe()
            by_name = {g.name: g for g in desc.generators}
            default = next((g for g in desc.generators if g.is_default), None)
            for stage, generator, lpips in inversion:
                info = by_name.get(generator) if generator else default
                if info is None:
                    problems.append(f"{stage}: inversion generator {generator!r} is not configured (configured: "
                                    f"{sorted(by_name)}); convert its checkpoint with `headforge models convert-gan`")
                elif not info.available:
                    problems.append(f"{stage}: inversion generator {info.name!r} is unavailable "
                                    f"({info.unavailable_reason})")
                if lpips and desc.lpips in ("", "none"):
                    problems.append(f"{stage}: the inversion loss is LPIPS alone (l2_weight 0) but the inversion "
                                    f"service has no LPIPS weights ({desc.lpips_reason or 'none configured'})")
    return problems


def check(loaded, clients) -> None:
    """FailedPrecondition MODELS_MISSING listing missing() when it is not empty."""
    problems = missing(loaded, clients)
    if problems:
        raise FailedPrecondition("the services lack what this recipe needs: " + "; ".join(problems),
                                 reason="MODELS_MISSING", metadata={"missing": str(len(problems))})
