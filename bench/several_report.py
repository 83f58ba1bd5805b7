"""The report's "Several models" section (issue 17), and the header of a run of that phase
alone (``python -m bench --only several``)."""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .markdown import counts, num, spread, table, verdict_cell

WORKLOAD_TITLES = {
    "two_models": "Two models, 16 clients each",
    "chat_embeddings": "Chat and embeddings on one model, 16 clients each",
    "alone": "One model alone, 32 clients",
}
SETUP_LABELS = {
    "direct": "direct, llama.cpp's defaults",
    "split": "direct, cores split by hand",
    "router": "router mode",
    "gateway": "gateway",
}
SETUP_ORDER = tuple(SETUP_LABELS)


def several_section(
    summary: Mapping[str, Any], raw: Mapping[str, Any], meta: Mapping[str, Any]
) -> str:
    workloads = summary["workloads"]
    parts = [
        _intro(meta),
        "### Targets (issue 17)\n\n"
        + table(
            ("target", "measured", "result"),
            [(v["target"], v["measured"], verdict_cell(v["pass"])) for v in summary["verdicts"]],
        ),
    ]
    for workload, figures in workloads.items():
        parts.append(_workload(workload, figures))
    parts.append(_failures(workloads))
    parts.append(_placement(raw.get("setups", {})))
    parts.append(_commands(raw.get("setups", {})))
    return "\n".join(parts)


def _intro(meta: Mapping[str, Any]) -> str:
    plan, n = meta["plan"], meta["split_threads"]
    references = (
        f" The references that are not judged (llama.cpp's defaults and router mode with two "
        f"models) ran in the first {plan['reference_rounds']} round(s) only."
        if plan["reference_rounds"] < plan["rounds"]
        else ""
    )
    paragraphs = [
        "Several models on one machine: two models at once, chat and embeddings on one model "
        "at once, and one model alone, each through the gateway and against llama-servers "
        f"started by hand, in the same run. The models are `{meta['model']}` under two names "
        "(`smol-a`, `smol-b`; the second a copy of its own, so that they share no page "
        f"cache). Every llama-server: `--parallel {meta['parallel']} --ctx-size "
        f"{meta['ctx_size']}`. The hand split gives each llama-server `-t {n} -tb {n}` (the "
        f"{meta['cores']} cores // 2); the gateway is given no `threads`: where its children "
        "run is its own choice (the table below shows what it chose). Clients are closed-loop "
        "users with a keep-alive connection each, sending one request after another: streamed "
        f"chats of {meta['tokens']} tokens (`max_tokens` {meta['tokens']}, `ignore_eos`) or "
        "embeddings of one short sentence.",
        "Setups run one at a time, each started for its measurement and stopped after it. "
        "The figures are steady-state: first one request per model (the models load), then "
        f"{plan['warmup_s']:g} s of the same load, not counted (the gateway settles where its "
        "children run, and may restart them when the second model loads), then a window of "
        f"{plan['seconds']:g} s with no pause in between. What counts is what "
        "*ended* inside the window: a stream completed there counts, with its whole latency, "
        "however early it began; requests still running when the window ends are cancelled "
        f"and counted nowhere, for every setup alike. {plan['rounds']} round(s), the setups' "
        f"order rotating; ratios are taken within a round, then the median.{references}",
        "Deliberate refusals are 429 and 503 answers with `Retry-After` (the user then waits "
        "that long, as real clients do). Anything else that fails (another status, 429/503 "
        "without `Retry-After`, a timeout, a connection error, a stream cut short) is lost "
        "(the user waits 0.5 s).",
    ]
    body = "\n\n".join(textwrap.fill(p, width=92, break_on_hyphens=False) for p in paragraphs)
    return "## Several models (issue 17)\n\n" + body + "\n"


def _workload(workload: str, figures: Mapping[str, Any]) -> str:
    base = figures["baseline"]
    both = workload == "chat_embeddings"
    head: tuple[str, ...] = ("setup", "streams (per s)")
    if both:
        head += ("embeddings (per s)", f"streams / {base}'s", f"embeddings / {base}'s",
                 "together")  # fmt: skip
    else:
        head += (f"ratio to {SETUP_LABELS.get(base, base)} (rounds' range)",)
    if workload == "two_models":
        head += ("per model",)
    head += ("tokens", "latency p50 ms", "p95 ms", "TTFT p50 ms")
    if both:
        head += ("embedding p50 ms",)
    head += ("deliberate 429/503", "lost", "retried")
    rows = []
    for name in _ordered(figures["median"]):
        m, totals = figures["median"][name], figures["totals"][name]
        ratios = figures["ratio"].get(name, {})
        ranges = figures["ratio_rounds"].get(name, {})
        row: list[object] = [SETUP_LABELS.get(name, name), _rate(m, "streams")]
        if both:
            row.append(_rate(m, "embeddings"))
            keys = ("streams", "embeddings", "combined")
            row += [_ratio(ratios, ranges, key) if name != base else "" for key in keys]
        else:
            row.append(_ratio(ratios, ranges, "streams") if name != base else "")
        if workload == "two_models":
            row.append(" / ".join(num(v, 0) for k, v in m.items() if k.startswith("completed:")))
        row += [num(m.get("tokens"), 0), num(m.get("latency_p50_ms"), 0),
                num(m.get("latency_p95_ms"), 0), num(m.get("ttft_p50_ms"), 0)]  # fmt: skip
        if both:
            row.append(num(m.get("embedding_p50_ms"), 0))
        row += [totals["deliberate"], totals["lost"], totals["retries"]]
        rows.append(tuple(row))
    note = (
        f"Medians over {figures['rounds']} round(s) of {num(_window(figures), 0)}-second "
        "windows; deliberate, lost and retried add up over the rounds (windows only).\n"
    )
    for name in _ordered(figures["median"]):
        m = figures["median"][name]
        if not m.get("completed_per_s") and m.get("oldest_in_flight_s") is not None:
            note += (
                f"\n{SETUP_LABELS.get(name, name)}: nothing ended inside the window; as it "
                f"ended, the oldest request in flight had run {num(m['oldest_in_flight_s'], 1)} s."
                "\n"
            )
    for name, messages in figures.get("failed", {}).items():
        label = SETUP_LABELS.get(name, name)
        note += f"\n{label} failed in {len(messages)} round(s): {messages[0]}\n"
    return f"### {WORKLOAD_TITLES.get(workload, workload)}\n\n" + table(head, rows) + "\n" + note


