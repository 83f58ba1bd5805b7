"""The OpenAI Responses surface (/v1/responses): what a failed stream ends with.

Answers and errors otherwise pass through in OpenAI's shapes; a stream of typed events
cannot end with chat's ``data: [DONE]``, so a child's failure mid-stream is told with the
Responses API's own ``error`` event (llama-server numbers no events, so neither does this)."""

from __future__ import annotations

import json

from supervisor.errors import SupervisorError


def error_event(error: SupervisorError) -> bytes:
    payload = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
    return f"event: error\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
