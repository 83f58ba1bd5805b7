"""A small typed client for a running gateway's admin API (/api/v2), used by the CLI.

Synchronous httpx: a command does one request at a time (plus, for ``models load``, a status
poll beside it). The transport is a parameter so tests swap in an ``httpx.MockTransport``.
httpx's exceptions are translated once, in ``_translated``, into ``GatewayUnreachable`` (nothing
answers at the URL) or ``AdminRequestFailed`` (the gateway refused, or the exchange broke off).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote

import httpx

from supervisor.errors import AdminRequestFailed, GatewayUnreachable

# Status and list requests answer at once; loads, swaps, unloads (which drain in-flight
# requests) and reloads take as long as the gateway's own limits allow, so no read timeout.
QUICK = httpx.Timeout(30.0)
UNBOUNDED = httpx.Timeout(30.0, read=None)


@dataclass(frozen=True)
class LogLine:
    """One line of a model's llama-server output, as the gateway keeps it."""

    time: str
    role: str
    pid: int | None
    line: str

    @classmethod
    def from_json(cls, item: Any) -> LogLine:
        if not isinstance(item, dict):
            raise AdminRequestFailed(
                0, f"the gateway sent a log line that is not an object: {item!r}"
            )
        pid = item.get("pid")
        return cls(
            time=str(item.get("time", "")),
            role=str(item.get("role", "")),
            pid=pid if isinstance(pid, int) else None,
            line=str(item.get("line", "")),
        )

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "role": self.role, "pid": self.pid, "line": self.line}


def normalise_url(url: str) -> str:
    """``localhost:8080`` and ``http://host:8080/`` both become a base URL without the slash."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Each server-sent event in ``lines`` (a stream's text lines, without their line ends) as
    ``(name, data)``: the name ``message`` when the event names none, as the SSE format says.
    Comment lines (``:`` keepalives) and other fields are skipped; an event's several ``data``
    lines are joined with newlines; an event without data is no event."""
    name = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value or "message"
    if data:
        yield name, "\n".join(data)


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event in ``lines`` (see ``sse_events``)."""
    for _, data in sse_events(lines):
        yield data


def error_message(response: httpx.Response) -> str:
    """The gateway's own words for a failed request: ``{"error": {"message"}}`` on /api/v2,
    ``{"detail"}`` elsewhere, else the start of the body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:500]


def error_reason(response: httpx.Response) -> str | None:
    """The gateway's error code (``{"error": {"code"}}``), if its answer has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else None


@dataclass(frozen=True)
class PullEvent:
    """One event of a pull's stream: ``progress``, ``done`` or ``error`` and its data."""

    name: str
    data: dict[str, Any]

    @classmethod
    def parse(cls, name: str, data: str) -> PullEvent:
        try:
            item = json.loads(data)
        except ValueError as exc:
            raise AdminRequestFailed(0, f"the gateway sent a bad pull event: {data!r}") from exc
        if not isinstance(item, dict):
            raise AdminRequestFailed(
                0, f"the gateway sent a pull event that is not an object: {item!r}"
            )
        return cls(name, item)

    @property
    def pull_id(self) -> str | None:
        value = self.data.get("id")
        return None if value is None else str(value)


