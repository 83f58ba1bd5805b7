"""Admission (supervisor/http/admission.py), the one judge of a request's head for both ways
in, with literal heads; and the error answers both ways write (http/error_responses.py), the
same bytes as Starlette's JSONResponse."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.responses import JSONResponse

from supervisor.config import Settings
from supervisor.errors import (
    Forbidden,
    ModelUnavailable,
    PayloadTooLarge,
    ShuttingDown,
    SupervisorError,
    Unauthorized,
)
from supervisor.http.admission import Admission, declared_length
from supervisor.http.auth import KeyRing
from supervisor.http.drain import Drain
from supervisor.http.error_responses import error_answer, refusal_answer

CHAT = "/v1/chat/completions"
BEARER = [(b"authorization", b"Bearer k-1")]
OPEN = KeyRing()


def admission(keys: KeyRing = OPEN, limit: int = 100) -> Admission:
    settings = Settings(
        models_dirs=[Path("/nowhere")], llama_server=Path(sys.executable), max_body_bytes=limit
    )
    judge = Admission(Drain(grace_s=1))
    judge.attach(SimpleNamespace(keys=keys, settings=settings))
    return judge


def test_an_open_gateway_admits_what_is_within_the_limit() -> None:
    judge = admission()
    assert judge.refusal("POST", CHAT, [], 100) is None
    assert judge.refusal("POST", CHAT, [], None) is None  # chunked: counted as it is read
    too_large = judge.refusal("POST", CHAT, [], 101)
    assert isinstance(too_large, PayloadTooLarge) and too_large.limit == 100
    assert judge.body_limit == 100


def test_keys_are_checked_before_the_length() -> None:
    judge = admission(KeyRing(inference=(b"k-1",)))
    assert isinstance(judge.refusal("POST", CHAT, [], 10**9), Unauthorized)
    assert isinstance(judge.refusal("POST", CHAT, [(b"x-api-key", b"nope")], 1), Unauthorized)
    assert isinstance(judge.refusal("POST", "/api/v2/reload", BEARER, 1), Forbidden)
    assert judge.refusal("POST", CHAT, BEARER, 1) is None
    assert isinstance(judge.refusal("POST", CHAT, BEARER, 101), PayloadTooLarge)
    assert judge.refusal("GET", "/health", [], None) is None  # public


def test_a_drain_or_an_unbound_gateway_refuses_everything() -> None:
    judge = admission()
    judge.drain.begin()
    refused = judge.refusal("GET", "/health", [], None)
    assert isinstance(refused, ShuttingDown) and refused.message == "The gateway is shutting down"
    unbound = Admission(Drain(grace_s=1))
    assert isinstance(unbound.refusal("GET", "/health", [], None), ShuttingDown)
    assert unbound.body_limit == 0


def test_the_declared_length_is_read_from_the_head() -> None:
    assert declared_length([(b"host", b"x"), (b"content-length", b"12")]) == 12
    assert declared_length([(b"transfer-encoding", b"chunked")]) is None
    assert declared_length([(b"content-length", b"twelve")]) is None


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (CHAT, Unauthorized("Missing API key")),
        ("/v1/messages", ModelUnavailable("Modèle « x » indisponible")),
        ("/api/chat", PayloadTooLarge(10)),
        ("/api/v2/models", SupervisorError("Internal error in the gateway")),
    ],
)
def test_an_error_answer_is_what_a_json_response_would_send(
    path: str, error: SupervisorError
) -> None:
    answer = error_answer(path, error)
    retry = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    expected = JSONResponse(json.loads(answer.body), error.status_code, headers=retry)
    assert answer.status == expected.status_code
    assert answer.headers == expected.raw_headers
    assert answer.body == expected.body


def test_refusals_say_how_to_authenticate_or_close_the_connection() -> None:
    def extra(error: SupervisorError) -> list[tuple[bytes, bytes]]:
        return refusal_answer(CHAT, error).headers[len(error_answer(CHAT, error).headers) :]

    assert extra(Unauthorized("Invalid API key")) == [(b"www-authenticate", b"Bearer")]
    assert extra(ShuttingDown("The gateway is shutting down")) == [(b"connection", b"close")]
    assert extra(PayloadTooLarge(10)) == [(b"connection", b"close")]
    assert extra(Forbidden("This route needs an admin key")) == []
