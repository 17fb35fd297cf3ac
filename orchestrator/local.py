"""`headforge generate`: run one recipe to completion in this process (no Ray, no job server), with a
progress bar, and write the artifacts to an output folder. The stages are the same code the cluster
runtime runs; services are in-process unless endpoints say otherwise.

Artifacts are written to a work folder first and moved into OUT only when the job succeeds, so a failed
run never leaves files that look complete."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import LoadedRecipe
from orchestrator.runtime.endpoints import Endpoints, ServiceClients, build_clients
from orchestrator.runtime.execute import execute


@dataclass
class LocalResult:
    state: str
    out_dir: Path | None
    error_message: str = ""
    error_reason: str = ""
    error_code: str = ""                  # the gRPC status name of a failure
    stage_seconds: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


def run_local(loaded: LoadedRecipe, images: list[bytes], prompt: str, out_dir: Path, *,
              endpoints: Endpoints | None = None, face_config=None, clients: ServiceClients | None = None,
              image_names: list[str] | None = None, show_progress: bool = True,
              on_event: Callable[[dict], None] | None = None) -> LocalResult:
    """Run the recipe on images (encoded photos) and prompt; artifacts land in out_dir only on success.
    Services: `clients` when given (the caller keeps and closes them), else built from endpoints with
    face_config, the in-process face service's FaceConfig (build_clients). image_names: where the photos
    came from (report.json's input.source). on_event: every execute() event (runtime/execute.py), as it
    happens."""
    own_clients = clients is None
    if own_clients:
        clients = build_clients(endpoints or Endpoints(), face_config=face_config)
    job_id = "local-" + secrets.token_hex(4)
    stage_seconds: dict[str, float] = {}
    started: dict[str, float] = {}
    verdict: dict = {}
    with tempfile.TemporaryDirectory(prefix="headforge-") as work:
        artifacts = ArtifactStore(Path(work).as_uri())
        with Progress(TextColumn("{task.description:<12}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=not show_progress) as bar:
            tasks = {s.name: bar.add_task(s.name, total=1, info="") for s in loaded.recipe.stages}

            def emit(event: dict) -> None:
                if on_event is not None:
                    on_event(event)
                kind = event["kind"]
                if kind == "stage":
                    if event["state"] == "running":
                        started[event["stage"]] = time.perf_counter()
                    elif event["stage"] in started:
                        stage_seconds[event["stage"]] = round(time.perf_counter() - started[event["stage"]], 2)
                        if event["state"] == "succeeded":
                            bar.update(tasks[event["stage"]], completed=bar.tasks[tasks[event["stage"]]].total)
                elif kind == "progress":
                    p = event["progress"]
                    info = " ".join(f"{k}={v:.4g}" for k, v in p.metrics.items())
                    bar.update(tasks[p.stage], completed=p.step, total=max(p.total, 1), info=info)
                elif kind == "done":
                    verdict.update(event)

            try:
                execute(job_id, loaded.yaml, images, prompt, clients, artifacts, emit, lambda: False,
                        image_names=image_names)
            finally:
                if own_clients:
                    clients.close()
        if verdict.get("state") != "succeeded":
            return LocalResult(verdict.get("state", "failed"), None, verdict.get("error_message", ""),
                               verdict.get("error_reason", ""), verdict.get("error_code", ""), stage_seconds)
        job_dir = Path(work) / job_id
        shutil.rmtree(job_dir / "checkpoints", ignore_errors=True)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = []
        for path in sorted(p for p in job_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(job_dir)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), out_dir / rel)
            names.append(str(rel))
        return LocalResult("succeeded", out_dir, stage_seconds=stage_seconds, artifacts=names)
