"""Backbones by their `backend` name in the guidance config: each entry's mapping is validated by the
backend's config class and loaded by its loader. Imports are lazy so a server loads only what it uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.guidance.backbones.base import Backbone, ModelFilesError


def _analytic(entry: dict, base_dir: Path, device) -> Backbone:
    from services.guidance.backbones.analytic import AnalyticBackbone, AnalyticBackboneConfig

    return AnalyticBackbone(AnalyticBackboneConfig.model_validate(entry), base_dir, device)


def _diffusers(entry: dict, base_dir: Path, device) -> Backbone:
    from services.guidance.backbones.diffusers_backbone import DiffusersBackboneConfig, load_diffusers_backbone

    return load_diffusers_backbone(DiffusersBackboneConfig.model_validate(entry), base_dir, device)


def _triton(entry: dict, base_dir: Path, device) -> Backbone:
    from services.guidance.backbones.triton_backbone import TritonBackboneConfig, load_triton_backbone

    return load_triton_backbone(TritonBackboneConfig.model_validate(entry), base_dir, device)


LOADERS = {"analytic": _analytic, "diffusers": _diffusers, "triton": _triton}


def load_backbone(entry: dict[str, Any], base_dir: Path, device) -> Backbone:
    """One backbone from its config mapping; ModelFilesError names the bad field or missing file."""
    backend = entry.get("backend", "")
    if backend not in LOADERS:
        raise ModelFilesError(f"backbone {entry.get('name')!r}: unknown backend {backend!r}; one of {sorted(LOADERS)}")
    try:
        return LOADERS[backend](entry, base_dir, device)
    except ValidationError as e:
        raise ModelFilesError(f"backbone {entry.get('name')!r}: {e}") from None
