"""The /api surface's inference routes: chat with server-side sessions,
generate, embeddings, and the sessions themselves. Errors are ``{"detail": …}``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from supervisor.children.argv import context_size, parallel_slots, slot_context
from supervisor.children.spec import Role
from supervisor.errors import ChildRejected, SessionNotFound, SupervisorError
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.catalog import Served
from supervisor.peers.model import PeerModel
from supervisor.relay.asgi import RelayResponse
from supervisor.relay.disconnect import DisconnectWatch
from supervisor.relay.failures import CLIENT_CLOSED_REQUEST
from supervisor.relay.stream import sse_events
from supervisor.sessions.base import Store
from supervisor.sessions.store import Message, fit_history
from supervisor.surfaces import services
from supervisor.surfaces.api import chat as dialect
from supervisor.surfaces.openai.dialect import parse_body
from supervisor.surfaces.schemas import (
    API_SSE,
    ApiChatReply,
    ApiChatRequest,
    ApiEmbeddingsReply,
    ApiEmbeddingsRequest,
    ApiGenerateReply,
    ApiGenerateRequest,
    DetailError,
    SessionDeleted,
    SessionDetail,
    SessionList,
    json_body,
    replies,
)
from supervisor.telemetry.tokens import TokenMeter

router = APIRouter(prefix="/api", tags=["api"])
DEFAULT_REPLY_TOKENS = 512  # room kept for the answer when fitting a session's history
PEER_SLOT_CONTEXT = 4096  # a peer's model's slot context, assumed when fitting a history

Finish = Callable[[str, dict[str, int] | None], Awaitable[bytes]]


class ApiStream:
    """The /api surface's stream: ``{"token", "done": false}`` per piece of text, then whatever
    ``finish`` makes of the whole text (after storing it, for chat)."""

    def __init__(
        self, finish: Finish, meter: TokenMeter, on_closed: Callable[[], None] = lambda: None
    ) -> None:
        self._finish = finish
        self._meter = meter
        self._on_closed = on_closed

    async def chunks(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        parts: list[str] = []
        usage: dict[str, int] | None = None
        async for chunk in sse_events(raw):
            if chunk is None:
                break
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise ValueError(f"the model server reported an error: {chunk['error']}")
            usage = dialect.stream_usage(chunk) or usage
            self._meter.event(chunk)
            text = dialect.stream_text(chunk)
            if text:
                parts.append(text)
                yield dialect.token_event(text)
        yield await self._finish("".join(parts), usage)

    def error(self, error: SupervisorError) -> bytes:
        return dialect.error_event(error.message)

    def closed(self) -> None:
        self._meter.close()
        self._on_closed()


async def _call(
    request: Request, entry: Served, path: str, body: dict[str, Any], role: Role
) -> dict[str, Any] | None:
    """A non-streamed call to the child (or peer): its JSON answer, or None if the client
    left."""
    targets = services.targets(request)
    answer = await services.proxy(request).fetch_json(
        lambda: targets.acquire(entry, role), path, json.dumps(body).encode(), request.receive
    )
    if answer is None:
        return None
    status, data = answer
    if status >= 400 or not isinstance(data, dict | list):
        raise ChildRejected(status, data)
    services.count_answer(request, entry.id, data)
    return data if isinstance(data, dict) else {"data": data}


async def _stream(
    request: Request, entry: Served, path: str, body: dict[str, Any], stream: ApiStream
) -> Response:
    acquire = partial(services.targets(request).acquire, entry)
    raw = json.dumps(body).encode()
    response = await services.proxy(request).forward(acquire, path, raw, stream, request.receive)
    if not isinstance(response, RelayResponse) and response.status_code >= 400:
        # The child refused before streaming: answer in this surface's error format.
        raise ChildRejected(response.status_code, _json_or_none(bytes(response.body)))
    return response


def _json_or_none(content: bytes) -> object:
    try:
        return json.loads(content)
    except ValueError:
        return None


# -- chat with sessions -------------------------------------------------------------------
@router.post(
    "/chat",
    summary="Chat on a session",
    openapi_extra=json_body(ApiChatRequest),
    responses=replies(ApiChatReply, 400, 404, 429, 502, 503, error=DetailError, stream=API_SSE),
)
async def chat(request: Request) -> Response:
    """Chat on a server-side session: with ``session_id`` the conversation continues (its
    history goes first); without, a new session starts and its id comes back. The new turns
    are stored, in one transaction, before the answer (or the stream's last event) is sent."""
    asked = dialect.parse_chat_request(parse_body(await request.body()))
    # The new turns only: the stored history is trimmed to fit the context anyway.
    services.limits(request).general.check({"messages": asked.messages, **asked.options})
    session_id = asked.session_id or str(uuid.uuid4())
    # Requests on one session take turns (across gateways when they share the database): the
    # turn is held until the answer is stored and, for a stream, until the relay is over (the
    # stream releases it when it closes). A client that leaves while waiting gives it up.
    release: Callable[[], None] | None = None
    with DisconnectWatch(request.receive) as watch:
        release = await services.session_turns(request).take(session_id)
    if release is None or watch.gone:
        if release is not None:
            release()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    try:
        response = await _chat_in_turn(request, asked, session_id, release)
    except BaseException:
        release()
        raise
    if not isinstance(response, RelayResponse):
        release()
    return response


async def _chat_in_turn(
    request: Request,
    asked: dialect.ChatRequest,
    session_id: str,
    release: Callable[[], None],
) -> Response:
    history: tuple[Message, ...] = ()
    model_name = asked.model
    sessions = services.sessions(request)
    if asked.session_id:
        stored = await anyio.to_thread.run_sync(sessions.get, asked.session_id)
        history, model_name = stored.messages, model_name or stored.model
    entry = services.serve_model(request, model_name)
    budget = _history_budget(services.manager(request), entry, asked.options)
    messages = fit_history([*history, *asked.messages], budget)

    async def store(reply: str) -> None:
        turns = [(m["role"], m["content"]) for m in asked.messages]
        write = asyncio.ensure_future(anyio.to_thread.run_sync(
            _save, sessions, session_id, entry.id, asked.session_id,
            [*turns, ("assistant", reply)]))  # fmt: skip
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # A client gone mid-write cannot stop the thread: the turn (which the stream's
            # end gives up) lasts until the write is over, or the next turn reads without it.
            await asyncio.wait([write])
            if not write.cancelled():
                write.exception()  # nobody is left to tell; the store has logged a failure
            raise

    if asked.stream:

        async def finish(text: str, usage: dict[str, int] | None) -> bytes:
            try:
                await store(text)
            except SupervisorError as exc:
                return dialect.error_event(exc.message)
            return dialect.chat_done_event(session_id, text, usage)

        body = dialect.chat_upstream_body(messages, asked.options, stream=True)
        meter = services.meter(request, entry.id)
        stream = ApiStream(finish, meter, on_closed=release)
        return await _stream(request, entry, "/v1/chat/completions", body, stream)
    body = dialect.chat_upstream_body(messages, asked.options, stream=False)
    completion = await _call(request, entry, "/v1/chat/completions", body, Role.CHAT)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    reply = dialect.chat_reply(completion, session_id)
    await store(reply["message"]["content"])
    return JSONResponse(reply)


def _save(
    store: Store,
    session_id: str,
    model: str,
    existing: str | None,
    turns: list[tuple[str, str]],
) -> None:
    # A new session is created with its first turns in one transaction: a failed write
    # (disk full, read-only) must not leave an empty session behind.
    if existing is None:
        store.create(model, session_id, turns)
    else:
        store.append(session_id, turns)


def _history_budget(manager: ModelManager, entry: Served, options: dict[str, Any]) -> int:
    """Tokens a session's history may use: the slot's context less room for the reply."""
    reply = options.get("max_tokens") or DEFAULT_REPLY_TOKENS
    return max(_slot_context(manager, entry) - int(reply), 256)


def _slot_context(manager: ModelManager, entry: Served) -> int:
    """The context of one slot of the model's chat child: the running child's own (as it was
    launched: its load parameters, its model's --parallel), else what one started now gets;
    for a peer's model, which says nothing of its slots, a common size."""
    if isinstance(entry, PeerModel):
        return PEER_SLOT_CONTEXT
    chat = manager.get(entry, Role.CHAT)
    if chat is not None and chat.backend is not None:
        return chat.backend.slot_context
    settings = manager.settings
    ctx_size = context_size(settings, entry, chat.params if chat is not None else None)
    return slot_context(entry, ctx_size, parallel_slots(settings, entry))


# -- generate, embeddings -------------------------------------------------------------------
@router.post(
    "/generate",
    summary="Generate text",
    openapi_extra=json_body(ApiGenerateRequest),
    responses=replies(ApiGenerateReply, 400, 404, 429, 502, 503, error=DetailError, stream=API_SSE),
)
async def generate(request: Request) -> Response:
    """Stateless text generation from a prompt; streamed like chat, without a session."""
    asked = dialect.parse_generate_request(parse_body(await request.body()))
    services.limits(request).general.check({"prompt": asked.prompt, **asked.options})
    entry = services.serve_model(request, asked.model)
    if asked.stream:

        async def finish(text: str, usage: dict[str, int] | None) -> bytes:
            return dialect.generate_done_event(text, usage)

        body = dialect.generate_upstream_body(asked.prompt, asked.options, stream=True)
        stream = ApiStream(finish, services.meter(request, entry.id))
        return await _stream(request, entry, "/v1/completions", body, stream)
    body = dialect.generate_upstream_body(asked.prompt, asked.options, stream=False)
    completion = await _call(request, entry, "/v1/completions", body, Role.CHAT)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(dialect.generate_reply(completion))


@router.post(
    "/embeddings",
    summary="Embed text",
    openapi_extra=json_body(ApiEmbeddingsRequest),
    responses=replies(ApiEmbeddingsReply, 400, 404, 429, 502, 503, error=DetailError),
)
async def embeddings(request: Request) -> Response:
    model, text = dialect.parse_embeddings_request(parse_body(await request.body()))
    services.limits(request).general.check({"input": text})
    entry = services.serve_model(request, model)
    body = dialect.embeddings_upstream_body(text)
    answer = await _call(request, entry, "/v1/embeddings", body, Role.EMBEDDING)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(dialect.embeddings_reply(answer, entry.id, isinstance(text, str)))


# -- sessions ---------------------------------------------------------------------------------
@router.get("/sessions", summary="List sessions", responses=replies(SessionList))
async def list_sessions(request: Request) -> dict[str, Any]:
    summaries = await anyio.to_thread.run_sync(services.sessions(request).list)
    return {"sessions": [asdict(s) for s in summaries]}


@router.get(
    "/sessions/{session_id}",
    summary="Get a session",
    responses=replies(SessionDetail, 404, error=DetailError),
)
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    session = await anyio.to_thread.run_sync(services.sessions(request).get, session_id)
    return asdict(session)


@router.delete(
    "/sessions/{session_id}",
    summary="Delete a session",
    responses=replies(SessionDeleted, 404, error=DetailError),
)
async def delete_session(request: Request, session_id: str) -> dict[str, Any]:
    async with services.session_turns(request).hold(session_id):
        deleted = await anyio.to_thread.run_sync(services.sessions(request).delete, session_id)
    if not deleted:
        raise SessionNotFound(session_id)
    return {"status": "success", "message": f"Session '{session_id}' deleted"}
