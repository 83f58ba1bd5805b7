"""The several-models workloads (issue 17): two models at once, chat and embeddings on one
model at once, and one model alone, each against the gateway and against llama-servers
started by hand, in the same run.

Each setup is started for its measurement alone and stopped after it (never two at once: they
would share the cores), primed with one request per lane (models load), then loaded for
``warmup_s`` seconds (not counted: the gateway settles where its children run), then measured
for ``seconds`` more without a pause (``bench/timed.py``). Each round runs every workload
against every setup, the setups' order rotating from round to round (the references that are
not judged, ``REFERENCES``, only in the first ``reference_rounds``); ``several_summary.py``
pairs the figures within a round."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .machine import cpu_count
from .scenarios import CHAT as CHAT_PATH
from .scenarios import chat_body
from .several_setups import (
    CTX_SIZE,
    DIRECT,
    EMBEDDINGS_KEY,
    GATEWAY,
    MODELS,
    PARALLEL,
    ROUTER,
    SPLIT,
    Setup,
    model_files,
    placement,
    split_threads,
    started,
)
from .timed import CHAT, EMBEDDINGS, Lane, prime, run_timed, window_row

EMBEDDINGS_PATH = "/v1/embeddings"
USERS = 32
TOKENS = 16
EMBED_INPUT = "The quick brown fox jumps over the lazy dog."
TWO_MODELS, CHAT_EMBEDDINGS, ALONE = "two_models", "chat_embeddings", "alone"
# each workload's setups; the first one named in BASELINES is what the gateway is judged by
WORKLOADS: dict[str, tuple[str, ...]] = {
    TWO_MODELS: (DIRECT, SPLIT, ROUTER, GATEWAY),
    CHAT_EMBEDDINGS: (SPLIT, GATEWAY),
    ALONE: (DIRECT, GATEWAY),
}


# not judged, only shown: measured in the first ``reference_rounds`` rounds
REFERENCES: dict[str, tuple[str, ...]] = {TWO_MODELS: (DIRECT, ROUTER)}


@dataclass(frozen=True)
class SeveralPlan:
    rounds: int
    seconds: float  # each setup's measured window
    warmup_s: float  # the same load before it, not counted
    reference_rounds: int = 1


# The full run: 20 measurements of about 23 s (start, prime, warm-up, window, stop), about
# 8 minutes (three rounds: the one-model-alone target sits close to the rounds' noise);
# quick: 8 of about 13 s, about 2 minutes.
FULL = SeveralPlan(rounds=3, seconds=15.0, warmup_s=5.0)
QUICK = SeveralPlan(rounds=1, seconds=8.0, warmup_s=3.0)


def describe(model: Path, plan: SeveralPlan) -> dict[str, Any]:
    """What the report says the phase ran with."""
    return {
        "plan": asdict(plan),
        "model": model.name,
        "users": USERS,
        "tokens": TOKENS,
        "parallel": PARALLEL,
        "ctx_size": CTX_SIZE,
        "split_threads": split_threads(),
        "cores": cpu_count(),
    }


def lanes(workload: str, setup: Setup) -> list[Lane]:
    """Who sends what: two models, 16 users on each (user i on model i % 2); chat and
    embeddings, 16 users streaming chats and 16 posting embeddings to one model; alone, 32
    users streaming chats to one model. Every stream is 16 tokens (``ignore_eos``)."""
    if workload == TWO_MODELS:
        return [_chat(setup, model, USERS // len(MODELS)) for model in MODELS]
    if workload == CHAT_EMBEDDINGS:
        body = {"model": MODELS[0], "input": EMBED_INPUT}
        url = setup.url(EMBEDDINGS_KEY)
        embed = Lane(EMBEDDINGS, MODELS[0], url, EMBEDDINGS_PATH, body, USERS // 2)
        return [_chat(setup, MODELS[0], USERS // 2), embed]
    return [_chat(setup, MODELS[0], USERS)]


def _chat(setup: Setup, model: str, users: int) -> Lane:
    body = chat_body(model, TOKENS, stream=True)
    return Lane(CHAT, model, setup.url(model), CHAT_PATH, body, users)


def rotated(names: tuple[str, ...], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


async def measure(
    binary: Path, model: Path, plan: SeveralPlan, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Every round: every workload against each of its setups, one at a time. The raw rows
    (one per setup per round) and, per setup and round, how it was started and where its
    llama-servers ran."""
    files = model_files(model, workdir)
    raw: dict[str, Any] = {
        "rounds": {workload: [] for workload in WORKLOADS},
        "setups": {workload: {} for workload in WORKLOADS},
    }
    for round_index in range(plan.rounds):
        for workload, names in WORKLOADS.items():
            chosen = files if workload == TWO_MODELS else {MODELS[0]: files[MODELS[0]]}
            rows: dict[str, Any] = {}
            skipped = REFERENCES.get(workload, ()) if round_index >= plan.reference_rounds else ()
            for name in rotated(tuple(n for n in names if n not in skipped), round_index):
                say(f"several models, round {round_index + 1}/{plan.rounds}: {workload}, {name}")
                place = workdir / "several" / f"round-{round_index + 1}" / workload / name
                try:
                    row, details = await _measure_one(workload, name, chosen, binary, place, plan)
                except Exception as exc:  # one setup that fails is recorded, not the run's end
                    row = details = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
                    say(f"  failed: {row['failed']}")
                else:
                    say(_progress(row, details))
                rows[name] = row
                raw["setups"][workload].setdefault(name, []).append(details)
            raw["rounds"][workload].append(rows)
    return raw


