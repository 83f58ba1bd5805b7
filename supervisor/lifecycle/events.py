"""What the lifecycle tells observers (the Prometheus metrics): loads, restarts, evictions,
swaps and unloads. The manager and its models call these at the moment each happens; the
default does nothing, so the lifecycle needs no observer to work or to be tested."""

from __future__ import annotations

from typing import Protocol

from supervisor.children.spec import Role


class LifecycleEvents(Protocol):
    def load_finished(self, model: str, role: Role, seconds: float, ok: bool) -> None:
        """A child was started for ``model`` (any reason: load, restart, swap) and became
        ready (``ok``) or failed, after ``seconds``."""

    def restarted(self, model: str, role: Role) -> None:
        """A restart attempt of a child that died (or stopped answering) begins."""

    def evicted(self, model: str) -> None:
        """An idle model is about to be unloaded to make room for another."""

    def swapped(self, model: str, role: Role, mode: str, seconds: float) -> None:
        """A swap finished; ``mode`` as in SwapReport."""

    def unloaded(self, model: str, role: Role) -> None:
        """A child was stopped on purpose (unload, eviction, idle TTL, removal)."""


class NoEvents:
    """Observes nothing."""

    def load_finished(self, model: str, role: Role, seconds: float, ok: bool) -> None:
        pass

    def restarted(self, model: str, role: Role) -> None:
        pass

    def evicted(self, model: str) -> None:
        pass

    def swapped(self, model: str, role: Role, mode: str, seconds: float) -> None:
        pass

    def unloaded(self, model: str, role: Role) -> None:
        pass
