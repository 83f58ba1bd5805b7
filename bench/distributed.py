"""Beyond one machine (issue 20), on loopback: what a peer hop adds to a request, and what a
model split over an RPC worker streams against the same model local.

- **Peer hop**: the same requests, at concurrency 1, to llama-server (the back gateway's
  child), to the back gateway, and to the front gateway, which relays them to the back one as
  its peer (``bench/distributed_setups.py``). The three take turns request by request, the
  order rotating (``run_interleaved``), so that a slow spell of the machine falls on all of
  them; what a hop adds is taken within a round, then the median over rounds.
- **RPC split**: streams through a gateway whose model's layers are on a ``ggml-rpc-server``
  worker (``n_gpu_layers = 99``) and through a gateway with the model local, the two taking
  turns stream by stream at concurrency 1, one after the other (the order rotating by round)
  at higher concurrency; tokens/s from the streams' own counts.

Each part is started for its measurement and stopped after it; a part that fails (or cannot
run: no ``ggml-rpc-server`` in the build) is recorded, not the run's end.
``distributed_summary.py`` turns the rows into medians and paired figures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import distributed_setups as setups
from .lifecycle import first_token_s
from .loadgen import Workload, WorkloadResult, run_interleaved, run_workload
from .scenarios import CHAT, Tally, chat_body, stream_row
from .stats import percentile
from .targets import LlamaSettings, Target, child_of, start_gateway

Row = dict[str, float | int | None]
Say = Callable[[str], None]
# the names the rows and the report use
CHILD, GATEWAY, VIA_PEER = "llama-server", "gateway", "gateway → peer gateway"
LOCAL, SPLIT = "local", "rpc worker"
HOP_ORDER = (CHILD, GATEWAY, VIA_PEER)


@dataclass(frozen=True)
class DistributedPlan:
    rounds: int
    hop_requests: int  # non-streamed, max_tokens 1, per target per round
    hop_streams: int  # streamed, per target per round
    hop_stream_tokens: int
    rpc_streams: tuple[tuple[int, int], ...]  # (concurrency, streams per target per round)
    rpc_stream_tokens: int


# The full run: about 4 minutes on two cores; quick: about 1.5.
FULL = DistributedPlan(
    rounds=3,
    hop_requests=300,
    hop_streams=30,
    hop_stream_tokens=16,
    rpc_streams=((1, 8), (4, 16)),
    rpc_stream_tokens=64,
)
QUICK = DistributedPlan(
    rounds=2,
    hop_requests=60,
    hop_streams=8,
    hop_stream_tokens=16,
    rpc_streams=((1, 2), (4, 8)),
    rpc_stream_tokens=32,
)


def describe(settings: LlamaSettings, plan: DistributedPlan) -> dict[str, Any]:
    """What the report says the phase ran with."""
    return {
        "plan": asdict(plan),
        "model": settings.model.name,
        "ctx_size": settings.ctx_size,
        "parallel": settings.parallel,
        "threads": settings.threads,
        "rpc_layers": setups.RPC_LAYERS,
        "peer_check_interval_s": setups.PEER_CHECK_INTERVAL_S,
    }


async def measure(
    settings: LlamaSettings, plan: DistributedPlan, workdir: Path, say: Say
) -> dict[str, Any]:
    """Both parts, one after the other; each one's rows per round, tallies and details."""
    raw: dict[str, Any] = {}
    for name, part in (("peer_hop", _peer_hop), ("rpc_split", _rpc_split)):
        say(f"beyond one machine: {name.replace('_', ' ')}")
        try:
            raw[name] = await part(settings, plan, workdir / "distributed", say)
        except Exception as exc:  # one part that fails is recorded, not the run's end
            raw[name] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
            say(f"  failed: {raw[name]['failed']}")
    return raw


def rotated(items: list[Any], round_index: int) -> list[Any]:
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def hop_row(result: WorkloadResult) -> Row:
    """Latency (and, for streams, time to first token) p50/p95/p99 in ms."""
    row: Row = {"requests": result.requests}
    for q in (50, 95, 99):
        row[f"p{q}_ms"] = _ms(percentile(result.latencies, q))
        if result.ttfts:
            row[f"ttft_p{q}_ms"] = _ms(percentile(result.ttfts, q))
    return row


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


