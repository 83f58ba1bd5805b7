"""What a pull or an import asks, read from its JSON body: pure, tested with literal dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor.errors import BadRequest
from supervisor.models.pulls.names import checked_sha256, target_name
from supervisor.models.pulls.source import expand_url

PULL_FIELDS = frozenset({"url", "sha256", "file"})
IMPORT_FIELDS = frozenset({"path", "url", "sha256", "file", "stream"})


@dataclass(frozen=True)
class PullRequest:
    url: str  # as fetched: hf:// expanded, credentials kept
    file: str  # the name it is stored under, checked
    sha256: str | None


@dataclass(frozen=True)
class ImportRequest:
    path: str
    file: str | None  # unchecked here: without it, the name comes from the source file
    sha256: str | None


def parse_pull(body: dict[str, Any]) -> PullRequest:
    """``{"url", "sha256"?, "file"?}``; a 400 for anything else."""
    _only(body, PULL_FIELDS)
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise BadRequest("url: a string is required", param="url")
    expanded = expand_url(url)
    sha256 = checked_sha256(body.get("sha256"))
    return PullRequest(expanded, target_name(body.get("file"), expanded), sha256)


def parse_import(body: dict[str, Any]) -> ImportRequest | PullRequest:
    """``{"path", "sha256"?, "file"?}``, or a pull's body (``stream`` aside, which the
    route reads)."""
    _only(body, IMPORT_FIELDS)
    if ("path" in body) == ("url" in body):
        raise BadRequest("one of path and url is required", param="path")
    if not isinstance(body.get("stream", False), bool):
        raise BadRequest("stream: must be true or false", param="stream")
    if "url" in body:
        return parse_pull({key: value for key, value in body.items() if key != "stream"})
    path, file = body["path"], body.get("file")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise BadRequest("path: a file path is required", param="path")
    if file is not None and not isinstance(file, str):
        raise BadRequest("file: must be a string", param="file")
    return ImportRequest(path, file, checked_sha256(body.get("sha256")))


def _only(body: dict[str, Any], fields: frozenset[str]) -> None:
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadRequest(f"unknown field: {unknown[0]}", param=unknown[0])
