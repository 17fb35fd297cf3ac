"""Recipe YAML: a named list of stages with parameters, validated on load (errors name the YAML path).

    name: sds_gaussians
    description: ...
    output: gaussians
    inputs: {min_images: 1, max_images: 1, prompt_required: false}
    seed: 0
    checkpoint_every: 50
    stages:
      - {name: preprocess, kind: preprocess}
      - {name: optimise, kind: optimise, params: {iterations: 300, terms: [...]}}

Values that change during optimisation are schedules (orchestrator/stages/schedules.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inputs(_Strict):
    min_images: int = Field(1, ge=0, le=5)
    max_images: int = Field(1, ge=0, le=5)
    prompt_required: bool = False

    @model_validator(mode="after")
    def _range(self):
        if self.min_images > self.max_images:
            raise ValueError(f"min_images {self.min_images} > max_images {self.max_images}")
        return self


class StageSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    output: str = "mesh"
    inputs: Inputs = Field(default_factory=Inputs)
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    stages: list[StageSpec] = Field(min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list[StageSpec]) -> list[StageSpec]:
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique, repeated: {dupes}")
        return stages

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


