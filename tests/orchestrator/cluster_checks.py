"""What the fault tests check after a job: render scenes still open and Ray subject actors still alive."""

from __future__ import annotations

import time
from typing import Callable

from tests.integration.test_server_runtime import sample, scrape


def open_scenes(cluster: dict) -> float:
    """Scenes open in the render process (its headforge_render_scenes gauge on cluster's metrics port)."""
    return sample(scrape(cluster["render_metrics_port"]), "headforge_render_scenes")


def alive_subject_actors() -> int:
    """SubjectActors the connected Ray's GCS lists as ALIVE. ray.util.state needs the dashboard, which the
    runtime does not start, so this reads the GCS actor table (ray._private.state, Ray 2.60)."""
    from ray._private import state

    return sum(a["State"] == "ALIVE" and a["ActorClassName"].endswith("SubjectActor")
               for a in state.actors().values())


def settle(predicate: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    """Whether predicate() holds within timeout_s (cleanup after a job is asynchronous: actor kill, scene
    close)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True
