"""systemd's notify protocol (sd_notify(3)): a datagram to ``$NOTIFY_SOCKET``, no library.

READY=1 once listening, WATCHDOG=1 while the event loop turns (when systemd set
``WATCHDOG_USEC``), RELOADING=1 around a configuration reload, STOPPING=1 on the way out.
Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

LOG = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # A leading "@" names a Linux abstract socket, whose real name starts with a NUL.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec else None
        self._last_watchdog = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 and for_us else None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if there is nowhere to send."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            LOG.warning("sd_notify to %r failed: %s", self._address, exc)
            return False
        return True

    def ready(self) -> None:
        self.notify("READY=1", f"MAINPID={os.getpid()}", "STATUS=Serving")

    def reloading(self) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=Draining in-flight requests")

    def watchdog_tick(self, now: float) -> None:
        """Called on every turn of the server's loop: pets the watchdog at half its period."""
        interval = self.watchdog_interval_s
        if interval is not None and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")
