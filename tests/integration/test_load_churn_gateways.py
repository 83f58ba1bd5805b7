"""The 64-client load under churn (test_load_churn.py) across two gateways that share their
/api sessions in PostgreSQL (issue 20): each request goes to the next gateway in turn, so a
session's turns alternate between them, while each gateway's models are swapped, unloaded and
reloaded underneath. Nothing may hang or be cut, and every session holds exactly the turns
whose answers were acknowledged, through either gateway and in the database itself."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from harness import RunningGateway, wait_for
from postgres_server import PostgresServer
from sse import chat_body
from test_load_churn import CONFIG, MODELS, REQUESTS, Load, churn, churn_steps, run_client

pytestmark = pytest.mark.integration
GATEWAYS = 2


class SharedLoad(Load):
    """The load of test_load_churn, sent round robin to several gateways; it goes on until
    every gateway's churn of every model has been through a whole cycle."""

    def __init__(self, urls: list[str], minimum: int, cap: int) -> None:
        self.urls = urls
        self._next = itertools.count()
        super().__init__(urls[0], minimum, cap)

    @property  # type: ignore[override]
    def url(self) -> str:
        return self.urls[next(self._next) % len(self.urls)]

    @url.setter
    def url(self, _: str) -> None:
        pass  # Load.__init__ sets one; the round robin above is what counts

    def take(self) -> bool:
        sent = self.tally.sent
        enough = sent >= self._minimum and self.cycles_done >= len(MODELS) * len(self.urls)
        if sent >= self._cap or enough:
            return False
        self.tally.sent += 1
        return True


async def run_shared_load(urls: list[str]) -> tuple[SharedLoad, list[str], int]:
    load = SharedLoad(urls, minimum=REQUESTS, cap=4 * REQUESTS)
    stop, done = asyncio.Event(), []
    churners = [
        asyncio.create_task(churn(url, model, load, stop, done)) for url in urls for model in MODELS
    ]
    await asyncio.gather(*(run_client(load, n) for n in range(64)))
    during = len(done)
    stop.set()
    await asyncio.gather(*churners)
    return load, done, during


@pytest.fixture
def models(demo_model_dir: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    model_file = next(demo_model_dir.glob("*.gguf"))
    for name in ("alpha", "alpha-v2", "beta", "beta-v2"):
        os.link(model_file, directory / f"{name}.gguf")
    return directory


@pytest.fixture
def gateways(
    llama_server_bin: Path, models: Path, tmp_path: Path, postgres: PostgresServer
) -> Iterator[tuple[list[RunningGateway], str]]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    url = postgres.create_database()
    running: list[RunningGateway] = []
    try:
        for n in range(GATEWAYS):
            (tmp_path / f"g{n}").mkdir()
            log = tmp_path / f"g{n}" / "gateway.log"
            env = {"LLAMA_SUPERVISOR_SESSIONS_URL": url}
            running.append(
                RunningGateway(llama_server_bin, models, log, "--config", str(config), env=env)
            )
        yield running, url
    finally:
        for gateway in running:
            gateway.stop()


def database_turns(url: str, session: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT role, content FROM session_messages WHERE session_id = %s ORDER BY seq",
            (session,),
        ).fetchall()
    return [(role, content) for role, content in rows]


def test_64_clients_across_two_gateways_sharing_postgres_lose_nothing_while_models_churn(
    gateways: tuple[list[RunningGateway], str],
) -> None:
    running, url = gateways
    load, churned, churned_during_load = asyncio.run(run_shared_load([g.url for g in running]))
    tally = load.tally
    print(f"\nload under churn, {GATEWAYS} gateways: {tally.line()}; churn steps during the "
          f"load: {churned_during_load}")  # fmt: skip
    for kind, count in sorted(tally.by_kind.items()):
        print(f"  {kind}: {count}")
    for why, count in tally.refusals.most_common():
        print(f"  refused {count}x: {why}")
    assert tally.lost == [], tally.lost[:10]
    assert tally.failed == [], tally.failed[:10]
    assert tally.sent >= REQUESTS and tally.sent == tally.ok + tally.refused
    assert all(" -> 200 (" in step for step in churned), churned
    assert load.cycles_done >= len(MODELS) * GATEWAYS
    assert churned_during_load >= len(MODELS) * GATEWAYS * len(churn_steps("any"))
    assert tally.ok >= REQUESTS // 2
    # The database is up all along: a session store 503 is no deliberate refusal here.
    store_refusals = [why for why in tally.refusals if "Session store" in why]
    assert store_refusals == [], store_refusals

    # Every acknowledged turn is in its session, and nothing else is, seen from each gateway.
    sessions = [s for s in load.sessions if s.id]
    assert sessions
    assert any(len(s.turns) >= 4 for s in sessions)  # some continued on the other gateway
    for gateway in running:
        for session in sessions:
            stored = httpx.get(f"{gateway.url}/api/sessions/{session.id}", timeout=30).json()
            assert [(m["role"], m["content"]) for m in stored["messages"]] == session.turns

    for gateway in running:
        for model in MODELS:
            body = chat_body(model, max_tokens=2)
            reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=120)
            assert reply.status_code == 200, reply.text
        assert wait_for(lambda g=gateway: len(g.children()) <= len(MODELS), timeout=60)  # type: ignore[misc]
        gateway.stop()
    for session in sessions:
        assert database_turns(url, str(session.id)) == session.turns
