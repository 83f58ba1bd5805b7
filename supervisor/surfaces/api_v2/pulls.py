"""Model pulls (admin): start one and follow its progress, list the running ones, cancel one.
Included before the /api/v2 router, whose ``/models/{model_id}`` would take these paths."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from supervisor.models.pulls.request import parse_pull
from supervisor.surfaces import services
from supervisor.surfaces.openai.dialect import parse_body
from supervisor.surfaces.pull_stream import pull_response
from supervisor.surfaces.schemas import (
    PULL_SSE,
    PullBody,
    PullCancelled,
    PullList,
    json_body,
    replies,
)

router = APIRouter(prefix="/api/v2", tags=["api/v2"])


@router.post(
    "/models/pull",
    summary="Pull a model over HTTP",
    openapi_extra=json_body(PullBody),
    responses=replies(None, 400, 401, 403, 409, 503, stream=PULL_SSE),
)
async def pull_model(request: Request) -> StreamingResponse:
    """Download a .gguf into the first models directory, then serve it: refused at once
    (400, 403, 409; 503 once the gateway shuts down) or streamed as progress events ending in
    done or error. The pull runs on if the client goes."""
    pull_request = parse_pull(parse_body(await request.body()))
    return pull_response(request, await services.pulls(request).start(pull_request))


@router.api_route(
    "/models/pull", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def pull_wrong_method() -> None:
    """405, not the model info of a model named "pull" (``GET /api/v2/models/{model_id}``)."""
    raise HTTPException(405, headers={"Allow": "POST"})


@router.get("/models/pulls", summary="List running pulls", responses=replies(PullList, 401, 403))
async def list_pulls(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [pull.listing() for pull in services.pulls(request).list()]}


@router.delete(
    "/models/pulls/{pull_id}",
    summary="Cancel a pull",
    responses=replies(PullCancelled, 401, 403, 404, 409),
)
async def cancel_pull(request: Request, pull_id: str) -> dict[str, Any]:
    """Stop the pull and delete its partial file."""
    await services.pulls(request).cancel(pull_id)
    return {"id": pull_id, "status": "cancelled"}