class _Turns:
    """Concurrency-1 rounds between named URLs, each request of a turn to every one of them,
    with every outcome counted per name."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}

    async def round(
        self,
        named: list[tuple[str, str, Workload]],
        row: Callable[[WorkloadResult], Row],
    ) -> dict[str, Row]:
        results = await run_interleaved([u for _, u, _ in named], [w for _, _, w in named])
        rows: dict[str, Row] = {}
        for (name, _, _), result in zip(named, results, strict=True):
            self.tallies.setdefault(name, Tally()).absorb(result)
            rows[name] = row(result)
        return rows

    async def alone(self, name: str, url: str, workload: Workload) -> Row:
        result = await run_workload(url, workload)
        self.tallies.setdefault(name, Tally()).absorb(result)
        return stream_row(result)

    def as_dict(self) -> dict[str, Any]:
        return {name: tally.as_dict() for name, tally in self.tallies.items()}


async def _peer_hop(
    settings: LlamaSettings, plan: DistributedPlan, workdir: Path, say: Say
) -> dict[str, Any]:
    with ExitStack() as running:
        back = running.enter_context(
            await asyncio.to_thread(start_gateway, settings, workdir, "peer-back", 1024, False)
        )
        await first_token_s(back)  # loads the model: its child exists from here on
        front = running.enter_context(
            await asyncio.to_thread(setups.start_peer_front, settings, workdir, back)
        )
        await first_token_s(front)
        urls = {CHILD: child_of(back), GATEWAY: back.base_url, VIA_PEER: front.base_url}
        models = {CHILD: back.model, GATEWAY: back.model, VIA_PEER: front.model}
        turns = _Turns()
        rounds: dict[str, list[dict[str, Row]]] = {"latency_c1": [], "stream_c1": []}
        for index in range(plan.rounds):
            say(f"  peer hop, round {index + 1}/{plan.rounds}")
            order = rotated(list(HOP_ORDER), index)
            small = [
                (n, urls[n], Workload(CHAT, (chat_body(models[n], 1),), 1, plan.hop_requests))
                for n in order
            ]
            rounds["latency_c1"].append(await turns.round(small, hop_row))
            streamed = [
                (n, urls[n], _streams(models[n], plan.hop_stream_tokens, 1, plan.hop_streams))
                for n in order
            ]
            rounds["stream_c1"].append(await turns.round(streamed, hop_row))
        details = {
            "commands": [setups.command_of(back), setups.command_of(front)],
            "config": (workdir / "peer-front" / "gateway.toml").read_text(),
            "models": models,
        }
    return {"rounds": rounds, "tallies": turns.as_dict(), "details": details}


def _start_split(settings: LlamaSettings, workdir: Path, config: str) -> Target:
    start = setups.start_configured_gateway
    return start("rpc-split", settings, workdir, config, settings.model_id, True)


def _streams(model: str, tokens: int, concurrency: int, count: int) -> Workload:
    """Streams of ``tokens`` tokens (``ignore_eos``); each user first sends one short one."""
    body = chat_body(model, tokens, stream=True)
    return Workload(CHAT, (body,), concurrency, count, 1, (chat_body(model, 2, stream=True),))


async def _rpc_split(
    settings: LlamaSettings, plan: DistributedPlan, workdir: Path, say: Say
) -> dict[str, Any]:
    rpc_server = setups.find_rpc_server(settings.binary)
    if rpc_server is None:
        return {"skipped": f"no ggml-rpc-server beside {settings.binary} (./build_llamacpp.sh)"}
    with ExitStack() as running:
        worker = running.enter_context(
            await asyncio.to_thread(setups.start_worker, rpc_server, workdir, settings.threads)
        )
        worker_rss: dict[str, float | None] = {"idle": setups.rss_mb(worker)}
        config = setups.rpc_config(settings, worker.base_url)
        split = running.enter_context(
            await asyncio.to_thread(_start_split, settings, workdir, config)
        )
        local = running.enter_context(
            await asyncio.to_thread(start_gateway, settings, workdir, "rpc-local")
        )
        load_s = {SPLIT: await first_token_s(split), LOCAL: await first_token_s(local)}
        worker_rss["loaded"] = setups.rss_mb(worker)
        details: dict[str, Any] = {
            "first_token_s": load_s,
            "child_rpc_flag": setups.child_flag(split, "--rpc"),
            "child_gpu_layers_flag": setups.child_flag(split, "--n-gpu-layers"),
            "worker_rss_mb": worker_rss,
            "commands": [setups.command_of(worker), setups.command_of(split)],
            "config": config,
        }
        urls = {LOCAL: local.base_url, SPLIT: split.base_url}
        turns = _Turns()
        rounds: dict[str, list[dict[str, Row]]] = {}
        for index in range(plan.rounds):
            say(f"  rpc split, round {index + 1}/{plan.rounds}")
            order = rotated([LOCAL, SPLIT], index)
            for concurrency, count in plan.rpc_streams:
                tokens = plan.rpc_stream_tokens
                if concurrency == 1:
                    named = [(n, urls[n], _streams(settings.model_id, tokens, 1, count))
                             for n in order]  # fmt: skip
                    rows = await turns.round(named, stream_row)
                else:
                    rows = {}
                    for name in order:
                        workload = _streams(settings.model_id, tokens, concurrency, count)
                        rows[name] = await turns.alone(name, urls[name], workload)
                rounds.setdefault(f"stream_c{concurrency}", []).append(rows)
        worker_rss["after"] = setups.rss_mb(worker)
    return {"rounds": rounds, "tallies": turns.as_dict(), "details": details}
