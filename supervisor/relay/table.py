"""The relay table: every llama-server route the gateway passes on to a child, declared once.

A relayed request's body goes to the child untouched (it is only read on the way: its model,
``stream``, the request limits), and the child's answer comes back as it is, but for the few
rewrites a route declares (an error in Anthropic's shape, no host paths). Everything else about
a route is one entry here, which each part of the gateway reads:

- the relay lane (``relay/lane.py``) and the ASGI way (``asgi_shortcut.py``, ``plan.relay``):
  which child serves it (``role``), where its model is named (``model_from``), its limits;
- the error formatters (``http/error_responses.py``): its ``surface``;
- the key check (``http/auth.py``): ``admin``;
- the OpenAPI document (``surfaces/relayed.py``): ``summary`` and ``doc``;
- the metrics: each path is its own ``route`` label.

Adding a llama-server route is one ``_declare`` call. The routes llama-server serves that the
gateway does not relay, and why, are ``NOT_RELAYED``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel

from supervisor.children.spec import Role
from supervisor.surfaces.anthropic.schemas import (
    CountTokensRequest,
    InputTokensReply,
    MessageReply,
    MessagesRequest,
)
from supervisor.surfaces.native.more_schemas import (
    ApplyTemplateReply,
    ControlRequest,
    InfillRequest,
    InputTokensCount,
    LoraAdapter,
    LoraScales,
    Props,
    RerankReply,
    RerankRequest,
    ResponseObject,
    ResponsesRequest,
    Slot,
    Transcription,
    TranscriptionForm,
)
from supervisor.surfaces.native.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    NativeCompletion,
    NativeCompletionRequest,
    NativeEmbedding,
    TokenizeRequest,
    TokenizeResponse,
)
from supervisor.surfaces.openai.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    TextCompletion,
)
from supervisor.surfaces.openapi import OPENAI_SSE


class Surface(StrEnum):
    """How a route's errors and failed streams look to its clients."""

    OPENAI = "openai"  # {"error": {...}}; a failed stream ends data: {"error"} data: [DONE]
    RESPONSES = "responses"  # OpenAI's envelope; a failed stream ends with event: error
    ANTHROPIC = "anthropic"  # {"type": "error", "error": {...}}; event: error
    NATIVE = "native"  # llama-server's own: the OpenAI envelope


class ModelFrom(StrEnum):
    """Where a request names its model (none named: the default model)."""

    BODY = "body"  # the JSON body's "model"
    QUERY = "query"  # ?model=, as llama-server's router mode reads a GET
    FORM = "form"  # the multipart form's field "model"


@dataclass(frozen=True)
class RouteDoc:
    """What the API document says of a route."""

    request: type[BaseModel] | None = None
    reply: Any = None
    stream: str | None = None  # the SSE answer's description, if it can stream
    multipart: bool = False


@dataclass(frozen=True)
class Relay:
    """One public path of a relayed route; it goes to the same path on the child."""

    path: str
    summary: str
    method: str = "POST"
    role: Role = Role.CHAT
    surface: Surface = Surface.OPENAI
    model_from: ModelFrom = ModelFrom.BODY
    admin: bool = False  # an admin key, not an inference key, where keys are configured
    metered: bool = True  # its answer carries token counts (usage or timings)
    checked: bool = True  # the request limits (tokens, prompt, stops) apply to its body
    ensure_done: bool = False  # a stream the child ends without data: [DONE] gets it
    needs: str | None = None  # a capability its model must have ("audio")
    scrub: bool = False  # its answer may name host paths: they are rewritten
    doc: RouteDoc = RouteDoc()

    @property
    def tag(self) -> str:
        """Its section of the API document."""
        if self.surface is Surface.ANTHROPIC:
            return "anthropic"
        return "openai" if self.path.startswith("/v1/") else "native"

    @cached_property
    def openai_stop(self) -> bool:
        """The OpenAI surface's stop-list limit applies (its routes under /v1). Cached: it is
        read for every request."""
        return self.path.startswith("/v1/") and self.surface is Surface.OPENAI


