"""``python -m bench``: start the targets, run every workload against each in the same run,
write the markdown report and the JSON. A phase run alone (``--only``) is written into the
``--json`` file's earlier results, keeping the other phases' figures (bench/sections.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor.children.binary import find_llama_server
from supervisor.config import default_cache_dir
from supervisor.models.demo import fetch_demo_model

from . import distributed, lifecycle, machine, sections, several, targets
from .meter import ProcessMeter
from .nginx import find_nginx, start_nginx, version
from .report import render
from .scenarios import FULL, QUICK, Plan, Session, SharedChild
from .summary import summarize

IDLE_SETTLE_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the gateway against a direct llama-server, llama-server's "
        "router mode and nginx (where installed) on the same model and settings, and against "
        "a zero-cost upstream; then several models on one machine against llama-servers "
        "started by hand; then beyond one machine: a peer hop and a model split over an RPC "
        "worker, on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: about 5 minutes")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds of every workload (medians over them); the several-models references "
        "that are not judged (llama.cpp's defaults and router mode with two models) run in the "
        "first round only",
    )
    parser.add_argument(
        "--requests", type=int, help="size of the gateway's error check (full: 10,000)"
    )
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--llama-server", type=Path, help="default: the newest cached build")
    parser.add_argument("--model", type=Path, help="a .gguf (default: the demo model)")
    parser.add_argument("--ctx-size", type=int, default=8192, help="shared by all slots")
    parser.add_argument("--parallel", type=int, default=16, help="llama-server slots")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, machine.cpu_count() - 1),
        help="llama-server threads (default: the cores minus one, at least 1, so that the "
        "load generator and the relay under test have a core of their own)",
    )
    parser.add_argument("--no-relay", action="store_true", help="skip the zero-cost upstream")
    parser.add_argument(
        "--only",
        choices=["several", "distributed"],
        help="several: run the several-models phase alone (two models at once, chat and "
        "embeddings at once, one model alone; bench/several.py): about 8 minutes, 2 with "
        "--quick. Its llama-servers have their own settings (--parallel 4, 512 tokens of "
        "context per slot), whatever --parallel, --ctx-size and --threads say. distributed: "
        "the beyond-one-machine phase alone (a peer hop, a model split over an RPC worker; "
        "bench/distributed.py): about 4 minutes, 1.5 with --quick. Where the --json file "
        "holds an earlier run, the phase's figures replace its own there and the other "
        "sections' are kept (in the JSON and the --out report); else the report has that "
        "section only",
    )
    parser.add_argument("--no-several", action="store_true", help="skip the several-models phase")
    parser.add_argument(
        "--no-distributed", action="store_true", help="skip the beyond-one-machine phase"
    )
    parser.add_argument(
        "--several-seconds",
        type=float,
        help="each several-models setup's measured window (full: 15 s, quick: 8 s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds, cold_repeats=min(plan.cold_repeats, args.rounds))
    if args.requests:
        plan = replace(plan, error_requests=args.requests)
    several_plan = _several_plan(args)
    distributed_plan = _distributed_plan(args)
    main_phases = args.only is None
    workdir = Path(tempfile.mkdtemp(prefix="llama-bench-"))
    try:
        binary = find_llama_server(args.llama_server, default_cache_dir())
        model = args.model or fetch_demo_model(workdir / "source", default_cache_dir(), _say)
        settings = targets.LlamaSettings(
            binary, model.resolve(), args.ctx_size, args.parallel, args.threads
        )
        started = time.monotonic()
        nginx = find_nginx() if main_phases else None
        if nginx is None and main_phases:
            _say("nginx not found (PATH, /usr/sbin/nginx): skipping the nginx target")
        later = Later(several_plan, distributed_plan)
        raw = asyncio.run(
            _measure(settings, plan, workdir, nginx, not args.no_relay, later, main_phases)
        )
        meta = _meta(settings, plan, argv, time.monotonic() - started, nginx)
        if several_plan is not None:
            meta["several"] = several.describe(settings.model, several_plan)
        if distributed_plan is not None:
            meta["distributed"] = distributed.describe(settings, distributed_plan)
        if args.only is not None:
            meta[args.only]["alone"] = sections.alone(meta)
    finally:
        if args.keep:
            _say(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results: dict[str, Any] = {"meta": meta, "summary": summarize(raw), "raw": raw}
    if args.only is not None:
        results = sections.merged(sections.read_previous(args.json), results, args.only)
    report = render(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.out:
        args.out.write_text(report)
    if not args.out:
        print(report)
    return 0


def _several_plan(args: argparse.Namespace) -> several.SeveralPlan | None:
    if args.no_several:
        if args.only == "several":
            _parser().error("--only several and --no-several leave nothing to run")
        return None
    if args.only not in (None, "several"):
        return None
    plan = several.QUICK if args.quick else several.FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.several_seconds:
        plan = replace(plan, seconds=args.several_seconds)
    return plan


def _distributed_plan(args: argparse.Namespace) -> distributed.DistributedPlan | None:
    if args.no_distributed:
        if args.only == "distributed":
            _parser().error("--only distributed and --no-distributed leave nothing to run")
        return None
    if args.only not in (None, "distributed"):
        return None
    plan = distributed.QUICK if args.quick else distributed.FULL
    return replace(plan, rounds=args.rounds) if args.rounds else plan


@dataclass(frozen=True)
class Later:
    """The phases after the main ones (each None where it does not run), in this order, so
    that the earlier phases' figures are what they were before these existed."""

    several: several.SeveralPlan | None
    distributed: distributed.DistributedPlan | None


