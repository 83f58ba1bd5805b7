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
        if not blank:
            continue
        disposition = next(
            (
                line
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            b"",
        )
        found = _NAME.search(disposition)
        if found is None or found.group(1) != wanted or b"filename=" in disposition.lower():
            continue
        value = value.removesuffix(b"\r\n")
        if len(value) > MAX_FIELD:
            raise BadRequest(f"Form field '{name}' is too long", param=name)
        try:
            return value.decode() or None
        except UnicodeDecodeError:
            raise BadRequest(f"Form field '{name}' is not UTF-8", param=name) from None
    return None


def _boundary(content_type: bytes) -> bytes:
    if not content_type.lower().startswith(b"multipart/form-data"):
        raise BadRequest("Request body must be multipart/form-data")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BadRequest("multipart/form-data without a boundary")
    return found.group(1)
