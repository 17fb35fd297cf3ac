"""`headforge view OUT_DIR|JOB_ID`: the result on a local web page (orchestrator/viewer): the 3D asset with
orbit controls, the report's warnings and figures, the contact sheet and turntable."""

from __future__ import annotations

import re
import sys
import webbrowser
from pathlib import Path

from services.common.errors import NotFound

JOB_ID = re.compile(r"[0-9a-f]{32}")   # what the job store hands out (secrets.token_hex(16))


def add_parsers(sub) -> None:
    """`view`, on the top-level subparsers `sub`."""
    from orchestrator.cli.jobs import _client_flags

    p = sub.add_parser("view", help="a result on a local web page (3D asset, report, images)")
    p.add_argument("source", metavar="OUT_DIR|JOB_ID",
                   help="a folder written by `headforge generate`/`fetch`, or a job id on the jobs service")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--cache-dir", default=None,
                   help="where a job's artifacts are fetched to (default $XDG_CACHE_HOME/headforge/view)")
    _client_flags(p)
    p.set_defaults(func=cmd_view)


def _result_folder(args) -> tuple[Path, str]:
    """(the folder to show, the page's title) for args.source."""
    folder = Path(args.source)
    if folder.is_dir():
        return folder, folder.resolve().name
    if not JOB_ID.fullmatch(args.source):
        raise NotFound(f"{args.source}: neither a folder nor a job id (32 hex digits)", reason="NO_RESULT_FOLDER")
    from orchestrator.cli.jobs import _jobs_client
    from orchestrator.viewer.job import default_cache_root, fetch_job

    with _jobs_client(args) as client:
        folder, job = fetch_job(client, args.source, Path(args.cache_dir) if args.cache_dir else default_cache_root())
    if job.state != "succeeded":
        print(f"job {job.id} is {job.state.upper()}: showing the artifacts it has so far", file=sys.stderr)
    return folder, f"job {job.id}" + (f" ({job.display_name})" if job.display_name else "")


def cmd_view(args) -> int:
    from orchestrator.cli.honesty import NOT_A_RESULT_BANNER
    from orchestrator.viewer.server import ViewerServer

    folder, title = _result_folder(args)
    server = ViewerServer(folder, banner=NOT_A_RESULT_BANNER, port=args.port, title=title)
    print(f"viewing {folder} at {server.url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
