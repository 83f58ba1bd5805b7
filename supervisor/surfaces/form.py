"""The one thing the gateway reads of a multipart form (audio transcriptions): a short text
field, ``model``. The form goes to the child untouched; no file part is decoded."""

from __future__ import annotations

import re

from supervisor.errors import BadRequest

_BOUNDARY = re.compile(rb'boundary="?([^";\s]{1,200})"?', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
MAX_FIELD = 1024  # a model's name is short; anything longer is no name


def form_field(body: bytes, content_type: bytes, name: str) -> str | None:
    """The text of the form's field ``name``, if present; a body that is not a multipart
    form is a 400."""
    boundary = _boundary(content_type)
    delimiter = b"--" + boundary
    wanted = name.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, blank, value = part.partition(b"\r\n\r\n")
        if not blank or _text_field(head) != wanted:
            continue
        value = value.removesuffix(b"\r\n")
        if len(value) > MAX_FIELD:
            raise BadRequest(f"Form field '{name}' is too long", param=name)
        try:
            return value.decode() or None
        except UnicodeDecodeError:
            raise BadRequest(f"Form field '{name}' is not UTF-8", param=name) from None
    return None


def with_field(body: bytes, content_type: bytes, name: str, value: str) -> bytes:
    """The form ``body`` with its text field ``name`` set to ``value`` (added first if it has
    none), every other part as it came: a form relayed to a peer, which knows the model by
    its own name."""
    delimiter = b"--" + _boundary(content_type)
    wanted = name.encode()
    field = b'\r\nContent-Disposition: form-data; name="%b"\r\n\r\n%b\r\n' % (
        wanted,
        value.encode(),
    )
    parts = body.split(delimiter)
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith(b"--"):
            break
        head, blank, _ = part.partition(b"\r\n\r\n")
        if blank and _text_field(head) == wanted:
            parts[index] = head + blank + value.encode() + b"\r\n"
            return delimiter.join(parts)
    if len(parts) < 2:
        return body  # no part at all: nothing a server would read
    return delimiter.join([parts[0], field, *parts[1:]])


def _text_field(head: bytes) -> bytes | None:
    """The name of the text field whose part has ``head``; None for a file or no name."""
    disposition = next(
        (line for line in head.split(b"\r\n") if line.lower().startswith(b"content-disposition:")),
        b"",
    )
    found = _NAME.search(disposition)
    if found is None or b"filename=" in disposition.lower():
        return None
    return found.group(1)


def _boundary(content_type: bytes) -> bytes:
    if not content_type.lower().startswith(b"multipart/form-data"):
        raise BadRequest("Request body must be multipart/form-data")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BadRequest("multipart/form-data without a boundary")
    return found.group(1)