def _window(figures: Mapping[str, Any]) -> float | None:
    found = (m.get("window_s") for m in figures["median"].values())
    return next((w for w in found if w is not None), None)


def _rate(m: Mapping[str, float | None], key: str) -> str:
    return f"{num(m.get(key), 0)} ({num(m.get(f'{key}_per_s'), 1)})"


def _ratio(ratios: Mapping[str, Any], ranges: Mapping[str, Any], key: str) -> str:
    return num(ratios.get(key), 3) + spread(ranges.get(key), "{:.3f}")


def _failures(workloads: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for workload, figures in workloads.items():
        for name in _ordered(figures["totals"]):
            totals = figures["totals"][name]
            if totals["errors"] or totals["warmup_errors"]:
                lines.append(
                    f"- {WORKLOAD_TITLES.get(workload, workload)}, {SETUP_LABELS.get(name, name)}:"
                    f" in the windows {counts(totals['errors'])}; before them (priming and "
                    f"warm-up) {counts(totals['warmup_errors'])}"
                )
    body = "\n".join(lines) if lines else "None, in any setup, window or warm-up."
    return "### Failures by kind (all rounds)\n\n" + body + "\n"


def _placement(setups: Mapping[str, Mapping[str, list[Mapping[str, Any]]]]) -> str:
    """Where each llama-server ran in the last round, as the window began: the placement
    flags it was started with, the CPUs it may run on, the threads it reported."""
    rows, notes = [], []
    for workload, by_setup in setups.items():
        for name in _ordered(by_setup):
            runs = by_setup[name]
            for where in runs[-1].get("placement", []):
                flags = " ".join(f"{k} {v}" for k, v in where["flags"].items()) or "none"
                threads = where["n_threads"]
                rows.append((WORKLOAD_TITLES.get(workload, workload), SETUP_LABELS.get(name, name),
                             where["model"], where["role"], f"`{flags}`", where["cpus"] or "n/a",
                             "n/a" if threads is None else threads))  # fmt: skip
            warm = [str(i + 1) for i, run in enumerate(runs) if run.get("restarted_in_warmup")]
            window = [str(i + 1) for i, run in enumerate(runs) if run.get("restarted_in_window")]
            if name == "gateway" or warm or window:
                notes.append(
                    f"- {SETUP_LABELS.get(name, name)}, {WORKLOAD_TITLES.get(workload, workload)}: "
                    f"children replaced during the warm-up in round(s) {', '.join(warm) or 'none'}"
                    f", during the window in {', '.join(window) or 'none'}."
                )
    head = ("workload", "setup", "model", "role", "placement flags", "CPUs (affinity)",
            "threads (its log)")  # fmt: skip
    return (
        "### Where each llama-server ran (last round, as the window began)\n\n"
        + table(head, rows)
        + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )


def _commands(setups: Mapping[str, Mapping[str, list[Mapping[str, Any]]]]) -> str:
    rows = []
    for workload, by_setup in setups.items():
        for name in _ordered(by_setup):
            last = by_setup[name][-1]
            started = "<br>".join(f"`{short_command(c)}`" for c in last.get("commands", []))
            if last.get("config"):
                started += "<br>config: `" + "`, `".join(last["config"].splitlines()) + "`"
            rows.append((WORKLOAD_TITLES.get(workload, workload), SETUP_LABELS.get(name, name),
                         started))  # fmt: skip
    return "### How each setup was started\n\n" + table(("workload", "setup", "command"), rows)


def short_command(command: str) -> str:
    """A command as the report shows it: paths by their last part, the port as ``PORT``."""
    words = shlex.split(command)
    shown = []
    for index, word in enumerate(words):
        if index and words[index - 1] == "--port":
            shown.append("PORT")
        elif word.startswith("/"):
            shown.append(Path(word).name)
        else:
            shown.append(word)
    return " ".join(shown)


def _ordered(names: Mapping[str, Any]) -> list[str]:
    return sorted(names, key=lambda n: (SETUP_ORDER.index(n) if n in SETUP_ORDER else 99, n))


def standalone_header(
    meta: Mapping[str, Any], machine: str, phases: str, title: str = "several models"
) -> str:
    """The top of a report of a phase alone (``--only``)."""
    return f"""\
# Benchmarks: {title}

<!-- Written by `python -m bench --only ...` (bench/report.py). -->

Latest run: {meta["date"]}, {meta["duration_s"] / 60:.1f} minutes:

```bash
{meta["command"]}
```

{machine}
Time taken: {phases}.
"""
