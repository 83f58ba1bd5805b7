"""The token limit judges every JSON number (issue 21, item 1). llama-server reads a token count
given as 1e6 or 300.0 as an integer, 6.5 as 6 and ``true`` as 1: a float or a boolean once
slipped past ``max_tokens_limit``. Now a boolean or a fraction is a 400 naming the field,
always, and an integral float is judged by its value. A negative count still passes: the child
reads -1 as "none asked" and caps it with its ``--n-predict``, the same limit
(test_security.py checks the argument). On the relay routes (over ASGI and through the relay
lane) and on the surfaces that rebuild bodies (/api, /api/v2), which refuse floats themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from error_format import assert_error_format
from fake_child import FakeChild, Reply
from served import Serve

from supervisor.errors import BadRequest
from supervisor.relay.limits import TOKEN_FIELDS, RequestLimits

MakeGGUF = Callable[..., Path]
MODEL = "tiny.Q4_1"
LIMIT = 6
OVER_OR_NOT_A_COUNT = [1e6, 300.0, 6.5, 0.5, True, False, 7, 7.0, 1e300]
WITHIN = [5.0, 6.0, 0, 0.0, 5, LIMIT, -1, -1.0]  # a negative count: the child's --n-predict
# The relay routes that generate, with a body each takes; every token field on each.
RELAYED = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/completion": {"prompt": "hi"},
}
ANSWER = Reply(json={"choices": [{"index": 0, "text": "hi"}], "content": "hi"})


# -- the check itself ------------------------------------------------------------------------


@pytest.mark.parametrize("field", TOKEN_FIELDS)
def test_under_a_limit_every_number_is_judged(field: str) -> None:
    limits = RequestLimits(max_tokens=LIMIT)
    for value in OVER_OR_NOT_A_COUNT:
        with pytest.raises(BadRequest) as caught:
            limits.check({field: value})
        assert caught.value.param == field, value
        assert f"'{field}'" in caught.value.message, value
    for value in [*WITHIN, None, "1000000", [1e6], {"n": 1e6}]:
        limits.check({field: value})  # strings and other shapes stay the child's to judge


@pytest.mark.parametrize("field", TOKEN_FIELDS)
def test_without_a_limit_only_booleans_and_fractions_are_refused(field: str) -> None:
    for value in (6.5, 0.5, -1.5, True, False, float("inf"), float("nan")):
        with pytest.raises(BadRequest, match="must be an integer") as caught:
            RequestLimits().check({field: value})
        assert caught.value.param == field
    for value in (10**9, 1e6, 300.0, -1, -1.0, 0, "x"):
        RequestLimits().check({field: value})  # the child's own default and checks apply


def test_the_messages_say_what_was_asked_and_what_is_allowed() -> None:
    limits = RequestLimits(max_tokens=LIMIT)
    with pytest.raises(BadRequest) as over:
        limits.check({"max_tokens": 1e6})
    assert over.value.message == "'max_tokens' is 1000000; this gateway allows at most 6"
    with pytest.raises(BadRequest) as fraction:
        limits.check({"n_predict": 6.5})
    assert fraction.value.message == "'n_predict' must be an integer"


# -- through the app --------------------------------------------------------------------------


@pytest.fixture
def client(serve: Serve, make_gguf: MakeGGUF, fake_child: FakeChild) -> Iterator[httpx.Client]:
    make_gguf(f"models/{MODEL}.gguf")
    for path in RELAYED:
        fake_child.answer("POST", path, ANSWER)
    with serve(max_tokens_limit=LIMIT) as http_client:
        yield http_client


def test_relay_routes_judge_floats_and_booleans(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    for path, body in RELAYED.items():
        for field in TOKEN_FIELDS:
            for value in OVER_OR_NOT_A_COUNT:
                asked = {"model": MODEL, **body, field: value}
                reply = client.post(path, json=asked)
                where = f"{path} {field}={value!r}: {reply.status_code} {reply.text}"
                assert reply.status_code == 400, where
                assert_error_format(path, reply.json())
                assert reply.json()["error"]["param"] == field, where
        assert fake_child.received("POST", path) == []


def test_relay_routes_pass_counts_within_the_limit_untouched(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    for path, body in RELAYED.items():
        for field in TOKEN_FIELDS:
            for value in WITHIN:
                sent = json.dumps({"model": MODEL, **body, field: value}).encode()
                reply = client.post(path, content=sent)
                assert reply.status_code == 200, f"{path} {field}={value!r}: {reply.text}"
                assert fake_child.received("POST", path)[-1].body == sent


def test_rebuilding_surfaces_refuse_floats_and_judge_passed_on_counts(
    client: httpx.Client, fake_child: FakeChild
) -> None:
    """/api's options and /api/v2's ``n_predict`` take integers only (as before); a token
    count /api/v2 passes on untouched (``max_tokens`` without ``n_predict``, or
    ``max_completion_tokens``) is judged like a relayed one."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    cases: list[tuple[str, dict[str, Any], str]] = [
        (path, {**chat, "options": {field: value}}, f"options.{field}")
        for path in ("/api/chat", "/api/generate")
        for field in ("max_tokens", "top_k")
        for value in (5.0, 6.5, 1e6, True)
    ]
    v2 = f"/api/v2/chat/{MODEL}"
    cases += [(v2, {**chat, "n_predict": value}, "n_predict") for value in (5.0, 1e6, True)]
    cases += [
        (v2, {**chat, field: value}, field)
        for field in ("max_tokens", "max_completion_tokens")
        for value in (1e6, 300.0, 6.5, True)
    ]
    cases.append((f"/api/v2/models/{MODEL}/load", {"n_ctx": 512.0}, "n_ctx"))
    for path, body, field in cases:
        if path == "/api/generate":
            body = {"model": MODEL, "prompt": "hi", "options": body["options"]}
        reply = client.post(path, json=body)
        where = f"{path} {body}: {reply.status_code} {reply.text}"
        assert reply.status_code == 400, where
        assert_error_format(path, reply.json())
        assert field in reply.text, where
    assert [r.path for r in fake_child.requests if r.method == "POST"] == []
