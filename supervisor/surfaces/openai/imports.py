"""``POST /v1/import`` (seed 003, admin): bring a model in from a folder of ``import_dirs``, or
from a URL as a pull does; errors in the OpenAI envelope."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from supervisor.errors import PullFailed, ShuttingDown
from supervisor.http.drain import Drain
from supervisor.models.pulls.progress import Pull, PullEvent
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
    responses=replies(Imported, 400, 401, 403, 404, 409, 413, 502, 503, 507, stream=PULL_SSE),
)
async def import_model(request: Request) -> Response:
    """``{"path"}``: copy a .gguf from ``import_dirs`` into the first models directory.
    ``{"url"}``: pull it; with ``"stream": true`` the pull's events, else the answer once it
    is served (a 503 if the gateway starts draining first: the pull stops with it, its
    partial file kept). Either way it is checked as a pull is, and served at once."""
    body = parse_body(await request.body())
    asked = parse_import(body)
    pulls = services.pulls(request)
    if not isinstance(asked, PullRequest):
        return JSONResponse(imported(await pulls.import_file(asked)))
    pull = await pulls.start(asked)
    if body.get("stream") is True:
        return pull_response(request, pull)
    drain: Drain = request.app.state.drain
    last = await pull_outcome(pull, drain.stopping)
    if last.name == "error":
        raise PullFailed(last.data["error"]["type"], last.data["error"]["message"])
    data = last.data
    return JSONResponse(
        imported(Brought(data["model"], data["file"], data["bytes"], data["sha256"]))
    )


async def pull_outcome(pull: Pull, stopping: asyncio.Event) -> PullEvent:
    """The pull's last event; ``ShuttingDown`` if the gateway starts draining first (a pull
    may take hours: the answer must not hold the shutdown for its whole grace)."""
    ended = asyncio.ensure_future(pull.wait())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({ended, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (ended, stop):
            waiter.cancel()
        await asyncio.wait({ended, stop})
    if not ended.cancelled() and ended.exception() is None:
        return ended.result()
    raise ShuttingDown("the gateway is shutting down: the pull stops, its partial file is kept")


def imported(brought: Brought) -> dict[str, Any]:
    return {"object": "model", "id": brought.model, "file": brought.file,
            "bytes": brought.bytes, "sha256": brought.sha256, "status": "imported"}  # fmt: skip
