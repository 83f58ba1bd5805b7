"""A model's llama-server output (admin): the last lines, and a live SSE follow of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from supervisor.children.logs import ChildLog, LogLine
from supervisor.http.drain import Drain
from supervisor.surfaces import services
from supervisor.surfaces.follow import SSE_HEADERS, follow
from supervisor.surfaces.schemas import ModelLogs, replies

router = APIRouter(prefix="/api/v2", tags=["api/v2"])
Lines = Annotated[int, Query(ge=0, le=100_000, description="How many recent lines to send")]


@router.get(
    "/models/{model_id}/logs",
    summary="A model's llama-server output",
    responses=replies(ModelLogs, 401, 403, 404),
)
async def model_logs(request: Request, model_id: str, lines: Lines = 100) -> dict[str, Any]:
    entry = services.catalog(request).resolve(model_id)
    tail = services.child_logs(request).of(entry.id).tail(lines)
    return {"model": entry.id, "lines": [line.as_json() for line in tail]}


@router.get(
    "/models/{model_id}/logs/stream",
    summary="Follow a model's llama-server output",
    responses=replies(
        None, 401, 403, 404, stream="Server-sent events: data: {time, role, pid, line} per line"
    ),
)
async def follow_model_logs(
    request: Request, model_id: str, lines: Lines = 20
) -> StreamingResponse:
    """The last ``lines`` lines, then each new one as the child prints it, until the client
    goes or the gateway shuts down."""
    entry = services.catalog(request).resolve(model_id)
    drain: Drain = request.app.state.drain
    events = _follow(services.child_logs(request).of(entry.id), lines, drain.stopping)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def _follow(log: ChildLog, count: int, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    with log.follow() as queue:  # before the tail, so no line falls between the two
        async for event in follow(log.tail(count), queue, stopping, _event):
            yield event


def _event(line: LogLine) -> bytes:
    return b"data: " + json.dumps(line.as_json()).encode() + b"\n\n"
