"""The viewer's HTTP server, loopback only: the page (static/), the npm assets (node_modules/, from
`make install`: no CDN at run time), the manifest of one result folder and that folder's files.

    GET /                     static/index.html
    GET /static/NAME          static/NAME
    GET /vendor/PKG/PATH      node_modules of the vendored packages (VENDOR)
    GET /manifest.json        result.manifest(folder)
    GET /files/NAME           a file the manifest lists (nothing else of the folder, nothing outside it)
"""

from __future__ import annotations

import json
import mimetypes
import threading
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from orchestrator.viewer.result import REPORT, manifest
from services.common.errors import FailedPrecondition, HeadForgeError, InvalidArgument

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
NODE_MODULES = HERE / "node_modules"
# URL prefix -> folder under node_modules, each package pinned in package.json / package-lock.json
VENDOR = {"three": NODE_MODULES / "three", "gaussian-splats-3d": NODE_MODULES / "@mkkellogg" / "gaussian-splats-3d"}
LOOPBACK = "127.0.0.1"
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".json": "application/json", ".glb": "model/gltf-binary", ".ply": "application/octet-stream",
         ".wasm": "application/wasm", ".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg", ".webp": "image/webp"}


def check_assets() -> None:
    """FailedPrecondition naming the fix when the npm packages are not installed."""
    missing = [name for name, folder in VENDOR.items() if not (folder / "package.json").is_file()]
    if missing:
        raise FailedPrecondition(f"the viewer's front-end packages ({', '.join(missing)}) are not installed in "
                                 f"{NODE_MODULES}: run `make install` (npm ci in orchestrator/viewer)",
                                 reason="VIEWER_ASSETS_MISSING")


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel when it is a file inside root (no "..", no symlink out), else None."""
    path = (root / rel).resolve()
    return path if path.is_file() and path.is_relative_to(root.resolve()) else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "headforge-view"

    def __init__(self, *args, folder: Path, title: str, banner: str, **kw):
        self.folder, self.title, self.banner = folder, title, banner
        super().__init__(*args, **kw)

    def log_message(self, format, *args):   # quiet: the command prints its URL, not a line per request
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html", body)
        if path == "/manifest.json":
            try:
                listed = manifest(self.folder, banner=self.banner, title=self.title)
            except HeadForgeError as e:   # the folder was emptied or removed since the command started
                return self._error(HTTPStatus.CONFLICT, e.message)
            return self._bytes(json.dumps(listed).encode(), "application/json", body)
        prefix, _, rest = path.lstrip("/").partition("/")
        target = None
        if prefix == "static":
            target = _inside(STATIC, rest)
        elif prefix == "vendor":
            package, _, rel = rest.partition("/")
            target = _inside(VENDOR[package], rel) if package in VENDOR else None
        elif prefix == "files" and rest in self._listed_files():
            target = _inside(self.folder, rest)
        if target is None:
            return self._error(HTTPStatus.NOT_FOUND, f"{path}: not here")
        self._file(target, body)

    def _listed_files(self) -> set[str]:
        """The names of the folder's files that the page may fetch: the manifest's assets and images, the report."""
        try:
            listed = manifest(self.folder, banner=self.banner, title=self.title)
        except HeadForgeError:
            return set()
        return {a["name"] for a in listed["assets"]} | set(listed["images"]) | {REPORT}

    def _file(self, path: Path, body: bool) -> None:
        kind = TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._bytes(path.read_bytes(), kind, body)

    def _bytes(self, data: bytes, kind: str, body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")   # a re-generated folder shows at the next reload
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        data = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ViewerServer:
    """The viewer of `folder` on http://127.0.0.1:port/ (port 0: any free one); banner: the line the page
    shows above all when the folder is not a result (result.manifest). start() serves from a thread,
    serve_forever() from the caller's; stop() closes the socket."""

    def __init__(self, folder: Path, *, banner: str, port: int = 0, title: str = ""):
        check_assets()
        manifest(folder, banner=banner, title=title)   # NotFound / FailedPrecondition now, not as a blank page
        if not 0 <= port <= 65535:
            raise InvalidArgument("--port", f"{port} is not a port: 0..65535 (0 = any free one)", reason="BAD_PORT")
        handler = partial(_Handler, folder=Path(folder), title=title, banner=banner)
        try:
            self.httpd = ThreadingHTTPServer((LOOPBACK, port), handler)
        except OSError as e:
            raise FailedPrecondition(f"cannot listen on {LOOPBACK}:{port} ({e.strerror}): pass another --port, "
                                     "or --port 0 for any free one", reason="PORT_BUSY") from None
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}/"

    def start(self) -> "ViewerServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="headforge-view")
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
