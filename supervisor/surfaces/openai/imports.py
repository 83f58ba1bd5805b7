"""``POST /v1/import`` (seed 003, admin): bring a model in from a folder of ``import_dirs``, or
from a URL as a pull does; errors in the OpenAI envelope."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from supervisor.errors import PullFailed
from supervisor.models.pulls.request import PullRequest, parse_import
from supervisor.models.pulls.service import Brought
from supervisor.surfaces import services
from supervisor.surfaces.openai.dialect import parse_body
from supervisor.surfaces.pull_stream import pull_response
from supervisor.surfaces.schemas import PULL_SSE, ImportBody, Imported, json_body, replies

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/import",
    summary="Import a model",
    openapi_extra=json_body(ImportBody),
    responses=replies(Imported, 400, 401, 403, 404, 409, 413, 502, 507, stream=PULL_SSE),
)
async def import_model(request: Request) -> Response:
    """``{"path"}``: copy a .gguf from ``import_dirs`` into the first models directory.
    ``{"url"}``: pull it; with ``"stream": true`` the pull's events, else the answer once it
    is served. Either way it is checked as a pull is, and served at once."""
    body = parse_body(await request.body())
    asked = parse_import(body)
    pulls = services.pulls(request)
    if not isinstance(asked, PullRequest):
        return JSONResponse(imported(await pulls.import_file(asked)))
    pull = await pulls.start(asked)
    if body.get("stream") is True:
        return pull_response(request, pull)
    last = await pull.wait()
    if last.name == "error":
        raise PullFailed(last.data["error"]["type"], last.data["error"]["message"])
    data = last.data
    return JSONResponse(
        imported(Brought(data["model"], data["file"], data["bytes"], data["sha256"]))
    )


def imported(brought: Brought) -> dict[str, Any]:
    return {"object": "model", "id": brought.model, "file": brought.file,
            "bytes": brought.bytes, "sha256": brought.sha256, "status": "imported"}  # fmt: skip
