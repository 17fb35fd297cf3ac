"""Backbones by their `backend` name in the guidance config. Each entry is a loader
`(entry: dict | its config model, base_dir: Path, device) -> Backbone` that validates the entry with its
backend's config class; entries are lazy, so a server imports only the backends it uses (no tritonclient
without a Triton entry). Adding a backend is one module plus one line here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from services.core.registry import Registry
from services.guidance.backbones.base import Backbone, ModelFilesError

BACKENDS: Registry[Callable[..., Backbone]] = Registry("guidance backend")
BACKENDS.register("analytic", "services.guidance.backbones.analytic:load_analytic_backbone")
BACKENDS.register("diffusers", "services.guidance.backbones.diffusers_loader:load_diffusers_backbone")
BACKENDS.register("triton", "services.guidance.backbones.triton_backbone:load_triton_backbone")
BACKENDS.register("oracle", "services.guidance.backbones.oracle:load_oracle_backbone")  # a test prior


def load_backbone(entry: dict[str, Any], base_dir: Path, device) -> Backbone:
    """One backbone from its config mapping; ModelFilesError names the bad field (an unknown `backend`
    included) or the missing file."""
    backend = entry.get("backend", "")
    if backend not in BACKENDS:
        raise ModelFilesError(f"backbone {entry.get('name')!r}: unknown backend {backend!r} (field `backend`); "
                              f"one of {BACKENDS.names()}")
    try:
        return BACKENDS.get(backend)(entry, base_dir, device)
    except ValidationError as e:
        raise ModelFilesError(f"backbone {entry.get('name')!r}: {e}") from None