def _declare(*paths: str, summary: str, **traits: Any) -> tuple[Relay, ...]:
    """One route, under each of its paths."""
    return tuple(Relay(path, summary, **traits) for path in paths)


RESPONSES_SSE = "Typed server-sent events: event: response.created … response.completed"
ANTHROPIC_SSE = "Typed server-sent events: event: message_start … message_stop"
NATIVE_SSE = "Server-sent events: data: {chunk} …"

_ROUTES: tuple[Relay, ...] = (
    *_declare(
        "/v1/chat/completions", "/chat/completions",
        summary="Create a chat completion",
        doc=RouteDoc(ChatCompletionRequest, ChatCompletion, OPENAI_SSE),
    ),
    *_declare(
        "/v1/completions",
        summary="Create a text completion",
        doc=RouteDoc(CompletionRequest, TextCompletion, OPENAI_SSE),
    ),
    *_declare(
        "/completion",
        summary="Complete a prompt (llama.cpp)", ensure_done=True, surface=Surface.NATIVE,
        doc=RouteDoc(NativeCompletionRequest, NativeCompletion, OPENAI_SSE),
    ),
    *_declare(
        "/completions",
        summary="Complete a prompt (llama.cpp; /completion's other name)",
        surface=Surface.NATIVE,
        doc=RouteDoc(NativeCompletionRequest, NativeCompletion, NATIVE_SSE),
    ),
    *_declare(
        "/infill",
        summary="Fill in the middle (code completion)", surface=Surface.NATIVE,
        doc=RouteDoc(InfillRequest, NativeCompletion, NATIVE_SSE),
    ),
    *_declare(
        "/v1/responses", "/responses",
        summary="Create a response (OpenAI Responses)", surface=Surface.RESPONSES,
        doc=RouteDoc(ResponsesRequest, ResponseObject, RESPONSES_SSE),
    ),
    *_declare(
        "/v1/messages",
        summary="Create a message (Anthropic Messages)", surface=Surface.ANTHROPIC,
        doc=RouteDoc(MessagesRequest, MessageReply, ANTHROPIC_SSE),
    ),
    *_declare(
        "/v1/messages/count_tokens",
        summary="Count a message's input tokens (Anthropic)", surface=Surface.ANTHROPIC,
        metered=False, doc=RouteDoc(CountTokensRequest, InputTokensReply),
    ),
    *_declare(
        "/v1/chat/completions/input_tokens", "/chat/completions/input_tokens",
        summary="Count a chat request's input tokens", metered=False,
        doc=RouteDoc(ChatCompletionRequest, InputTokensCount),
    ),
    *_declare(
        "/v1/responses/input_tokens", "/responses/input_tokens",
        summary="Count a Responses request's input tokens", surface=Surface.RESPONSES,
        metered=False, doc=RouteDoc(ResponsesRequest, InputTokensCount),
    ),
    *_declare(
        "/v1/chat/completions/control",
        summary="Steer a running chat completion (end its reasoning)", metered=False,
        checked=False, doc=RouteDoc(ControlRequest, None),
    ),
    *_declare(
        "/apply-template",
        summary="Render chat messages with the model's template", metered=False,
        surface=Surface.NATIVE, doc=RouteDoc(ChatCompletionRequest, ApplyTemplateReply),
    ),
    *_declare(
        "/v1/embeddings",
        summary="Create embeddings", role=Role.EMBEDDING,
        doc=RouteDoc(EmbeddingsRequest, EmbeddingsResponse),
    ),
    *_declare(
        "/embedding", "/embeddings",
        summary="Embed text (llama.cpp)", role=Role.EMBEDDING, surface=Surface.NATIVE,
        doc=RouteDoc(EmbeddingRequest, list[NativeEmbedding]),
    ),
    *_declare(
        "/v1/rerank", "/rerank", "/v1/reranking", "/reranking",
        summary="Rank documents against a query", role=Role.RERANK,
        doc=RouteDoc(RerankRequest, RerankReply),
    ),
    *_declare(
        "/tokenize",
        summary="Tokenize text", metered=False, surface=Surface.NATIVE,
        doc=RouteDoc(TokenizeRequest, TokenizeResponse),
    ),
    *_declare(
        "/detokenize",
        summary="Turn tokens back into text", metered=False, surface=Surface.NATIVE,
        doc=RouteDoc(DetokenizeRequest, DetokenizeResponse),
    ),
    *_declare(
        "/v1/audio/transcriptions", "/audio/transcriptions",
        summary="Transcribe audio (a model with an audio projector)",
        model_from=ModelFrom.FORM, needs="audio", checked=False,
        doc=RouteDoc(TranscriptionForm, Transcription, NATIVE_SSE, multipart=True),
    ),
    *_declare(
        "/props",
        summary="A model's properties (llama-server's)", method="GET",
        model_from=ModelFrom.QUERY, metered=False, checked=False, scrub=True,
        surface=Surface.NATIVE, doc=RouteDoc(None, Props),
    ),
    *_declare(
        "/slots",
        summary="A model's slots and what each is doing", method="GET", admin=True,
        model_from=ModelFrom.QUERY, metered=False, checked=False, scrub=True,
        surface=Surface.NATIVE, doc=RouteDoc(None, list[Slot]),
    ),
    *_declare(
        "/lora-adapters",
        summary="A model's LoRA adapters and their scales", method="GET", admin=True,
        model_from=ModelFrom.QUERY, metered=False, checked=False, scrub=True,
        surface=Surface.NATIVE, doc=RouteDoc(None, list[LoraAdapter]),
    ),
    *_declare(
        "/lora-adapters",
        summary="Set a model's LoRA adapters' scales", admin=True, metered=False,
        model_from=ModelFrom.QUERY, checked=False, scrub=True, surface=Surface.NATIVE,
        doc=RouteDoc(LoraScales, list[LoraAdapter]),
    ),
)  # fmt: skip

