"""The intake's judgement (supervisor/http/intake.py) on scripted connections and a fake clock:
which heads and bodies are too slow, the connection cap, the body-bytes bound, and the cap
fitted to the open-files limit. test_intake_socket.py shows the same over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.config import Settings
from supervisor.errors import SupervisorError
from supervisor.http.intake import FD_RESERVE, Intake, IntakeLimits, Phase, Progress

LIMITS = IntakeLimits(
    head_timeout_s=10,
    body_idle_timeout_s=15,
    body_min_rate=1024,
    connection_cap=3,
    max_pending_body_bytes=1000,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A connection whose progress the test sets; ``cuts`` records what it was cut with."""

    def __init__(self, phase: Phase = Phase.HEAD, request: int = 0, read: int = 0) -> None:
        self.at = Progress(phase, request, read)
        self.cuts: list[SupervisorError | None] = []

    def progress(self) -> Progress:
        return self.at

    def cut(self, error: SupervisorError | None) -> None:
        self.cuts.append(error)
        self.at = Progress(Phase.BUSY, self.at.request, 0)  # as a cut connection reads


class Setup:
    def __init__(self, limits: IntakeLimits = LIMITS) -> None:
        self.clock = Clock()
        self.reasons: list[str] = []
        self.intake = Intake(limits, counted=self.reasons.append, clock=self.clock)

    def connect(self, connection: Scripted) -> Scripted:
        async def enter() -> bool:
            return self.intake.enter(connection)

        assert asyncio.run(enter())
        return connection

    def after(self, seconds: float) -> None:
        """``seconds`` pass, swept every second as the running intake does."""
        for _ in range(int(seconds)):
            self.clock.now += 1
            self.intake.sweep()


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_a_silent_connection_is_closed_without_an_answer_after_the_head_timeout(
    setup: Setup,
) -> None:
    silent = setup.connect(Scripted())
    setup.after(10)
    assert silent.cuts == []  # first seen at the first sweep: the timeout runs from there
    setup.after(1)
    assert silent.cuts == [None]
    setup.after(30)
    assert setup.reasons == ["head_timeout"]  # once


def test_a_trickled_head_gets_a_408_however_steadily_it_trickles(setup: Setup) -> None:
    trickle = setup.connect(Scripted(Phase.HEAD, 1, 1))
    for second in range(10):
        trickle.at = Progress(Phase.HEAD, 1, 2 + second)
        setup.after(1)
    assert trickle.cuts == []
    setup.after(1)
    [error] = trickle.cuts
    assert error is not None and error.status_code == 408 and "headers" in error.message


def test_each_new_request_gets_its_own_head_time(setup: Setup) -> None:
    kept_alive = setup.connect(Scripted(Phase.HEAD, 1, 40))
    for request in range(2, 30):
        setup.after(5)
        kept_alive.at = Progress(Phase.HEAD, request, 40)
    assert kept_alive.cuts == []


def test_answering_is_never_the_clients_delay(setup: Setup) -> None:
    answering = setup.connect(Scripted(Phase.BUSY, 1))
    setup.after(600)
    assert answering.cuts == []


def test_a_stalled_body_gets_a_408_after_the_idle_timeout(setup: Setup) -> None:
    stalled = setup.connect(Scripted(Phase.BODY, 1, 10))
    setup.after(15)
    assert stalled.cuts == []
    setup.after(1)
    [error] = stalled.cuts
    assert error is not None and error.status_code == 408 and "body" in error.message
    assert setup.reasons == ["body_timeout"]


def test_a_body_slower_than_the_minimum_rate_is_cut_once_it_took_the_idle_timeout(
    setup: Setup,
) -> None:
    slow = setup.connect(Scripted(Phase.BODY, 1, 0))
    for second in range(15):
        slow.at = Progress(Phase.BODY, 1, 3 * second)  # moving, at 3 bytes a second
        setup.after(1)
    assert slow.cuts == []
    slow.at = Progress(Phase.BODY, 1, 48)
    setup.after(1)
    assert len(slow.cuts) == 1 and setup.reasons == ["body_too_slow"]


def test_a_big_body_at_a_fair_rate_is_not_cut(setup: Setup) -> None:
    upload = setup.connect(Scripted(Phase.BODY, 1, 0))
    for second in range(120):
        upload.at = Progress(Phase.BODY, 1, 4096 * second)
        setup.after(1)
    assert upload.cuts == []


def test_no_minimum_rate_when_it_is_zero() -> None:
    setup = Setup(IntakeLimits(10, 15, 0, 3, 1000))
    slow = setup.connect(Scripted(Phase.BODY, 1, 0))
    for second in range(60):
        slow.at = Progress(Phase.BODY, 1, second)
        setup.after(1)
    assert slow.cuts == []


def test_one_connection_past_the_cap_is_refused_and_counted(setup: Setup) -> None:
    held = [setup.connect(Scripted()) for _ in range(3)]

    async def one_more() -> bool:
        return setup.intake.enter(Scripted())

    assert not asyncio.run(one_more())
    assert setup.reasons == ["too_many_connections"]
    setup.intake.leave(held[0], 0)
    setup.connect(Scripted())


def test_unfinished_bodies_are_bounded_together(setup: Setup) -> None:
    assert setup.intake.hold(600)
    assert not setup.intake.hold(401)
    assert setup.intake.hold(400)
    setup.intake.release(600)  # one body whole
    assert setup.intake.pending_body_bytes == 400
    first = setup.connect(Scripted())
    setup.intake.leave(first, 400)  # the other's connection closed mid-body
    assert setup.intake.pending_body_bytes == 0


def test_the_connection_cap_leaves_open_files_for_children(tmp_path: Path) -> None:
    settings = Settings(models_dirs=[tmp_path], max_connections=1000, max_body_bytes=100)
    assert IntakeLimits.of(settings, open_files=256).connection_cap == (256 - FD_RESERVE) // 2
    assert IntakeLimits.of(settings, open_files=1 << 16).connection_cap == 1000
    assert IntakeLimits.of(settings, open_files=10).connection_cap == 1
    small = settings.model_copy(update={"max_pending_body_bytes": 10})
    assert IntakeLimits.of(small, open_files=256).max_pending_body_bytes == 100  # one body fits
