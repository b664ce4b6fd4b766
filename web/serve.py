"""``make web``: serve the page (``web/``), LiteRT.js (``web/node_modules``) and one bundle on a local port.

Served with ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``
so the page is cross-origin isolated and LiteRT.js can use its threaded WebAssembly. Routes: ``/`` the
page, ``/litertjs/`` and ``/wasm-utils/`` the npm packages, ``/bundle/`` the bundle (``dist/<model>``),
``/extra/`` the model's artifact folder (files web-check asks about that a bundle does not ship).
Only files under those folders are served; nothing is written.
"""

from __future__ import annotations

import errno
import http.server
import logging
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from videoseal_litert.core.errors import BrowserSetupError, PortInUseError

log = logging.getLogger(__name__)
WEB = Path(__file__).resolve().parent
NODE_MODULES = WEB / "node_modules"
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".tflite": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".jpg": "image/jpeg",
    ".map": "application/json",
    ".md": "text/plain; charset=utf-8",
}


def require_litertjs() -> Path:
    core = NODE_MODULES / "@litertjs" / "core"
    if not (core / "dist" / "index.js").is_file():
        raise BrowserSetupError(
            f"LiteRT.js is not installed in {NODE_MODULES}: run `make web-setup` (npm ci in web/; node 20 and npm needed)"
        )
    return core


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Path] = {}

    def log_message(self, fmt: str, *args: object) -> None:  # the terminal shows our summary, not a line per file
        log.debug(fmt, *args)

    def _resolve(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return WEB / "index.html"
        for prefix, root in self.routes.items():
            if path.startswith(prefix):
                target = (root / path[len(prefix) :]).resolve()
                return target if target.is_file() and target.is_relative_to(root.resolve()) else None
        if path.count("/") == 1 and path.endswith(".js"):
            target = WEB / path[1:]
            return target if target.is_file() else None
        return None

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        target = self._resolve()
        if target is None:
            self.send_error(404)
            return
        body = target.read_bytes()
        if target.suffix == ".js" and b'"@litertjs/wasm-utils"' in body:
            # LiteRT.js's one bare import, pointed at its route: a worker has no import map to resolve it.
            body = body.replace(b'"@litertjs/wasm-utils"', b'"/wasm-utils/dist/index.js"')
        self.send_response(200)
        self.send_header("Content-Type", TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def server(bundle: Path, extra: Path | None = None, port: int = 0, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """A server (not started) for ``bundle``; ``port`` 0 takes a free one (``server.server_address``)."""
    core = require_litertjs()
    if not (bundle / "model.json").is_file():
        raise BrowserSetupError(f"{bundle} is not a bundle (no model.json): run `make package MODEL=...` first")
    routes = {"/litertjs/": core, "/wasm-utils/": NODE_MODULES / "@litertjs" / "wasm-utils", "/bundle/": bundle}
    if extra is not None:
        routes["/extra/"] = extra
    handler = type("Handler", (_Handler,), {"routes": routes})
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use (another `make web`?): stop it, or choose another port: make web PORT={port + 1}"
            ) from e
        raise


def serve_in_background(bundle: Path, extra: Path | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a server on a free local port in a daemon thread: (server, its base URL). ``shutdown()`` stops it."""
    srv = server(bundle, extra)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host, port = srv.server_address[:2]
    return srv, f"http://{host}:{port}"
