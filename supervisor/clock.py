"""Time as the gateway tells it: epoch seconds shown as ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with seconds precision: ``2024-01-15T10:30:00Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
