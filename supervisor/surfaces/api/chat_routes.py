"""The /api surface's inference routes (seed 002, MyLLM): chat with server-side sessions,
generate, embeddings, and the sessions themselves. Errors are ``{"detail": …}``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from supervisor.children.spec import Role
from supervisor.errors import ChildRejected, SessionNotFound, SupervisorError
from supervisor.gateway import Gateway
from supervisor.models.registry import ModelEntry
from supervisor.relay.asgi import CLIENT_CLOSED_REQUEST, RelayResponse, sse_events
from supervisor.relay.plan import gateway, pick_model
from supervisor.sessions.store import Message, fit_history
from supervisor.surfaces.api import chat as dialect
from supervisor.surfaces.openai.dialect import parse_body
from supervisor.surfaces.schemas import (
    MYLLM_SSE,
    DetailError,
    MyllmChatReply,
    MyllmChatRequest,
    MyllmEmbeddingsReply,
    MyllmEmbeddingsRequest,
    MyllmGenerateReply,
    MyllmGenerateRequest,
    SessionDeleted,
    SessionDetail,
    SessionList,
    json_body,
    replies,
)
from supervisor.telemetry.tokens import TokenMeter

router = APIRouter(prefix="/api", tags=["api"])
DEFAULT_REPLY_TOKENS = 512  # room kept for the answer when fitting a session's history

Finish = Callable[[str, dict[str, int] | None], Awaitable[bytes]]


class SeedStream:
    """Seed 002's stream: ``{"token", "done": false}`` per piece of text, then whatever
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
    request: Request, entry: ModelEntry, path: str, body: dict[str, Any], role: Role
) -> dict[str, Any] | None:
    """A non-streamed call to the child: its JSON answer, or None if the client left."""
    gw = gateway(request)
    answer = await gw.proxy.fetch_json(
        lambda: gw.acquire(entry, role), path, json.dumps(body).encode(), request.receive
    )
    if answer is None:
        return None
    status, data = answer
    if status >= 400 or not isinstance(data, dict | list):
        raise ChildRejected(status, data)
    gw.record_timings(entry.id, data)
    return data if isinstance(data, dict) else {"data": data}


async def _stream(
    request: Request, entry: ModelEntry, path: str, body: dict[str, Any], stream: SeedStream
) -> Response:
    gw = gateway(request)
    raw = json.dumps(body).encode()
    response = await gw.proxy.forward(lambda: gw.acquire(entry), path, raw, stream, request.receive)
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
    openapi_extra=json_body(MyllmChatRequest),
    responses=replies(MyllmChatReply, 400, 404, 429, 502, 503, error=DetailError, stream=MYLLM_SSE),
)
async def chat(request: Request) -> Response:
    """Chat on a server-side session: with ``session_id`` the conversation continues (its
    history goes first); without, a new session starts and its id comes back. The new turns
    are stored, in one transaction, before the answer (or the stream's last event) is sent."""
    gw = gateway(request)
    asked = dialect.parse_chat_request(parse_body(await request.body()))
    # The new turns only: the stored history is trimmed to fit the context anyway.
    gw.limits.check({"messages": asked.messages, **asked.options})
    session_id = asked.session_id or str(uuid.uuid4())
    # Requests on one session take turns: the lock is held until the answer is stored and,
    # for a stream, until the relay is over (the stream releases it when it closes).
    lock = gw.session_lock(session_id)
    await lock.acquire()
    release = _once(lock.release)
    try:
        response = await _chat_in_turn(request, gw, asked, session_id, release)
    except BaseException:
        release()
        raise
    if not isinstance(response, RelayResponse):
        release()
    return response


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run


async def _chat_in_turn(
    request: Request,
    gw: Gateway,
    asked: dialect.ChatRequest,
    session_id: str,
    release: Callable[[], None],
) -> Response:
    history: tuple[Message, ...] = ()
    model_name = asked.model
    if asked.session_id:
        stored = await anyio.to_thread.run_sync(gw.sessions.get, asked.session_id)
        history, model_name = stored.messages, model_name or stored.model
    entry = pick_model(request, model_name)
    messages = fit_history([*history, *asked.messages], _history_budget(gw, entry, asked.options))

    async def store(reply: str) -> None:
        turns = [(m["role"], m["content"]) for m in asked.messages]
        await anyio.to_thread.run_sync(_save, gw, session_id, entry.id, asked.session_id,
                                       [*turns, ("assistant", reply)])  # fmt: skip

    if asked.stream:

        async def finish(text: str, usage: dict[str, int] | None) -> bytes:
            try:
                await store(text)
            except SupervisorError as exc:
                return dialect.error_event(exc.message)
            return dialect.chat_done_event(session_id, text, usage)

        body = dialect.chat_upstream_body(messages, asked.options, stream=True)
        stream = SeedStream(finish, gw.telemetry.meter(entry.id), on_closed=release)
        return await _stream(request, entry, "/v1/chat/completions", body, stream)
    body = dialect.chat_upstream_body(messages, asked.options, stream=False)
    completion = await _call(request, entry, "/v1/chat/completions", body, Role.CHAT)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    reply = dialect.chat_reply(completion, session_id)
    await store(reply["message"]["content"])
    return JSONResponse(reply)


