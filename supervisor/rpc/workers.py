"""The RPC workers a model uses, checked before each of its loads, and what they last said
they have free (which placement counts beside the local memory).

llama-server aborts (SIGABRT, a core dump) when a worker refuses its connection, and waits
without end on one that accepts but never answers, which an rpc-server busy with another
client does. So before a child starts, every worker is probed (``probe.py``), all at once and
within a few seconds, and one that fails is the model's ``ModelLoadError`` naming it: a quick
503 instead of a crash or a hang."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from supervisor.config import Settings
from supervisor.errors import ConfigError, ModelLoadError
from supervisor.models.registry import ModelEntry
from supervisor.rpc.address import WorkerAddress, check_workers, parse_worker
from supervisor.rpc.probe import ProbeFailed, WorkerReport, probe_worker

LOG = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0

Probe = Callable[[WorkerAddress, float, bool], Awaitable[WorkerReport]]


def model_workers(settings: Settings, entry: ModelEntry) -> list[str]:
    """The workers ``entry``'s children use: its own ``rpc`` when set (empty: none), else the
    global ``rpc``."""
    own = entry.overrides.rpc if entry.overrides is not None else None
    return list(own) if own is not None else list(settings.rpc)


def shared_workers(workers: list[str], theirs: list[str]) -> list[str]:
    """The workers (as host:port) in both lists."""
    return sorted({_key(worker) for worker in workers} & {_key(worker) for worker in theirs})


def refuse_shared_workers(model_id: str, workers: list[str], holders: dict[str, list[str]]) -> None:
    """A ``ModelLoadError`` when a worker of ``model_id`` is held by a child of another model
    that cannot be evicted (``holders``: each such child's name and workers). An rpc-server
    serves one client at a time, so a second child would wait on it without end; and probing
    it would only tell "busy" after a timeout."""
    for holder, theirs in holders.items():
        shared = shared_workers(workers, theirs)
        if shared:
            raise ModelLoadError(
                model_id,
                f"RPC worker {shared[0]} is in use by model '{holder}' (an rpc-server serves "
                "one llama-server at a time), which is busy, pinned or loading: unload that "
                "model first",
            )


class WorkerChecks:
    def __init__(self, probe: Probe = probe_worker, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._probe = probe
        self._timeout_s = timeout_s
        self._reports: dict[str, WorkerReport] = {}  # host:port -> its last good probe

    async def check(
        self, model_id: str, workers: list[str], allow_public: bool
    ) -> list[WorkerReport]:
        """Probe every worker of ``model_id``; a ``ModelLoadError`` naming each one that is
        down, busy, public (when not allowed) or not an rpc-server of our protocol."""
        if not workers:
            return []
        try:
            addresses = check_workers(workers, allow_public)
        except ConfigError as exc:
            raise ModelLoadError(model_id, exc.message) from None
        outcomes = await asyncio.gather(
            *(self._probe(address, self._timeout_s, allow_public) for address in addresses),
            return_exceptions=True,
        )
        failures: list[str] = []
        reports: list[WorkerReport] = []
        for address, outcome in zip(addresses, outcomes, strict=True):
            if isinstance(outcome, WorkerReport):
                self._reports[str(address)] = outcome
                reports.append(outcome)
                continue
            self._reports.pop(str(address), None)
            if not isinstance(outcome, ProbeFailed):
                raise outcome
            failures.append(f"RPC worker {address} is unavailable: {outcome.reason}")
        if failures:
            raise ModelLoadError(model_id, "; ".join(failures))
        for report in reports:
            LOG.debug("[%s] RPC worker %s: %d MiB free of %d MiB on %d devices", model_id,
                      report.address, report.free >> 20, report.total >> 20,
                      len(report.devices))  # fmt: skip
        return reports

    def free(self, workers: list[str]) -> int:
        """Bytes the ``workers`` had free at their last good probe (0 for one never probed,
        or down at its last)."""
        keys = dict.fromkeys(_key(worker) for worker in workers)
        return sum(self._reports[key].free for key in keys if key in self._reports)

    def report(self, worker: str) -> WorkerReport | None:
        return self._reports.get(_key(worker))


def _key(worker: str) -> str:
    try:
        return str(parse_worker(worker))
    except ConfigError:
        return worker
