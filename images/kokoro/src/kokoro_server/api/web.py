"""GET /web: a small web player (static files shipped in kokoro_server/web).

The page loads without an API key; its script calls only the public API
(GET /v1/audio/voices, POST /v1/audio/speech) and sends the key the user types, kept in
the browser's sessionStorage, as a Bearer token. Every file is served with a strict
Content-Security-Policy: scripts, styles and connections to this origin only, audio from
this origin or the page's own blob: URLs, nothing else.
"""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

from ..errors import ApiError

router = APIRouter(include_in_schema=False)

# name -> media type; only these files are served (no path from the request reaches disk)
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "media-src 'self' blob:",  # the synthesized audio is played from a blob: URL
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("kokoro_server") / "web" / name).read_bytes()


def _file(name: str) -> Response:
    if name not in FILES:
        raise ApiError(404, "not_found", "Not Found")
    return Response(_read(name), media_type=FILES[name], headers=SECURITY_HEADERS)


@router.get("/web")
def web_redirect() -> Response:
    # A relative Location keeps working behind a proxy that serves us under a prefix.
    return Response(status_code=307, headers={"Location": "web/", **SECURITY_HEADERS})


@router.get("/web/")
def web_index() -> Response:
    return _file("index.html")


@router.get("/web/{name}")
def web_file(name: str) -> Response:
    return _file(name)


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on any page that names no icon (an SVG opened on
    its own, a JSON answer): the player's icon, without a key, not a 401 in their log."""
    return _file("favicon.svg")
