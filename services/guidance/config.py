"""Guidance service configuration: a YAML model repository (which backbones to load, from where) plus the
batching, cache and size limits. `headforge models make-tiny DIR` writes a complete example at
DIR/guidance.yaml; see the README for pointing it at real weights.

    backbones:
      - {name: sd15, backend: diffusers, path: /models/stable-diffusion-v1-5, default: true, ...}
      - {name: prior, backend: analytic}
      - {name: oracle, backend: oracle}   # a TEST prior: the procedural head at each request camera
    batching: {max_batch_images: 16, max_queue_delay_ms: 5, max_queue_depth: 64}
    captioners:                         # optional: the Caption RPC (services/guidance/captioners.py)
      - {name: blip2, kind: blip2, path: /models/blip2-opt-2.7b, default: true}
      - {name: blip, kind: blip, path: /models/blip-image-captioning-large}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.guidance.backbones.base import ModelFilesError


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_images: int = Field(16, ge=1, le=256)
    max_queue_delay_ms: float = Field(5.0, ge=0, le=10_000)
    max_queue_depth: int = Field(64, ge=1)


class CaptionerConfig(BaseModel):
    """One image-captioning model: `kind` picks its loader (services.guidance.captioners.KINDS); `path` is a
    `from_pretrained` folder (relative paths resolve against base_dir); `default` marks the one Caption uses
    when a request names none (the first when none is marked). Whether its weights are random is read from
    the folder's random-weights marker (services.core.models), as for backbones."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["blip2", "blip"]
    path: str = Field(min_length=1)
    default: bool = False


class GuidanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # one mapping per backbone; `backend` picks its loader (services.guidance.backbones.registry)
    backbones: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "analytic", "backend": "analytic"}])
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    cache_max_entries: int = Field(4096, ge=1)
    cache_ttl_s: float = Field(3600.0, gt=0)
    max_image_pixels: int = Field(2048 * 2048, ge=256)
    max_message_bytes: int = 64 * 1024 * 1024
    device: str | None = None            # torch device; None = cuda when available, else cpu
    base_dir: str = "."                  # relative model paths resolve against it (the YAML file's folder)
    captioners: list[CaptionerConfig] = Field(default_factory=list)   # none = Caption answers NO_CAPTIONER

    @field_validator("backbones")
    @classmethod
    def _named(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("at least one backbone is needed")
        names = [b.get("name") for b in v]
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"every backbone needs a unique non-empty name, got {names}")
        return v

    @field_validator("captioners")
    @classmethod
    def _captioners(cls, v: list[CaptionerConfig]) -> list[CaptionerConfig]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"every captioner needs a unique name, got {names}")
        if sum(c.default for c in v) > 1:
            raise ValueError(f"at most one captioner can be the default, got {[c.name for c in v if c.default]}")
        return v


def load_config(path: str | Path, **overrides) -> GuidanceConfig:
    """Read a guidance YAML; paths inside resolve against its folder. ModelFilesError on a missing file or
    a bad field (the message names the field)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFilesError(f"guidance config {path} not found; expected a YAML file with a `backbones` list "
                              "(write an example with `headforge models make-tiny DIR`)")
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("base_dir", str(path.resolve().parent))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GuidanceConfig.model_validate(data)
    except ValidationError as e:
        raise ModelFilesError(f"guidance config {path}: {e}") from None
