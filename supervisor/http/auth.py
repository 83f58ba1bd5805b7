"""API keys: which routes need which key, and the check itself.

Two kinds of key: inference keys reach every model route; admin keys reach everything,
including the admin routes (load, unload, swap, reload, logs, pull and import, the activity
log, a child's slots and LoRA adapters), the host's figures (``/api/v2/metrics``,
``/v1/stats``) and the peers (``/v1/peers``). No key configured at all means the gateway is
open, as before keys existed.
``/health`` (both forms), the API docs and the console's files (``/ui/``: the page asks for a
key itself) stay public, so probes and people can always find out what is there.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import Settings
from supervisor.errors import ConfigError, Forbidden, Unauthorized
from supervisor.relay.table import ADMIN_RELAYS


class Access(enum.IntEnum):
    PUBLIC = 0
    INFERENCE = 1
    ADMIN = 2


PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/v1/health",
        "/api/v2/health",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
CONSOLE = "/ui"  # the web console's page and files (supervisor/console/)
# Broad on purpose: anything that could route to an admin endpoint (a model id with odd
# characters included) is classed admin; a stricter pattern could let one slip by as inference.
ADMIN_PATH = re.compile(
    r"^/api/(?:v2/(?:reload|activity(?:/.*)?|metrics/history|models/pulls?(?:/.*)?)"
    r"|(?:v2/)?models/.+/(?:load|unload|swap|logs(?:/.*)?))$"
)
# The host's own figures (CPU, memory, GPU) and the peers' addresses (``/v1/peers``): for
# operators, not for every inference key; bringing a model in (``/v1/import``); and the
# relayed routes declared admin (``relay/table.Relay.admin``: a child's slots, its LoRA
# adapters), whatever the method.
ADMIN_READS = frozenset(
    {"/api/v2/metrics", "/v1/stats", "/v1/import", "/v1/peers"} | {path for _, path in ADMIN_RELAYS}
)


def required_access(method: str, path: str) -> Access:
    """What a request to ``path`` needs. Pure: tested with literal paths."""
    trimmed = path.rstrip("/") or "/"
    if method in ("GET", "HEAD") and (
        trimmed in PUBLIC_PATHS or trimmed == CONSOLE or trimmed.startswith(CONSOLE + "/")
    ):
        return Access.PUBLIC
    if trimmed in ADMIN_READS or ADMIN_PATH.match(trimmed):
        return Access.ADMIN
    return Access.INFERENCE


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer …`` or ``x-api-key``, if any (header names lower-case)."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


@dataclass(frozen=True)
class KeyRing:
    inference: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    @property
    def open(self) -> bool:
        return not self.inference and not self.admin

    def access_of(self, key: str | None) -> Access:
        """The access a key grants. Every configured key is compared, in constant time, so the
        time taken says nothing about which key (or how much of one) matched."""
        if key is None:
            return Access.PUBLIC
        given = key.encode()
        is_admin = _matches_any(given, self.admin)
        is_inference = _matches_any(given, self.inference)
        if is_admin:
            return Access.ADMIN
        return Access.INFERENCE if is_inference else Access.PUBLIC

    def check(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Raise Unauthorized (no or unknown key) or Forbidden (too weak a key)."""
        if self.open:
            return
        needed = required_access(method, path)
        if needed is Access.PUBLIC:
            return
        key = presented_key(headers)
        granted = self.access_of(key)
        if granted is Access.PUBLIC:
            raise Unauthorized(
                "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
                if key is None
                else "Invalid API key"
            )
        if granted < needed:
            raise Forbidden("This route needs an admin key")


def _matches_any(given: bytes, keys: Iterable[bytes]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def load_keys(settings: Settings) -> KeyRing:
    """Keys from the settings (config file or environment) and the key file."""
    inference = [k.get_secret_value() for k in settings.api_keys]
    admin = [k.get_secret_value() for k in settings.admin_keys]
    if settings.api_keys_file is not None:
        file_inference, file_admin = parse_key_file(settings.api_keys_file)
        inference += file_inference
        admin += file_admin
    for key in inference + admin:
        if not key or key != key.strip():
            raise ConfigError("API keys must be non-empty and have no surrounding spaces")
    return KeyRing(
        inference=tuple(k.encode() for k in inference), admin=tuple(k.encode() for k in admin)
    )


def parse_key_file(path: Path) -> tuple[list[str], list[str]]:
    """Lines ``admin <key>``, ``inference <key>`` or a bare key (inference); ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    inference: list[str] = []
    admin: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) == 1:
            inference.append(parts[0])
        elif len(parts) == 2 and parts[0] in ("admin", "inference"):
            (admin if parts[0] == "admin" else inference).append(parts[1])
        else:
            raise ConfigError(
                f"{path}, line {number}: expected 'admin <key>', 'inference <key>' or a key"
            )
    return inference, admin
