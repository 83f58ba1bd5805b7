"""The report's "Beyond one machine" section (issue 20): a peer hop's added latency and a
model split over an RPC worker against the same model local."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from .distributed import HOP_ORDER, LOCAL, SPLIT
from .markdown import counts, num, spread, table

PLAIN = "{:+.2f}"


def distributed_section(
    summary: Mapping[str, Any], raw: Mapping[str, Any], meta: Mapping[str, Any]
) -> str:
    plan = meta["plan"]
    parts = [
        _intro(meta),
        _peer_hop(summary.get("peer_hop", {}), meta),
        _rpc_split(summary.get("rpc_split", {}), raw.get("rpc_split", {}), plan, meta),
        _errors(raw),
    ]
    return "\n".join(parts)


def _fill(text: str) -> str:
    return textwrap.fill(text, width=92, break_on_hyphens=False)


def _intro(meta: Mapping[str, Any]) -> str:
    alone = meta.get("alone")
    run = (
        "\n\n"
        + _fill(
            f"Measured alone (`--only distributed`) on {alone['date']} "
            f"({alone['duration_s'] / 60:.1f} minutes); llama-server {alone['llama_server']}, "
            f"build key `{alone['llama_build_key']}`; checkout {alone['checkout']}:"
        )
        + f"\n\n```bash\n{alone['command']}\n```"
        if alone
        else ""
    )
    text = _fill(
        "Peers and RPC workers, measured on this one machine over loopback: what is "
        "measured is what the software adds, not what a network would. Every gateway and "
        f"llama-server: model `{meta['model']}`, `--ctx-size {meta['ctx_size']}`, "
        f"`--parallel {meta['parallel']}`, `--threads {meta['threads']}`. "
        f"{meta['plan']['rounds']} round(s); figures paired within a round, then the median. "
        "Nothing here is judged: the issue asks for the figures."
    )
    return "## Beyond one machine (issue 20)\n\n" + text + run + "\n"


def _not_run(part: Mapping[str, Any]) -> str | None:
    for reason in ("failed", "skipped"):
        if reason in part:
            return f"Not measured ({reason}): {part[reason]}\n"
    return None


def _peer_hop(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    plan = meta["plan"]
    title = "### A peer hop: gateway → gateway → llama-server\n\n"
    missing = _not_run(summary)
    if missing:
        return title + missing
    intro = _fill(
        "Three ways to one llama-server, taking turns request by request at concurrency 1 "
        "(the order rotating): straight to it (the back gateway's child), through the gateway "
        "that runs it, and through a second gateway that has that gateway as its peer "
        "`box2` and no model of its own (it serves the model as `box2/<id>`; the peer "
        f"checked every {meta['peer_check_interval_s']:g} s). "
        f"Per target and round: {plan['hop_requests']} non-streamed requests (`max_tokens` 1) "
        f"and {plan['hop_streams']} streams of {plan['hop_stream_tokens']} tokens."
    )
    latency, streams = summary["latency_c1"], summary["stream_c1"]
    rows = []
    for name in HOP_ORDER:
        m, s = latency["median"].get(name, {}), streams["median"].get(name, {})
        rows.append((name, num(m.get("p50_ms")), num(m.get("p95_ms")), num(m.get("p99_ms")),
                     num(s.get("ttft_p50_ms")), num(s.get("ttft_p95_ms")),
                     num(s.get("p50_ms"))))  # fmt: skip
    head = ("target", "p50 ms", "p95 ms", "p99 ms", "stream TTFT p50 ms", "TTFT p95 ms",
            "whole stream p50 ms")  # fmt: skip
    added_rows = []
    for label, figures in latency["added"].items():
        stream = streams["added"].get(label, {})
        added_rows.append((label, *_added(figures, "p50_ms"), *_added(figures, "p95_ms"),
                           *_added(stream, "ttft_p50_ms")))  # fmt: skip
    added_head = ("what it adds", "p50 ms", "(rounds' range)", "p95 ms", "(rounds' range)",
                  "stream TTFT p50 ms", "(rounds' range)")  # fmt: skip
    return (
        title
        + intro
        + "\n\n"
        + table(head, rows)
        + "\n"
        + _fill(
            "Added, paired within each round (the gateway: gateway against llama-server; "
            "a peer hop: gateway → peer gateway against gateway):"
        )
        + "\n\n"
        + table(added_head, added_rows)
    )


def _added(figures: Mapping[str, Any], figure: str) -> tuple[str, str]:
    value = figures.get("median", {}).get(figure)
    shown = "n/a" if value is None else PLAIN.format(value)
    return shown, spread(figures.get("rounds", {}).get(figure), PLAIN).strip(" ()") or "n/a"


def _rpc_split(
    summary: Mapping[str, Any],
    raw: Mapping[str, Any],
    plan: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> str:
    title = "### A model split over an RPC worker, against the same model local\n\n"
    missing = _not_run(summary)
    if missing:
        return title + missing
    details = raw.get("details", {})
    shapes = ", ".join(f"{n} streams at concurrency {c}" for c, n in plan["rpc_streams"])
    intro = _fill(
        "Two gateways with the same model and settings: one with the model local, one "
        f"whose model has `n_gpu_layers = {meta['rpc_layers']}` and `rpc` set to a "
        "`ggml-rpc-server` on 127.0.0.1 (started with the same `--threads`), so that every "
        "layer is on the worker's device and each token's work crosses the RPC connection. "
        f"Per target and round: {shapes}, {plan['rpc_stream_tokens']} tokens each "
        "(`ignore_eos`); at concurrency 1 the two take turns stream by stream, above it one "
        "after the other, the order rotating by round. Tokens/s: the streams' own token "
        "counts over their time."
    )
    rows = []
    for workload, figures in summary.items():
        concurrency = workload.removeprefix("stream_c")
        for name in (LOCAL, SPLIT):
            m = figures["median"].get(name, {})
            shown = (
                num(figures["ratio"], 3) + spread(figures["ratio_rounds"], "{:.3f}")
                if name == SPLIT and figures["ratio"] is not None
                else ""
            )
            rows.append((concurrency, name, num(m.get("tokens_per_s"), 1), shown,
                         num(m.get("ttft_p50_ms")), num(m.get("ttft_p99_ms")),
                         num(m.get("gap_p99_ms"))))  # fmt: skip
    head = ("concurrency", "setup", "tokens/s", "ratio to local (rounds' range)",
            "TTFT p50 ms", "TTFT p99 ms", "inter-token gap p99 ms")  # fmt: skip
    return title + intro + "\n\n" + table(head, rows) + _rpc_details(details)


def _rpc_details(details: Mapping[str, Any]) -> str:
    rss = details.get("worker_rss_mb", {})
    loads = details.get("first_token_s", {})
    lines = [
        f"- The split model's llama-server was started with `--rpc "
        f"{details.get('child_rpc_flag')}` and `--n-gpu-layers "
        f"{details.get('child_gpu_layers_flag')}`; the worker's RSS went from "
        f"{num(rss.get('idle'), 1)} MB idle to {num(rss.get('loaded'), 1)} MB with the model "
        f"loaded ({num(rss.get('after'), 1)} MB after the streams): it holds the layers.",
        f"- Cold load, request → first token: local {num(loads.get(LOCAL), 2)} s, split "
        f"{num(loads.get(SPLIT), 2)} s (the layers are sent to the worker at load).",
    ]
    config = details.get("config")
    if config:
        shown = "`, `".join(line for line in config.splitlines() if line)
        lines.append(f"- The split gateway's TOML: `{shown}`.")
    return "\n" + "\n".join(lines) + "\n"


def _errors(raw: Mapping[str, Any]) -> str:
    rows = []
    for part in ("peer_hop", "rpc_split"):
        for name, tally in raw.get(part, {}).get("tallies", {}).items():
            rows.append((name, f"{tally['requests']:,}", counts(tally["errors"]),
                         counts(tally["disconnects"]), tally["retries"]))  # fmt: skip
    if not rows:
        return ""
    head = ("target", "requests", "errors", "disconnects", "retried (closed keep-alive)")
    return "### Errors and disconnects (every measured request)\n\n" + table(head, rows)
