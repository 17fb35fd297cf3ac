"""The stage kinds a recipe can name: each one's run function and parameter class, in one registry.

Adding a stage kind is one module (its `run(ctx, params)`; its params class in orchestrator/stages/params.py)
plus one registration line below. The run functions are "module:function" paths imported on first use, so
validating a recipe (the jobs service does it on submit) loads no stage code."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from orchestrator.stages import params as p
from services.core.registry import Registry


@dataclass(frozen=True)
class StageSpec:
    """A stage kind: `run_path` ("module:function", the function run(ctx, params)), its params class, and
    the services it calls (report.json lists those services' models)."""

    run_path: str
    params: type[BaseModel]
    services: tuple[str, ...] = ()

    def run(self, ctx: Any, params: BaseModel) -> None:
        module, _, name = self.run_path.partition(":")
        getattr(importlib.import_module(module), name)(ctx, params)


STAGES: Registry[StageSpec] = Registry("stage kind")
STAGES.register("preprocess", StageSpec("orchestrator.stages.preprocess:run", p.PreprocessParams, ("face",)))
STAGES.register("init", StageSpec("orchestrator.stages.scene:run_init", p.InitParams, ("render",)))
STAGES.register("optimise", StageSpec("orchestrator.stages.optimise:run", p.OptimiseParams,
                                      ("render", "guidance", "face")))
STAGES.register("convert", StageSpec("orchestrator.stages.scene:run_convert", p.ConvertParams, ("render",)))
STAGES.register("export", StageSpec("orchestrator.stages.scene:run_export", p.ExportParams, ("render",)))
STAGES.register("turntable", StageSpec("orchestrator.stages.turntable:run", p.TurntableParams, ("render",)))
STAGES.register("evaluate", StageSpec("orchestrator.stages.evaluate:run", p.EvaluateParams, ("render", "face")))
STAGES.register("template_fit", StageSpec("orchestrator.stages.template_fit:run", p.TemplateFitParams, ("render",)))
STAGES.register("template_texture", StageSpec("orchestrator.stages.template_texture:run", p.TemplateTextureParams,
                                              ("render",)))
STAGES.register("generate", StageSpec("orchestrator.stages.generate:run", p.GenerateParams, ("guidance", "face")))
STAGES.register("texture_inpaint", StageSpec("orchestrator.stages.texture_inpaint:run", p.TextureInpaintParams,
                                             ("render", "guidance")))
STAGES.register("refine", StageSpec("orchestrator.stages.refine:run", p.RefineParams, ("render", "guidance")))
STAGES.register("invert", StageSpec("orchestrator.stages.invert:run", p.InvertParams, ("inversion", "render")))
STAGES.register("ground_truth_check", StageSpec("orchestrator.stages.ground_truth:run", p.GroundTruthCheckParams,
                                                ("render",)))
STAGES.register("align_landmarks", StageSpec("orchestrator.stages.align_landmarks:run", p.AlignLandmarksParams,
                                             ("render",)))
STAGES.register("render_targets", StageSpec("orchestrator.stages.render_targets:run", p.RenderTargetsParams,
                                            ("render",)))
STAGES.register("caption", StageSpec("orchestrator.stages.caption:run", p.CaptionParams, ("guidance",)))
STAGES.register("geometry_targets", StageSpec("orchestrator.stages.geometry_targets:run", p.GeometryTargetsParams,
                                              ("guidance",)))
STAGES.register("ground_truth_mesh", StageSpec("orchestrator.stages.ground_truth:run_mesh", p.GroundTruthMeshParams,
                                               ()))
STAGES.register("ground_truth_targets", StageSpec("orchestrator.stages.ground_truth:run_targets",
                                                  p.GroundTruthTargetsParams, ()))
