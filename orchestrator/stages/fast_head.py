"""fast_head: the embedded default recipe (orchestrator/fast.py) as a stage, so it runs as a job on the
cluster like any recipe. Its files become the job's artifacts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import FastHeadParams
from services.common.errors import InvalidArgument


def run(ctx: StageContext, params: FastHeadParams) -> None:
    from orchestrator.fast import run_fast

    if not ctx.images:
        raise InvalidArgument("images", "the fast recipe needs a photo")
    with tempfile.TemporaryDirectory(prefix="headforge-fast-") as tmp:
        out = Path(tmp) / "head"

        def progress(stage: str, fraction: float) -> None:
            ctx.check_cancelled()
            ctx.progress(round(fraction * 100), 100, stage)

        run_fast(ctx.images[0], out, face_client=ctx.clients.face, render_client=ctx.clients.render,
                 face_index=params.face_index, progress=progress, texture_size=params.texture_size,
                 fit_steps=params.fit_steps, turntable_frames=params.turntable_frames,
                 clip_model=params.clip_model)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            ctx.artifact(str(path.relative_to(out)), path.read_bytes())
