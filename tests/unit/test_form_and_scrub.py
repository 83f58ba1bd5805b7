"""Two small readers of relayed bodies: the multipart form's ``model`` field (audio
transcriptions; ``surfaces/form.py``) and the host paths cut out of a child's answer
(``redact.scrub_paths``)."""

from __future__ import annotations

import json

import pytest

from supervisor.errors import BadRequest
from supervisor.redact import scrub_paths
from supervisor.surfaces.form import MAX_FIELD, form_field

BOUNDARY = "----form-7MA4YWxkTrZu0gW"
FORM = f"multipart/form-data; boundary={BOUNDARY}".encode()


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body of (name, value, file name or None) parts, as clients write it."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"\r\nContent-Type: audio/wav'
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += value + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


# -- the form's model field ---------------------------------------------------------------


def test_the_field_is_found_among_file_parts() -> None:
    audio = b"RIFF\x00\x01\xff--" + BOUNDARY[:10].encode() + b'\r\nname="model"\r\n\r\nfake'
    body = form(
        ("file", audio, "talk.wav"),
        ("model", b"ignored.wav", "model.wav"),  # a file part of that name is no field
        ("language", b"en", None),
        ("model", b"hear-Q4", None),
    )
    assert form_field(body, FORM, "model") == "hear-Q4"
    assert form_field(body, FORM, "language") == "en"


def test_a_quoted_boundary_and_other_parameters_are_read() -> None:
    content_type = f'Multipart/Form-Data; charset=utf-8; boundary="{BOUNDARY}"'.encode()
    assert form_field(form(("model", b"m", None)), content_type, "model") == "m"


def test_a_missing_or_empty_field_is_none() -> None:
    assert form_field(form(("file", b"RIFF", "a.wav")), FORM, "model") is None
    assert form_field(form(("model", b"", None)), FORM, "model") is None
    assert form_field(b"", FORM, "model") is None
    # Parts after the closing delimiter are no part of the form.
    late = form(("file", b"RIFF", "a.wav")) + form(("model", b"late", None))
    assert form_field(late, FORM, "model") is None


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (b"multipart/form-data", "without a boundary"),
        (b"application/json", "must be multipart/form-data"),
        (b"", "must be multipart/form-data"),
    ],
)
def test_a_body_that_is_no_form_is_a_400(content_type: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        form_field(form(("model", b"m", None)), content_type, "model")
    assert caught.value.status_code == 400


def test_a_field_too_long_or_not_text_is_a_400() -> None:
    assert form_field(form(("model", b"m" * MAX_FIELD, None)), FORM, "model") == "m" * MAX_FIELD
    with pytest.raises(BadRequest, match="too long") as caught:
        form_field(form(("model", b"m" * (MAX_FIELD + 1), None)), FORM, "model")
    assert caught.value.param == "model"
    with pytest.raises(BadRequest, match="not UTF-8"):
        form_field(form(("model", b"\xff\xfe", None)), FORM, "model")


# -- host paths out of answers ------------------------------------------------------------


def test_model_paths_are_cut_to_the_file_name() -> None:
    props = {
        "model_path": "/srv/models/secret/tiny.Q4_1.gguf",
        "model_alias": "tiny.Q4_1",
        "total_slots": 2,
        "mmproj_path": "C:\\Users\\op\\models\\mmproj.gguf",
        "prompt": "read /srv/models/secret/notes.txt",  # a client's own words: not a path key
    }
    assert json.loads(scrub_paths(json.dumps(props).encode())) == {
        "model_path": "tiny.Q4_1.gguf",
        "model_alias": "tiny.Q4_1",
        "total_slots": 2,
        "mmproj_path": "mmproj.gguf",
        "prompt": "read /srv/models/secret/notes.txt",
    }


def test_nested_adapter_paths_are_cut() -> None:
    adapters = [
        {"id": 0, "path": "/home/op/lora/style.gguf", "scale": 0.5},
        {"id": 1, "path": "/home/op/lora/tone dir/", "scale": 1.0},
    ]
    slots = {"slots": [{"params": {"lora": adapters}}]}
    scrubbed = json.loads(scrub_paths(json.dumps(slots).encode()))
    paths = [adapter["path"] for adapter in scrubbed["slots"][0]["params"]["lora"]]
    assert paths == ["style.gguf", "tone dir"]
    assert scrubbed["slots"][0]["params"]["lora"][0]["scale"] == 0.5


def test_templates_and_ordinary_text_are_untouched() -> None:
    answer = {
        "chat_template": "{% for m in messages %}\n/{{ m['role'] }}/{{ m['content'] }}{% endfor %}",
        "content": "see /etc/hosts\nand /var/log/syslog",  # paths in text, on lines of text
        "code": "/* a comment */\nreturn a/b;",  # starts as a path, but a path has no lines
        "route": "/health",
        "relative": "models/tiny.gguf",
        "url": "http://127.0.0.1:8080/v1/models",
        "numbers": [1, 2.5, None, True],
    }
    data = json.dumps(answer).encode()
    assert scrub_paths(data) is data  # nothing to cut: the very bytes come back


@pytest.mark.parametrize("data", [b"", b"not json /srv/models/a.gguf", b'{"a": ', b"\xff"])
def test_an_answer_that_is_not_json_is_unchanged(data: bytes) -> None:
    assert scrub_paths(data) is data