class AdminClient:
    """The admin API of the gateway at ``url``; ``api_key`` goes out as a bearer token."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalise_url(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self._http = httpx.Client(
                base_url=self.url, headers=headers, timeout=QUICK, transport=transport
            )
        except httpx.InvalidURL as exc:
            raise GatewayUnreachable(self.url, f"not a usable URL: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the admin routes -------------------------------------------------------------------

    def list_models(self) -> dict[str, Any]:
        """``GET /api/v2/models``: ``available_models`` and ``loaded_models``."""
        return self._json("GET", "/api/v2/models")

    def model(self, model_id: str) -> dict[str, Any]:
        """``GET /api/v2/models/{id}``: one model, its ``status`` word and ``state`` details."""
        return self._json("GET", _model_path(model_id))

    def load(self, model_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST …/load``: answers once the model is ready (or could not load)."""
        return self._json("POST", _model_path(model_id, "load"), params or {}, UNBOUNDED)

    def unload(self, model_id: str) -> dict[str, Any]:
        return self._json("POST", _model_path(model_id, "unload"), None, UNBOUNDED)

    def swap(
        self, model_id: str, path: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST …/swap``: hot swap to ``path`` (absolute, or relative to a models directory
        on the gateway's host)."""
        body = {"path": path, **(params or {})}
        return self._json("POST", _model_path(model_id, "swap"), body, UNBOUNDED)

    def reload(self) -> dict[str, Any]:
        """``POST /api/v2/reload``: ``swapped``, ``unloaded`` and ``added`` model ids."""
        return self._json("POST", "/api/v2/reload", None, UNBOUNDED)

    def logs(self, model_id: str, lines: int) -> list[LogLine]:
        """The last ``lines`` lines of the model's llama-server output."""
        body = self._json("GET", _model_path(model_id, "logs"), params={"lines": lines})
        items = body.get("lines")
        if not isinstance(items, list):
            raise AdminRequestFailed(0, "the gateway's log answer has no 'lines' list")
        return [LogLine.from_json(item) for item in items]

    def follow_logs(self, model_id: str, lines: int) -> Iterator[LogLine]:
        """The last ``lines`` lines, then each new one as it comes, until the stream ends."""
        path = _model_path(model_id, "logs/stream")
        with (
            self._translated(),
            self._http.stream("GET", path, params={"lines": lines}, timeout=UNBOUNDED) as reply,
        ):
            if reply.is_error:
                reply.read()
                raise _refusal(reply)
            for data in sse_data(reply.iter_lines()):
                try:
                    item = json.loads(data)
                except ValueError as exc:
                    raise AdminRequestFailed(
                        0, f"the gateway sent a bad log event: {data!r}"
                    ) from exc
                yield LogLine.from_json(item)

    def pull(
        self, url: str, sha256: str | None = None, file: str | None = None
    ) -> Generator[PullEvent]:
        """``POST /api/v2/models/pull``: the pull's events as they come (``progress`` a few
        times a second, then ``done`` or ``error``). A refusal before the stream (bad URL, a
        private address, the file already there) raises ``AdminRequestFailed``. Leaving the
        stream early does not stop the pull on the gateway: ``cancel_pull`` does."""
        body = _without_none({"url": url, "sha256": sha256, "file": file})
        with (
            self._translated(),
            self._http.stream("POST", "/api/v2/models/pull", json=body, timeout=UNBOUNDED) as reply,
        ):
            if reply.is_error:
                reply.read()
                raise _refusal(reply)
            for name, data in sse_events(reply.iter_lines()):
                yield PullEvent.parse(name, data)

    def pulls(self) -> list[dict[str, Any]]:
        """``GET /api/v2/models/pulls``: the pulls running now."""
        items = self._json("GET", "/api/v2/models/pulls").get("data")
        if not isinstance(items, list):
            raise AdminRequestFailed(0, "the gateway's pull list has no 'data' list")
        return [item for item in items if isinstance(item, dict)]

    def cancel_pull(self, pull_id: str) -> dict[str, Any]:
        """``DELETE /api/v2/models/pulls/{id}``: stop a running pull (404 once it ended)."""
        return self._json("DELETE", f"/api/v2/models/pulls/{quote(pull_id, safe='')}")

    def import_model(
        self, path: str, sha256: str | None = None, file: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/import``: copy a ``.gguf`` from one of the gateway's ``import_dirs`` into
        its models directory; answers once it is checked and served (a big file takes a while)."""
        body = _without_none({"path": path, "sha256": sha256, "file": file})
        return self._json("POST", "/v1/import", body, UNBOUNDED)

    # --- plumbing ---------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: httpx.Timeout = QUICK,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self._translated():
            reply = self._http.request(method, path, json=body, params=params, timeout=timeout)
        if reply.is_error:
            raise _refusal(reply)
        try:
            answer = reply.json()
        except ValueError as exc:
            raise AdminRequestFailed(
                reply.status_code, f"{method} {path}: the gateway's answer is not JSON"
            ) from exc
        if not isinstance(answer, dict):
            raise AdminRequestFailed(reply.status_code, f"{method} {path}: unexpected answer")
        return answer

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """httpx's transport errors as this project's: no tracebacks for expected failures."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise GatewayUnreachable(self.url, _reason(exc)) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise GatewayUnreachable(
                self.url, "the URL must start with http:// or https://"
            ) from exc
        except httpx.TimeoutException as exc:
            raise AdminRequestFailed(
                0, f"the gateway at {self.url} did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            raise AdminRequestFailed(
                0, f"the connection to the gateway at {self.url} broke: {_reason(exc)}"
            ) from exc


def _model_path(model_id: str, action: str | None = None) -> str:
    path = f"/api/v2/models/{quote(model_id, safe='')}"
    return f"{path}/{action}" if action else path


def _refusal(reply: httpx.Response) -> AdminRequestFailed:
    return AdminRequestFailed(reply.status_code, error_message(reply), error_reason(reply))


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
