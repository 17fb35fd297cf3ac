"""turntable: turntable.gif of the job's scene (orchestrator.evaluation.turntable: evenly spaced azimuths
from frontal). The evaluate stage makes one too unless its turntable_frames is 0."""

from __future__ import annotations

from orchestrator.evaluation import encode_gif, turntable
from orchestrator.stages.context import StageContext
from orchestrator.stages.params import TurntableParams
from orchestrator.stages.scene import ensure_scene

ARTIFACT = "turntable.gif"


def write_turntable(ctx: StageContext, params: TurntableParams) -> None:
    """Render params.frames views of the job's scene and write turntable.gif."""
    background = None if params.background is None else tuple(params.background)

    def progress(fraction: float) -> None:
        ctx.check_cancelled()
        ctx.progress(round(fraction * params.frames), params.frames, "turntable")

    frames = turntable(ctx.clients.render, ensure_scene(ctx), params.frames, params.size,
                       elevation=params.elevation, background=background, progress=progress)
    ctx.artifact(ARTIFACT, encode_gif(frames))


def run(ctx: StageContext, params: TurntableParams) -> None:
    write_turntable(ctx, params)