def _save(
    gw: Gateway, session_id: str, model: str, existing: str | None, turns: list[tuple[str, str]]
) -> None:
    # A new session is created with its first turns in one transaction: a failed write
    # (disk full, read-only) must not leave an empty session behind.
    if existing is None:
        gw.sessions.create(model, session_id, turns)
    else:
        gw.sessions.append(session_id, turns)


def _history_budget(gw: Gateway, entry: ModelEntry, options: dict[str, Any]) -> int:
    """Tokens a session's history may use: the slot's context less room for the reply."""
    settings = gw.settings
    own = entry.overrides
    ctx = (own.ctx_size if own and own.ctx_size else None) or settings.ctx_size
    slot = ctx // settings.parallel if ctx else (entry.info.context_length or 4096)
    reply = options.get("max_tokens") or DEFAULT_REPLY_TOKENS
    return max(slot - int(reply), 256)


# -- generate, embeddings -------------------------------------------------------------------
@router.post(
    "/generate",
    summary="Generate text",
    openapi_extra=json_body(MyllmGenerateRequest),
    responses=replies(
        MyllmGenerateReply, 400, 404, 429, 502, 503, error=DetailError, stream=MYLLM_SSE
    ),
)
async def generate(request: Request) -> Response:
    """Stateless text generation from a prompt; streamed like chat, without a session."""
    gw = gateway(request)
    asked = dialect.parse_generate_request(parse_body(await request.body()))
    gw.limits.check({"prompt": asked.prompt, **asked.options})
    entry = pick_model(request, asked.model)
    if asked.stream:

        async def finish(text: str, usage: dict[str, int] | None) -> bytes:
            return dialect.generate_done_event(text, usage)

        body = dialect.generate_upstream_body(asked.prompt, asked.options, stream=True)
        stream = SeedStream(finish, gw.telemetry.meter(entry.id))
        return await _stream(request, entry, "/v1/completions", body, stream)
    body = dialect.generate_upstream_body(asked.prompt, asked.options, stream=False)
    completion = await _call(request, entry, "/v1/completions", body, Role.CHAT)
    if completion is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(dialect.generate_reply(completion))


@router.post(
    "/embeddings",
    summary="Embed text",
    openapi_extra=json_body(MyllmEmbeddingsRequest),
    responses=replies(MyllmEmbeddingsReply, 400, 404, 429, 502, 503, error=DetailError),
)
async def embeddings(request: Request) -> Response:
    model, text = dialect.parse_embeddings_request(parse_body(await request.body()))
    gateway(request).limits.check({"input": text})
    entry = pick_model(request, model)
    body = dialect.embeddings_upstream_body(text)
    answer = await _call(request, entry, "/v1/embeddings", body, Role.EMBEDDING)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(dialect.embeddings_reply(answer, entry.id, isinstance(text, str)))


# -- sessions ---------------------------------------------------------------------------------
@router.get("/sessions", summary="List sessions", responses=replies(SessionList))
async def list_sessions(request: Request) -> dict[str, Any]:
    summaries = await anyio.to_thread.run_sync(gateway(request).sessions.list)
    return {"sessions": [asdict(s) for s in summaries]}


@router.get(
    "/sessions/{session_id}",
    summary="Get a session",
    responses=replies(SessionDetail, 404, error=DetailError),
)
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    session = await anyio.to_thread.run_sync(gateway(request).sessions.get, session_id)
    return asdict(session)


@router.delete(
    "/sessions/{session_id}",
    summary="Delete a session",
    responses=replies(SessionDeleted, 404, error=DetailError),
)
async def delete_session(request: Request, session_id: str) -> dict[str, Any]:
    gw = gateway(request)
    async with gw.session_lock(session_id):
        deleted = await anyio.to_thread.run_sync(gw.sessions.delete, session_id)
    if not deleted:
        raise SessionNotFound(session_id)
    return {"status": "success", "message": f"Session '{session_id}' deleted"}
