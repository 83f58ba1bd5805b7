"""The name a pulled or imported model is stored under, and the sha256 a client may give.

A name is a base name of safe characters ending in ``.gguf`` that the registry would serve
as a model (no projector, no later shard of a split model): it is joined to the models
directory, so nothing path-like may pass."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from supervisor.errors import BadRequest
from supervisor.models.registry import is_model_file_name, is_safe_name

MAX_NAME = 200
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def checked_name(name: str, param: str = "file") -> str:
    """``name`` if a model may be stored under it; else a 400 that says what is wrong."""
    if not is_safe_name(name) or not _SAFE_NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise BadRequest(
            f"{param}: a file name of letters, digits and . _ + - (not starting with . or -), "
            f"at most {MAX_NAME} characters",
            param=param,
        )
    if not name.lower().endswith(".gguf"):
        raise BadRequest(f"{param}: a model file's name ends in .gguf", param=param)
    if not is_model_file_name(name):
        raise BadRequest(
            f"{param}: {name} would not be served as a model (a projector, or a later shard of "
            "a split model)",
            param=param,
        )
    return name


def name_from_url(url: str) -> str:
    """The name a pull of ``url`` stores its file under when the client gives none: the
    last path segment, decoded, with unsafe characters replaced by ``_``."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    cleaned = _UNSAFE_CHARS.sub("_", segment).lstrip("._-")
    if not cleaned:
        raise BadRequest("file: the URL names no file; give one in 'file'", param="file")
    return checked_name(cleaned)


def target_name(given: object, url: str) -> str:
    """``file`` from a request body (a string, or absent), else the URL's."""
    if given is None:
        return name_from_url(url)
    if not isinstance(given, str):
        raise BadRequest("file: must be a string", param="file")
    return checked_name(given)


def checked_sha256(given: object) -> str | None:
    """A request's ``sha256``: 64 hex digits (lower-cased), or absent."""
    if given is None:
        return None
    if not isinstance(given, str) or not _SHA256.fullmatch(given):
        raise BadRequest("sha256: 64 hexadecimal digits", param="sha256")
    return given.lower()
