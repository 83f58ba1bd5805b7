"""``GET /ui`` (a redirect), ``/ui/`` (the page) and ``/ui/{file}`` (its scripts and styles).

The files are read once, when the app is made: a request only looks a name up in a table,
so no request path ever reaches the file system (``..``, encoded or not, absolute paths and
symlinks match nothing). Every answer, the 404s included, carries a strict
Content-Security-Policy (the page runs only its own files: no inline script, no other
origin) and ``Cache-Control: no-cache``, so an upgraded gateway's console shows at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from supervisor.errors import NotFound
from supervisor.http.error_responses import error_response

STATIC = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".ico": "image/x-icon",
    }
)
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": (
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
)


@dataclass(frozen=True)
class ConsoleFile:
    body: bytes
    content_type: str


def read_files(root: Path) -> dict[str, ConsoleFile]:
    """Every servable file under ``root`` by its path relative to it ("views/logs.js"):
    regular files with a known type, no symlink (to a file or a folder), no hidden name."""
    found: dict[str, ConsoleFile] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if _through_symlink(root, relative) or not path.is_file():
            continue
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is not None:
            found[relative.as_posix()] = ConsoleFile(path.read_bytes(), content_type)
    return found


def _through_symlink(root: Path, relative: Path) -> bool:
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return True
    return False


def console_router(root: Path = STATIC) -> APIRouter:
    """The console's routes, serving the files under ``root`` as they were when called."""
    files = MappingProxyType(read_files(root))
    router = APIRouter(include_in_schema=False)

    @router.api_route("/ui", methods=["GET", "HEAD"])
    async def console_redirect(request: Request) -> Response:
        return RedirectResponse("/ui/", headers=dict(SECURITY_HEADERS))

    @router.api_route("/ui/", methods=["GET", "HEAD"])
    async def console_page(request: Request) -> Response:
        return _answer(request, files.get(INDEX))

    @router.api_route("/ui/{name:path}", methods=["GET", "HEAD"])
    async def console_file(request: Request, name: str) -> Response:
        return _answer(request, files.get(name))

    return router


def _answer(request: Request, found: ConsoleFile | None) -> Response:
    if found is None:
        response = error_response(
            request.url.path, NotFound(f"Not found: {request.method} {request.url.path}")
        )
    else:
        response = Response(found.body, media_type=found.content_type)
    response.headers.update(SECURITY_HEADERS)
    return response