async def _measure_one(
    workload: str,
    name: str,
    files: dict[str, Path],
    binary: Path,
    workdir: Path,
    plan: SeveralPlan,
) -> tuple[dict[str, Any], dict[str, Any]]:
    embeddings = workload == CHAT_EMBEDDINGS
    clock = time.perf_counter()
    spent: dict[str, float] = {}
    with started(name, files, binary, workdir, embeddings) as setup:
        spent["start_s"] = time.perf_counter() - clock
        chosen = lanes(workload, setup)
        primed = await prime(chosen)
        loaded = placement(setup)
        spent["prime_s"] = time.perf_counter() - clock - spent["start_s"]
        run = asyncio.create_task(run_timed(chosen, plan.warmup_s, plan.seconds))
        await asyncio.sleep(plan.warmup_s)
        at_start = await asyncio.to_thread(placement, setup)
        await asyncio.sleep(plan.seconds)
        at_end = await asyncio.to_thread(placement, setup)
        timed = await run
        stopping = time.perf_counter()
    spent["stop_s"] = time.perf_counter() - stopping
    row = window_row([*primed, *timed.done], timed.window_start, timed.window_end)
    _fill_threads(at_start, loaded)
    details = {
        "commands": setup.commands,
        "config": setup.config,
        "placement": at_start,
        "restarted_in_warmup": _pids(loaded) != _pids(at_start),
        "restarted_in_window": _pids(at_start) != _pids(at_end),
        "seconds": {k: round(v, 2) for k, v in spent.items()},
    }
    return row, details


def _progress(row: dict[str, Any], details: dict[str, Any]) -> str:
    spent = ", ".join(f"{k} {v:.1f}" for k, v in details["seconds"].items())
    return (
        f"  {row['streams']} streams, {row['embeddings']} embeddings, {row['deliberate']} "
        f"deliberate, {row['lost']} lost; seconds spent: {spent}"
    )


def _pids(found: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(str(f["model"]), str(f["role"]), int(f["pid"])) for f in found}


def _fill_threads(found: list[dict[str, Any]], earlier: list[dict[str, Any]]) -> None:
    """A child's thread count from an earlier look, where its log line has since scrolled
    out of the gateway's kept lines (the same pid: the same process)."""
    known = {f["pid"]: f["n_threads"] for f in earlier if f.get("n_threads") is not None}
    for where in found:
        if where.get("n_threads") is None:
            where["n_threads"] = known.get(where["pid"])
