"""The activity log and the metrics history (admin): the last finished requests, a live SSE
follow of them, and the sampled figures behind the console's charts. Included before the
/api/v2 router, so that nothing there can take these paths."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from supervisor.http.drain import Drain
from supervisor.surfaces import services
from supervisor.surfaces.follow import SSE_HEADERS, follow
from supervisor.surfaces.schemas import ActivityList, MetricsHistoryReply, replies
from supervisor.telemetry.activity import ActivityLog, Finished

router = APIRouter(prefix="/api/v2", tags=["api/v2"])
ACTIVITY_SSE = "Server-sent events: data: {entry} per finished request, oldest first"


@router.get(
    "/activity",
    summary="The last finished requests",
    responses=replies(ActivityList, 400, 401, 403),
)
async def activity(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many, newest first")] = 100,
) -> dict[str, Any]:
    log = services.activity(request)
    entries = reversed(log.recent(limit))
    return {"object": "list", "data": [entry.as_json(log.keep_text) for entry in entries]}


@router.get(
    "/activity/stream",
    summary="Follow the finished requests",
    responses=replies(None, 400, 401, 403, stream=ACTIVITY_SSE),
)
async def follow_activity(
    request: Request,
    recent: Annotated[int, Query(ge=0, le=1000, description="Recent entries sent first")] = 20,
) -> StreamingResponse:
    """The ``recent`` last entries, then each request as it finishes, until the client goes
    or the gateway shuts down."""
    drain: Drain = request.app.state.drain
    events = _follow(services.activity(request), recent, drain.stopping)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def _follow(log: ActivityLog, count: int, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    with log.follow() as queue:  # before the recent ones, so no entry falls between the two
        async for event in follow(log.recent(count), queue, stopping, partial(_event, log)):
            yield event


def _event(log: ActivityLog, entry: Finished) -> bytes:
    return b"data: " + json.dumps(entry.as_json(log.keep_text)).encode() + b"\n\n"


@router.get(
    "/metrics/history",
    summary="The gateway's figures over the last minutes",
    responses=replies(MetricsHistoryReply, 401, 403),
)
async def metrics_history(request: Request) -> dict[str, Any]:
    """A sample every ``interval_s`` seconds for ``window_s``: request and token rates, time
    to first token, the host's CPU, RAM and GPUs, and each model's state and queue."""
    history = services.metrics_history(request)
    return {
        "interval_s": history.interval,
        "window_s": history.window,
        "samples": [sample.as_json() for sample in history.samples()],
    }
