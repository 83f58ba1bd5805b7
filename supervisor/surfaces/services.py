"""The app's services as routes reach them: one accessor each, reading what the lifespan set
on ``app.state`` (``supervisor/services.py``). Routes take only the services they use."""

from __future__ import annotations

from fastapi import Request

from supervisor.children.logs import ChildLogs
from supervisor.http.observer import note_model, request_record
from supervisor.lifecycle.manager import ModelManager
from supervisor.models.catalog import Catalog, Served
from supervisor.models.memory import MemoryProbe
from supervisor.models.pulls.service import Pulls
from supervisor.models.registry import ModelEntry
from supervisor.peers.directory import Peers
from supervisor.peers.model import PeerModel
from supervisor.relay.asgi import Proxy
from supervisor.relay.limits import Limits
from supervisor.relay.targets import Targets
from supervisor.reload import Reloader
from supervisor.sessions.base import Store
from supervisor.sessions.locks import SessionLocks, Turns
from supervisor.telemetry.activity import ActivityLog
from supervisor.telemetry.history import MetricsHistory
from supervisor.telemetry.performance import PerformanceTable
from supervisor.telemetry.prometheus import Telemetry
from supervisor.telemetry.tokens import TokenMeter


def pick_model(request: Request, name: str | None) -> ModelEntry:
    """The model a request names, else the default one (``Catalog.pick``), noted as the
    model the request uses for its metrics."""
    entry = catalog(request).pick(name)
    note_model(request.scope, entry.id)
    return entry


def serve_model(request: Request, name: str | None) -> Served:
    """The model an inference request names: a local one as ``pick_model`` finds it, else a
    peer's (``Catalog.serve``), noted as the model the request uses for its metrics."""
    model = catalog(request).serve(name)
    note_model(request.scope, model.id)
    return model


def targets(request: Request) -> Targets:
    """Where requests get a slot: a local model's child, or a peer."""
    service: Targets = request.app.state.targets
    return service


def catalog(request: Request) -> Catalog:
    service: Catalog = request.app.state.catalog
    return service


def peers(request: Request) -> Peers:
    service: Peers = request.app.state.peers
    return service


def peer_models(request: Request) -> list[PeerModel]:
    """The peer models the lists show after the local ones: a local model's names win."""
    local = {name for entry in catalog(request).entries() for name in entry.names}
    return peers(request).models(local)


def manager(request: Request) -> ModelManager:
    service: ModelManager = request.app.state.manager
    return service


def proxy(request: Request) -> Proxy:
    service: Proxy = request.app.state.proxy
    return service


def limits(request: Request) -> Limits:
    service: Limits = request.app.state.limits
    return service


def telemetry(request: Request) -> Telemetry:
    service: Telemetry = request.app.state.telemetry
    return service


def meter(request: Request, model_id: str) -> TokenMeter:
    """A token meter for one answer of ``model_id``, whose counts the request's activity
    entry shows."""
    return telemetry(request).meter(model_id, request_record(request.scope))


def count_answer(request: Request, model_id: str, answer: object) -> None:
    """Count a parsed answer's tokens, for the metrics and the request's activity entry."""
    telemetry(request).count_answer(model_id, answer, request_record(request.scope))


def activity(request: Request) -> ActivityLog:
    service: ActivityLog = request.app.state.activity
    return service


def metrics_history(request: Request) -> MetricsHistory:
    service: MetricsHistory = request.app.state.metrics_history
    return service


def performance(request: Request) -> PerformanceTable:
    service: PerformanceTable = request.app.state.performance
    return service


def sessions(request: Request) -> Store:
    service: Store = request.app.state.sessions
    return service


def session_turns(request: Request) -> Turns:
    service: Turns = request.app.state.session_turns
    return service


def session_locks(request: Request) -> SessionLocks:
    service: SessionLocks = request.app.state.session_locks
    return service


def reloader(request: Request) -> Reloader:
    service: Reloader = request.app.state.reloader
    return service


def probe(request: Request) -> MemoryProbe:
    service: MemoryProbe = request.app.state.probe
    return service


def child_logs(request: Request) -> ChildLogs:
    service: ChildLogs = request.app.state.child_logs
    return service


def pulls(request: Request) -> Pulls:
    service: Pulls = request.app.state.pulls
    return service


def started_at(request: Request) -> float:
    """When the gateway started (epoch seconds), for its uptime."""
    at: float = request.app.state.started_at
    return at
