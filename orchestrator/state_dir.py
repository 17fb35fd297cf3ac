"""Where HeadForge keeps per-user state on this machine: the local cluster (cluster.json, its logs, job
store and artifacts) and the default job store of `headforge serve jobs`. Never the checkout or the
current directory, so `cluster up` from any directory finds the one cluster, and nothing lands in a clone.

    $HEADFORGE_HOME                    when set
    $XDG_STATE_HOME/headforge          else, when XDG_STATE_HOME is set
    ~/.headforge                       else
"""

from __future__ import annotations

import os
from pathlib import Path


def headforge_home() -> Path:
    """The per-user state folder (absolute; not created here)."""
    if os.environ.get("HEADFORGE_HOME"):
        return Path(os.environ["HEADFORGE_HOME"]).expanduser().resolve()
    if os.environ.get("XDG_STATE_HOME"):
        return (Path(os.environ["XDG_STATE_HOME"]).expanduser() / "headforge").resolve()
    return (Path.home() / ".headforge").resolve()


def cluster_dir() -> Path:
    """The local cluster's state, store, artifacts and logs (`headforge cluster up`)."""
    return headforge_home() / "cluster"


def jobs_dir() -> Path:
    """The default job store and artifact root of a `headforge serve jobs` given no --store/--artifacts."""
    return headforge_home() / "jobs"
