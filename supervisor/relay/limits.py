"""Per-request limits on what a client may ask a model for: prompt length, tokens to
generate, stop sequences. Pure: checked on the request's JSON (as the surface sent it, or as
the gateway is about to send it upstream), with a 400 that names the field.

Bodies relayed untouched are only read here. A request that names no token limit is capped by
the child itself: ``--n-predict`` (children/argv.py) is llama-server's default for requests
that set none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from supervisor.config import Settings
from supervisor.errors import BadRequest

# OpenAI's and Anthropic's, the Responses API's, llama.cpp's native.
TOKEN_FIELDS: tuple[str, ...] = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n_predict",
)
# Where a prompt's text may be: OpenAI chat and completions, embeddings, llama.cpp's native;
# Anthropic's and the Responses API's instructions; infill's code around the gap; rerank's.
PROMPT_FIELDS: tuple[str, ...] = (
    "messages", "prompt", "input", "content", "system", "instructions",
    "input_prefix", "input_suffix", "input_extra", "query", "documents",
)  # fmt: skip
# The OpenAI surface (/v1): "Up to 4 sequences where generation stops", as OpenAI's own API.
OPENAI_MAX_STOP = 4


@dataclass(frozen=True)
class RequestLimits:
    max_tokens: int | None = None
    max_prompt_chars: int | None = None
    max_stop: int | None = None

    @classmethod
    def of(cls, settings: Settings, *, openai_stop: bool = False) -> RequestLimits:
        """The configured limits; ``openai_stop`` adds the OpenAI surface's stop-list limit."""
        return cls(
            max_tokens=settings.max_tokens_limit,
            max_prompt_chars=settings.max_prompt_chars,
            max_stop=OPENAI_MAX_STOP if openai_stop else None,
        )

    def check(self, data: Mapping[str, Any]) -> None:
        """Raise BadRequest when ``data`` asks for more than the limits allow."""
        limit = self.max_tokens
        for field in TOKEN_FIELDS:
            value = data.get(field)
            # The usual request: no count, or an integer within the limit (a bool is no int).
            if value is None or (type(value) is int and (limit is None or value <= limit)):
                continue
            self._check_tokens(field, value)
        if self.max_prompt_chars is not None:
            try:
                chars = sum(text_length(data.get(field)) for field in PROMPT_FIELDS)
            except RecursionError as exc:
                raise BadRequest("Request body is nested too deeply") from exc
            if chars > self.max_prompt_chars:
                raise BadRequest(
                    f"The prompt is {chars} characters long; this gateway allows at most "
                    f"{self.max_prompt_chars}",
                    param=next((f for f in PROMPT_FIELDS if data.get(f) is not None), None),
                )
        stop = data.get("stop")
        if self.max_stop is not None and isinstance(stop, list) and len(stop) > self.max_stop:
            raise BadRequest(
                f"'stop' has {len(stop)} sequences; at most {self.max_stop} are allowed",
                param="stop",
            )

    def _check_tokens(self, field: str, value: object) -> None:
        """A token count is judged whatever JSON number it is: llama-server reads 1e6 and
        300.0 as integers, 6.5 as 6 and ``true`` as 1, so none may slip past the limit. A
        boolean or a fraction is refused, limit or not (OpenAI's API refuses them too).
        Negative counts stay the child's: it reads -1 as "none asked" and then applies its
        ``--n-predict``, which is this limit (children/argv.py). So do strings."""
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise BadRequest(f"'{field}' must be an integer", param=field)
        limit = self.max_tokens
        if limit is not None and isinstance(value, int | float) and value > limit:
            raise BadRequest(
                f"'{field}' is {int(value)}; this gateway allows at most {limit}", param=field
            )


class Limits:
    """The settings' request limits, made once per settings rather than per request: every
    surface's (``general``), and the /v1 routes' (``openai``, with the OpenAI surface's
    stop-list limit). A reload replaces both (``apply``)."""

    general: RequestLimits
    openai: RequestLimits

    def __init__(self, settings: Settings) -> None:
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        self.general = RequestLimits.of(settings)
        self.openai = RequestLimits.of(settings, openai_stop=True)

    def of(self, *, openai_stop: bool) -> RequestLimits:
        return self.openai if openai_stop else self.general


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def text_length(value: object) -> int:
    """Characters of text in a prompt field, however nested: strings count their length,
    token ids one each, messages and content parts the text they carry (images' data URLs
    included: they are prompt input too)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(text_length(item) for key, item in value.items() if key not in _NOT_TEXT)
    return 1 if _is_int(value) else 0


# Message and content-part keys that name things rather than carry prompt text.
_NOT_TEXT = frozenset({"role", "type", "name", "tool_call_id", "id", "detail"})