class Phases:
    """How long each part of the run took, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _say(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 1)


async def _measure(
    settings: targets.LlamaSettings,
    plan: Plan,
    workdir: Path,
    nginx: str | None,
    relay: bool,
    later: Later,
    main_phases: bool,
) -> dict[str, Any]:
    """The phases in order, the several-models one and then the beyond-one-machine one last
    (so that the others' figures are what they were before they existed)."""
    phases = Phases()
    raw = await _main_phases(settings, plan, workdir, nginx, relay, phases) if main_phases else {}
    if later.several is not None:
        with phases.phase("several models: two at once, chat and embeddings, one alone"):
            raw["several"] = await several.measure(
                settings.binary, settings.model, later.several, workdir, _say
            )
    if later.distributed is not None:
        with phases.phase("beyond one machine: a peer hop, a model split over an RPC worker"):
            raw["distributed"] = await distributed.measure(
                settings, later.distributed, workdir, _say
            )
    raw["phases_s"] = phases.seconds
    return raw


async def _main_phases(
    settings: targets.LlamaSettings,
    plan: Plan,
    workdir: Path,
    nginx: str | None,
    relay: bool,
    phases: Phases,
) -> dict[str, Any]:
    raw: dict[str, Any] = {"latency": {}, "streaming": {}, "cold": {}, "swap": []}
    with ExitStack() as running:
        with phases.phase("start the targets; load the model in each"):
            direct = running.enter_context(targets.start_direct(settings, workdir))
            router = running.enter_context(targets.start_router(settings, workdir))
            under_test = [direct, router]
            if nginx is not None:
                under_test.append(running.enter_context(start_nginx(nginx, settings, workdir)))
            gateway = running.enter_context(targets.start_gateway(settings, workdir))
            under_test.append(gateway)  # last: the error check and the meter are the gateway's
            _version_file(settings, gateway)
            for target in under_test:
                await lifecycle.first_token_s(target)
        meter = ProcessMeter(gateway.pid)
        # the gateway's CPU, and direct llama-server's to weigh it against
        session = Session(under_test, {"gateway": meter, "direct": ProcessMeter(direct.pid)})
        await _load(session, meter, plan, phases, raw)
        with phases.phase("cold load and swap"):
            await _cold_and_swap(settings, plan, workdir, gateway, router, raw)
        tallies = {name: tally.as_dict() for name, tally in session.tallies.items()}
    with phases.phase("streams straight to one child and through the gateway, at once"):
        raw["shared"], shared_tallies = await _shared(settings, plan, workdir)
    tallies |= shared_tallies
    if relay:
        with phases.phase("relay capacity against the zero-cost upstream"):
            raw["relay"], relay_cpu, relay_tallies = await _relay(settings, plan, workdir)
        raw["cpu"] |= relay_cpu
        tallies |= relay_tallies
    raw["tallies"] = tallies
    return raw


async def _load(
    session: Session, meter: ProcessMeter, plan: Plan, phases: Phases, raw: dict[str, Any]
) -> None:
    """The rounds and the error check, with the gateway's RSS before, during and after."""
    gateway = session.targets[-1]
    await asyncio.sleep(IDLE_SETTLE_S)
    raw["rss_mb"] = {"idle_start": meter.rss_mb()}
    async with meter.sampling():
        for round_index in range(plan.rounds):
            with phases.phase(f"rounds of latency and streaming ({plan.rounds})"):
                await session.latency_round(round_index, plan, raw["latency"])
                await session.streaming_round(round_index, plan, raw["streaming"])
        with phases.phase(f"error check ({plan.error_requests:,} requests)"):
            check = await session.error_check(gateway, plan.error_requests)
            raw["error_check"] = {gateway.name: check}
    raw["rss_mb"]["peak_load"] = meter.peak_rss_mb
    await asyncio.sleep(IDLE_SETTLE_S)
    raw["rss_mb"]["idle_end"] = meter.rss_mb()
    raw["cpu"] = dict(session.cpu)


async def _cold_and_swap(
    settings: targets.LlamaSettings,
    plan: Plan,
    workdir: Path,
    gateway: targets.Target,
    router: targets.Target,
    raw: dict[str, Any],
) -> None:
    cold: dict[str, list[float]] = {"gateway": [], "router": [], "direct_start": []}
    for attempt in range(plan.cold_repeats):
        cold["gateway"].append(await lifecycle.gateway_cold_load(gateway))
        cold["router"].append(await lifecycle.router_cold_load(router))
        cold["direct_start"].append(await lifecycle.direct_cold_start(settings, workdir, attempt))
        version = VERSION_PATH if attempt % 2 == 0 else settings.model.name
        raw["swap"].append(await lifecycle.gateway_swap(gateway, version))
    raw["cold"] = cold


async def _shared(
    settings: targets.LlamaSettings, plan: Plan, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    rounds: dict[str, Any] = {}
    widest = max(concurrency for concurrency, _ in plan.shared)
    with targets.start_shared(settings, workdir, widest) as gateway:
        await lifecycle.first_token_s(gateway)
        shared = SharedChild(gateway, targets.child_of(gateway))
        session = Session([], {})
        for _ in range(plan.rounds):
            await session.shared_round(shared, plan, rounds)
        tallies = {name: tally.as_dict() for name, tally in session.tallies.items()}
    return rounds, tallies


async def _relay(
    settings: targets.LlamaSettings, plan: Plan, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    rounds: dict[str, Any] = {}
    with ExitStack() as running:
        canned = running.enter_context(targets.start_canned(workdir, plan.relay_events))
        fronted = running.enter_context(
            targets.start_gateway_canned(settings, workdir, plan.relay_events)
        )
        session = Session([canned, fronted], {fronted.name: ProcessMeter(fronted.pid)})
        for round_index in range(plan.rounds):
            await session.relay_round(round_index, plan, rounds)
        tallies = {name: tally.as_dict() for name, tally in session.tallies.items()}
        cpu = dict(session.cpu)
    return rounds, cpu, tallies


VERSION_PATH = "versions/v2.gguf"


def _version_file(settings: targets.LlamaSettings, gateway: targets.Target) -> None:
    """A second file version of the model for the swap, inside the gateway's models dir."""
    assert gateway.models_dir is not None
    version = gateway.models_dir / VERSION_PATH
    version.parent.mkdir(exist_ok=True)
    targets.link_or_copy(settings.model, version)


def _meta(
    settings: targets.LlamaSettings,
    plan: Plan,
    argv: list[str] | None,
    seconds: float,
    nginx: str | None,
) -> dict[str, Any]:
    given = sys.argv[1:] if argv is None else argv
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([".venv/bin/python", "-m", "bench", *given]),
        "duration_s": round(seconds, 1),
        "machine": machine.describe(settings.binary),
        "settings": {
            "model": settings.model.name,
            "ctx_size": settings.ctx_size,
            "parallel": settings.parallel,
            "threads": settings.threads,
        },
        "plan": asdict(plan),
        "nginx": None if nginx is None else f"{version(nginx)} ({nginx})",
    }


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