RELAYS: Final[Mapping[tuple[str, str], Relay]] = MappingProxyType(
    {(relay.method, relay.path): relay for relay in _ROUTES}
)
RELAYED_PATHS: Final = frozenset(relay.path for relay in _ROUTES)
ANTHROPIC_PATHS: Final = frozenset(r.path for r in _ROUTES if r.surface is Surface.ANTHROPIC)
ADMIN_RELAYS: Final = frozenset((r.method, r.path) for r in _ROUTES if r.admin)

# llama-server's routes the gateway answers itself, or does not expose, and why.
NOT_RELAYED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "GET /health, GET /v1/health": "the gateway's own health (its children's: /api/v2)",
        "GET /metrics": "the gateway's own Prometheus metrics, which cover every child",
        "GET /models, GET /v1/models": "the gateway's own list: every model it can load",
        "GET / (the web UI)": "GET / is the gateway's own (the /api and OpenAI surfaces' root)",
        "POST /props": "changes a child's settings behind the gateway's back",
        "POST /slots/{id}": "saves and restores slots to files on the host",
        "GET /v1/stream, POST /v1/streams/lookup, DELETE /v1/stream": (
            "resumable streams: a stream's id would have to be routed back to its child"
        ),
        "GET/POST /cors-proxy": "fetches any URL from the host; llama-server's web UI only",
        "GET/POST /tools": "runs tools on the host; llama-server's web UI only",
        "POST /models, /models/load, /models/unload, GET /models/sse, DELETE /models": (
            "router mode's own model management: the gateway's is /api/v2/models/{id}/load …"
        ),
        "Vertex AI's predict and health routes": "set up from environment variables, not run",
    }
)


def find_relay(method: str, path: str) -> Relay | None:
    return RELAYS.get((method, path))


def surface_of(path: str) -> Surface:
    """The error surface of a request to ``path``: Anthropic's for its routes and any path
    below them (a 404 there is an Anthropic client's), else OpenAI's."""
    anthropic = path in ANTHROPIC_PATHS or any(path.startswith(f"{p}/") for p in ANTHROPIC_PATHS)
    return Surface.ANTHROPIC if anthropic else Surface.OPENAI
