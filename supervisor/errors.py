"""The one exception hierarchy of llama-supervisor.

Everything the gateway raises on purpose is a ``SupervisorError``; each surface's error formatter
turns one into its own body shape (the OpenAI envelope, or ``{"detail": …}`` for ``/api``).
Lower layers' exceptions (httpx, OSError, gguf) are translated once, where they are caught.

    SupervisorError                 500 server_error
    ├── BadRequest                  400 invalid_request_error
    ├── NotFound                    404 invalid_request_error
    │   ├── ModelNotFound           404 model_not_found
    │   └── SessionNotFound         404 session_not_found
    ├── Unauthorized                401 no API key, or one the gateway does not know
    ├── Forbidden                   403 an inference key on an admin route
    │   └── SourceNotAllowed        403 a pull's address or an import's path the settings forbid
    ├── MethodNotAllowed            405 a route asked with the wrong method
    ├── Conflict                    409 the model file exists, or is being pulled now
    ├── PullFailed                  4xx/5xx a pull or import failed; ``kind`` says how
    ├── PayloadTooLarge             413 a request body over ``max_body_bytes``
    ├── HeadTooLarge                431 a request's line and headers past ``MAX_HEAD_BYTES``
    ├── RequestTimeout              408 a request's head or body came too slowly (``intake``)
    ├── GatewayBusy                 503 (Retry-After) too many connections or unfinished bodies
    ├── QueueFull                   429 (Retry-After) the model's queue is full
    ├── ModelUnavailable            503 (Retry-After) model not loaded and not loadable now
    │   ├── QueueTimeout            503 no slot freed within the queue's maximum wait
    │   ├── InsufficientMemory      503 the model does not fit, and nothing can be evicted
    │   └── PeerUnavailable         503 the peer serving the model is down (or gone)
    ├── ModelLoadError              503 the child failed to start; carries its last stderr lines
    ├── BackendError                502 the child failed or vanished while serving a request
    ├── ChildRejected               4xx/5xx as the child said, for surfaces that reshape errors
    ├── SessionStoreError           503 (Retry-After) the sessions database cannot be used
    ├── ShuttingDown                503 (Retry-After) the gateway is draining after SIGTERM
    ├── DemoModelError              500 the demo model could not be fetched or failed its hash
    ├── IllegalTransition           500 a lifecycle bug: a state change the machine forbids
    ├── ConfigError                 500 bad configuration (raised at start-up, not per request)
    ├── GatewayUnreachable          (CLI side) no gateway answers at the admin client's URL
    └── AdminRequestFailed          (CLI side) the gateway refused an admin request: its status
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from supervisor.redact import redact_paths

# Session ids clients send are free text: only ids of this form are stored or echoed.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class SupervisorError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(SupervisorError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class NotFound(SupervisorError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"Model not found: {name}", param="model")
        self.name = name


class ModelUnavailable(SupervisorError):
    status_code = 503
    error_type = "unavailable_error"
    code = "model_not_loaded"
    retry_after = 5


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        # Only echo ids of the valid form: a malformed one may be huge or hostile.
        shown = session_id if SESSION_ID.fullmatch(session_id) else "<invalid id>"
        super().__init__(f"Session not found: {shown}", param="session_id")
        self.session_id = session_id


class Unauthorized(SupervisorError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(SupervisorError):
    status_code = 403
    error_type = "permission_error"
    code = "admin_key_required"


class SourceNotAllowed(Forbidden):
    """A pull from an address, or an import from a path, that the settings forbid."""

    code = "source_not_allowed"


class Conflict(SupervisorError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


# How a pull or import failed (its error event's ``type``), and the status it answers with
# where it is not streamed (``POST /v1/import``).
PULL_FAILURES: Mapping[str, int] = MappingProxyType(
    {
        "checksum_mismatch": 400,
        "not_gguf": 400,
        "too_large": 413,
        "disk_full": 507,
        "cancelled": 409,
        "download_failed": 502,
    }
)


class PullFailed(SupervisorError):
    """A pull or import that did not bring a model in: ``kind`` is one of ``PULL_FAILURES``
    (also the error's ``code``), the type a pull's error event carries."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = kind
        self.status_code = PULL_FAILURES[kind]
        self.error_type = "invalid_request_error" if self.status_code < 500 else "server_error"


class ShuttingDown(SupervisorError):
    status_code = 503
    error_type = "unavailable_error"
    code = "shutting_down"
    retry_after = 10


class MethodNotAllowed(SupervisorError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(SupervisorError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than the gateway's limit of {limit} bytes")
        self.limit = limit


class HeadTooLarge(SupervisorError):
    status_code = 431
    error_type = "invalid_request_error"
    code = "request_header_too_large"


class RequestTimeout(SupervisorError):
    status_code = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class GatewayBusy(SupervisorError):
    status_code = 503
    error_type = "unavailable_error"
    code = "gateway_busy"
    retry_after = 1


class SessionStoreError(SupervisorError):
    status_code = 503
    error_type = "unavailable_error"
    code = "session_store_unavailable"
    retry_after = 5


class DemoModelError(SupervisorError):
    code = "demo_model_error"


class QueueFull(SupervisorError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"
    retry_after = 1


class QueueTimeout(ModelUnavailable):
    code = "queue_timeout"


class InsufficientMemory(ModelUnavailable):
    code = "insufficient_memory"
    retry_after = 30


class PeerUnavailable(ModelUnavailable):
    """A request for a peer's model while that peer is down, or no longer configured: a quick
    503, never a wait on a dead address."""

    code = "peer_unavailable"

    def __init__(self, peer: str, model: str, reason: str = "is down") -> None:
        super().__init__(f"Peer '{peer}' {reason}: model '{model}' is unavailable", param="model")
        self.peer = peer
        self.model = model


class ModelLoadError(SupervisorError):
    status_code = 503
    error_type = "unavailable_error"
    code = "model_load_failed"
    retry_after = 5

    def __init__(self, model: str, reason: str, stderr_tail: list[str] | None = None) -> None:
        tail = list(stderr_tail or [])
        message = f"Model '{model}' failed to load: {reason}"
        if tail:
            message += "\n" + "\n".join(tail)
        super().__init__(message)  # str(error), for the gateway's log: every path whole
        self.message = redact_paths(message)  # what clients read: no host paths
        self.model = model
        self.reason = reason
        self.stderr_tail = tail


class BackendError(SupervisorError):
    status_code = 502
    error_type = "server_error"
    code = "backend_error"


class ChildRejected(SupervisorError):
    """llama-server refused a request (a bad parameter, say): its status and words, for a
    surface that answers in its own error format."""

    def __init__(self, status_code: int, answer: object) -> None:
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(str(message or f"the model server answered {status_code}"))
        self.status_code = status_code
        self.error_type = "invalid_request_error" if status_code < 500 else "server_error"
        self.code = "model_error"


class IllegalTransition(SupervisorError):
    code = "illegal_transition"


class ConfigError(SupervisorError):
    code = "config_error"


class GatewayUnreachable(SupervisorError):
    """The CLI's admin client found no gateway at its URL (connection refused, unknown host)."""

    code = "gateway_unreachable"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no gateway at {url}: is `llama-supervisor serve` running? ({reason})")
        self.url = url


class AdminRequestFailed(SupervisorError):
    """The gateway answered an admin request with an error (``status_code`` is its HTTP status;
    0 when the exchange broke off), or broke off the exchange: its message, for the CLI.
    ``reason`` is the gateway's error code when it gave one (``admin_key_required``,
    ``source_not_allowed`` …): a 403 about keys and a 403 about a pull's address read alike
    otherwise."""

    code = "admin_request_failed"

    def __init__(self, status_code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason
