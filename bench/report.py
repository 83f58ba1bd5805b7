"""The markdown report (docs/benchmarks.md) from a run's results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .distributed_report import distributed_section
from .markdown import counts as _counts
from .markdown import num as _f
from .markdown import spread as _spread
from .markdown import table as _table
from .markdown import verdict_cell as _pass
from .several_report import several_section, standalone_header

TARGET_ORDER = ("direct", "router", "nginx", "gateway")
MACHINE_LABELS = {
    "cpu": "CPU",
    "cores": "cores",
    "memory": "memory",
    "os": "OS",
    "python": "Python",
    "llama_server": "llama-server",
    "llama_build_key": "build key (`./build_llamacpp.sh --print-key`)",
    "checkout": "llama-supervisor checkout",
}

METHOD = """\
## Reading the figures

- At concurrency 16 a request's wait is mostly for a place in llama-server's next batch, so
  the added latency there moves by tens of ms from round to round, for the router and nginx
  as much as for the gateway (the rounds' ranges): it is reported, not judged. Concurrency 1
  shows what a relay adds to one request; the zero-cost upstream shows the relay's own cost
  with no model in the way.
- The load generator (Python, httpx) shares the cores. `canned` alone is its ceiling on this
  machine: where `gateway-canned` comes close to it, the gateway's own ceiling is higher than
  measured.
- The zero-cost upstream writes a stream's events back to back, so the gateway often reads
  several at once: its events/s and CPU per event are the best case. With a real model each
  token arrives on its own, which the CPU per 1,000 relayed tokens above reflects.
- nginx is a C proxy that spends next to no CPU per request, so its added latency is roughly
  what any extra loopback hop costs here (process wake-ups on a 2-vCPU VM): the floor under
  any relay's, the gateway's included.
- Streaming ratios between separate llama-servers move by several percent from round to round
  on this machine, for the router and nginx as much as for the gateway (the ranges show it):
  taking turns cannot tell 2% apart here. Streams sharing one llama-server can, which is why
  the target is judged on them, with the gateway's whole CPU time charged to the model on
  top.
- llama-server closes keep-alive connections without notice (the router most often): the
  load generator retries those once on a new connection and counts them as retries.

## How it is measured

- **Targets**, all started by the runner on free loopback ports with the same model and the
  same llama-server settings: `direct` is one `llama-server -m MODEL`; `router` is
  llama-server's router mode (`llama-server --models-dir DIR`, no `-m`: it starts a
  llama-server per model on the first request naming it and forwards by the body's `model`);
  `nginx` (a reference, where nginx is installed) is Debian's nginx run privately as a reverse
  proxy (one worker, upstream keep-alive, no buffering, no access log) in front of a direct
  llama-server of its own; `gateway` is `llama-supervisor serve` with those settings in its
  TOML file. All their llama-servers get the same argv (`--ctx-size`, `--parallel`,
  `--threads`, `--alias`).
- **Load generator** (`bench/loadgen.py`): closed-loop simulated users, each with its own
  httpx client and one keep-alive connection, sending the next request when the last one is
  done. Every request is the same short chat (`"Hi"`, 31 prompt tokens with the template),
  so llama-server's prompt cache makes the model's share small and the relays' share
  visible. Each user's first requests warm its connection up and are not counted.
- **Rounds**: every workload runs against every target in each round, the targets' order
  rotating from round to round; a figure is the median over rounds, and added latency and
  ratios are taken within a round (gateway against direct of the same round), then the
  median. These machines are noisy: compare figures of one run, not across runs.
- **Concurrency 1 takes turns**: at concurrency 1 (with the model, streams included, and
  against the zero-cost upstream) the targets take turns request by request, the order
  rotating every turn, so a slow spell of the machine falls on every target alike and an
  added latency compares neighbouring requests. Run one target after another, the same
  figure moved by up to 1.8 ms from round to round here, and a stream ratio by ±10%.
- **Latency**: request sent → whole answer read. **Time to first token**: request sent → first
  SSE event carrying text. **Inter-token gap**: between consecutive text events as they
  arrive. **Tokens/s**: the streams' `usage`/`timings` token counts over the workload's wall
  time (at concurrency 1, the sum of the target's own streams' times).
- **Errors** are non-2xx answers, error events, timeouts; **disconnects** are connections
  closed mid-answer or streams ending without `data: [DONE]`. A connection found closed
  *before any answer* is retried once on a new connection and counted as a retry (llama-server
  closes idle keep-alive connections without notice; real clients retry those too).
- **Gateway CPU** is the gateway process's own user + system time (`psutil`, not its
  children) over the measured part of the streaming workloads, per 1,000 tokens relayed;
  direct llama-server's is taken the same way, per 1,000 tokens generated.
  **RSS** is the gateway process's, 2 s after warm-up, sampled every 100 ms under load, and 2 s
  after the load.
- **Cold load**: the model unloaded (gateway `POST /api/v2/models/{id}/unload`, router
  `POST /models/unload` and waiting for `GET /models` to say `unloaded`), then one streamed
  request, timed to its first token. The baseline is a fresh `llama-server` process: start →
  ready → first token. **Swap**: `POST /api/v2/models/{id}/swap` to a second file of the same
  model; the gateway's `swap_seconds` and the time the client waited. The router has no swap.
- **Relay capacity**: `bench/canned.py` answers like llama-server at no cost (a fixed JSON, or
  a fixed stream of token events, each its own HTTP chunk). The gateway is pointed at it
  through a `--llama-server` script that execs it. `canned` alone shows what the load
  generator and the upstream can do on this machine; `gateway-canned` is the gateway's own
  ceiling. All processes share the machine's cores, the load generator's included.
- A benchmark is not a test: no test asserts on these timings.

## Running it

```bash
make bench          # the full run: rewrites this file and bench/results/latest.json
make bench-quick    # a few minutes with smaller counts; prints the report
.venv/bin/python -m bench --only several    # the several-models phase alone: about 8 minutes
# the beyond-one-machine phase alone (about 4 minutes), written into this file and the JSON
# in place of its earlier figures, the other sections' kept:
.venv/bin/python -m bench --only distributed --out docs/benchmarks.md \\
    --json bench/results/latest.json
.venv/bin/python -m bench --help    # --rounds, --requests, --threads, --model, --no-relay, ...
```

It needs a built llama-server (`./build_llamacpp.sh`) and fetches the demo model if it is not
cached. `--keep` keeps the work directory with every process's log.
"""


def render(results: Mapping[str, Any]) -> str:
    meta, summary, raw = results["meta"], results["summary"], results["raw"]
    several = (
        several_section(summary["several"], raw["several"], meta["several"])
        if "several" in summary
        else ""
    )
    distributed = (
        distributed_section(summary["distributed"], raw["distributed"], meta["distributed"])
        if "distributed" in summary
        else ""
    )
    if "latency" not in summary:  # a phase alone (--only) with no earlier run to go into
        phases = _phases(raw.get("phases_s", {}))
        titles = [t for t, s in (("several models", several), ("beyond one machine", distributed))
                  if s]  # fmt: skip
        header = standalone_header(meta, _machine(meta), phases, " and ".join(titles))
        return "\n".join(part for part in (header, several, distributed) if part)
    parts = [
        _header(meta, raw.get("phases_s", {})),
        _verdicts(summary["verdicts"]),
        _latency(summary["latency"]),
        _streaming(summary["streaming"], meta["plan"]["stream_tokens"]),
        _shared(summary.get("shared", {})),
        _errors(raw["tallies"], raw["error_check"]),
        _gateway_process(summary["gateway"], summary.get("model_cpu_s_per_1k_tokens", {})),
        _cold(summary["cold_load_s"], summary["swap"]),
        _relay(summary["relay"], meta["plan"]),
        _rerun_note(several, meta.get("several", {})),
        distributed,
        METHOD,
    ]
    return "\n".join(part for part in parts if part)


def _header(meta: Mapping[str, Any], phases: Mapping[str, float]) -> str:
    settings, plan = meta["settings"], meta["plan"]
    machine = _machine(meta)
    nginx = meta.get("nginx")
    nginx_line = (
        f"nginx: {nginx}, a reference for one extra proxy hop."
        if nginx
        else "nginx: not found (PATH, /usr/sbin/nginx), so its reference target was skipped."
    )
    small = ", ".join(f"{n} at concurrency {c}" for c, n in plan["small"])
    stream = ", ".join(f"{n} at concurrency {c}" for c, n in plan["stream"])
    slices = plan.get("stream_slices", 1)
    shared = ", ".join(f"{n} at concurrency {c}" for c, n in plan.get("shared", ()))
    shared_line = (
        f"\nStreams sharing one llama-server, per side and round: {shared}." if shared else ""
    )
    several_line = (
        "; then several models on one machine, with settings of their own (Several models)"
        if meta.get("several")
        else ""
    )
    if meta.get("distributed"):
        several_line += ";\nthen a peer hop and an RPC worker on loopback (Beyond one machine)"
    return f"""\
# Benchmarks

<!-- Written by `python -m bench` (bench/report.py): rerun it rather than editing by hand. -->

The gateway against a direct llama-server, llama-server's router mode and nginx in front of a
llama-server, on the same model and settings, in one run; then against a zero-cost
upstream{several_line}.
Latest run: {meta["date"]}, {meta["duration_s"] / 60:.1f} minutes:

```bash
{meta["command"]}
```

{machine}

Every llama-server: model `{settings["model"]}`, `--ctx-size {settings["ctx_size"]}`
(shared by the slots), `--parallel {settings["parallel"]}`, `--threads {settings["threads"]}`
(the cores minus one by default, so that the load generator and the relay under test have a
core of their own and do not preempt llama-server's threads).
{nginx_line}
Per round ({plan["rounds"]} rounds): non-streamed requests {small}; streams of
{plan["stream_tokens"]} tokens {stream}; at concurrency 1 the targets take turns stream by
stream, above it each target's streams run in {slices} turns taken in rotation.{shared_line}
Error check: {plan["error_requests"]:,} requests through the gateway at concurrency 16.
Time taken: {_phases(phases)}.
"""


def _rerun_note(section: str, meta: Mapping[str, Any]) -> str:
    """A section rerun alone into an earlier run's report says so under its title."""
    alone = meta.get("alone")
    if not alone or not section:
        return section
    title, _, rest = section.partition("\n\n")
    note = (
        f"Rerun alone on {alone['date']} ({alone['duration_s'] / 60:.1f} minutes; "
        f"llama-server {alone['llama_server']}): `{alone['command']}`."
    )
    return f"{title}\n\n{note}\n\n{rest}"


def _machine(meta: Mapping[str, Any]) -> str:
    return _table(
        ("", ""), [(MACHINE_LABELS.get(k, k), f"{v}") for k, v in meta["machine"].items()]
    )


def _phases(phases: Mapping[str, float]) -> str:
    return "; ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items()) or "n/a"


def _verdicts(verdicts: Iterable[Mapping[str, Any]]) -> str:
    rows = [(v["target"], v["measured"], _pass(v["pass"])) for v in verdicts]
    return "## Targets (issue 6)\n\n" + _table(("target", "measured", "result"), rows)


def _latency(latency: Mapping[str, Any]) -> str:
    rows = []
    for c, figures in latency.items():
        for target in _ordered(figures["median"]):
            m = figures["median"][target]
            added = _signed(figures["added_p50_ms"].get(target))
            spread = _spread(figures["added_p50_ms_rounds"].get(target), "{:+.2f}")
            rows.append((c, target, _f(m.get("p50_ms")), _f(m.get("p90_ms")),
                         _f(m.get("p99_ms")), _f(m.get("rps"), 0), added + spread))  # fmt: skip
    head = ("concurrency", "target", "p50 ms", "p90 ms", "p99 ms", "req/s",
            "added p50 vs direct (rounds' range)")  # fmt: skip
    return "## Non-streamed requests (max_tokens 1)\n\n" + _table(head, rows)


def _streaming(streaming: Mapping[str, Any], tokens: int) -> str:
    rows = []
    for c, figures in streaming.items():
        for target in _ordered(figures["median"]):
            m = figures["median"][target]
            r = figures["ratio_to_direct"].get(target)
            spread = _spread(figures["ratio_rounds"].get(target), "{:.3f}")
            rows.append((c, target, _f(m.get("tokens_per_s"), 1), _f(r, 3) + spread if r else "",
                         _f(m.get("ttft_p50_ms")), _f(m.get("ttft_p99_ms")),
                         _f(m.get("gap_p99_ms"))))  # fmt: skip
    head = ("concurrency", "target", "tokens/s", "ratio to direct (range)", "TTFT p50 ms",
            "TTFT p99 ms", "inter-token gap p99 ms")  # fmt: skip
    return f"## Streaming ({tokens} tokens per stream)\n\n" + _table(head, rows)


def _shared(shared: Mapping[str, Any]) -> str:
    if not shared:
        return ""
    rows = []
    for c, f in shared.items():
        direct, gateway = f["median"].get("direct", {}), f["median"].get("gateway", {})
        share = f.get("cpu_share")
        rows.append((c, _f(direct.get("tokens_per_s"), 1), _f(gateway.get("tokens_per_s"), 1),
                     _f(f["ratio"], 4) + _spread(f["ratio_rounds"], "{:.4f}"),
                     "n/a" if share is None else f"{share:.2%}",
                     _f(f["charged"], 3) + _spread(f["charged_rounds"], "{:.3f}")))  # fmt: skip
    head = ("concurrency (each side)", "direct tokens/s", "gateway tokens/s",
            "ratio (rounds' range)", "gateway CPU per token / llama-server's",
            "ratio with the gateway's CPU charged to the model")  # fmt: skip
    return (
        "## Streams sharing one llama-server\n\n"
        "The gateway's own child, started with twice the slots: at each concurrency that many "
        "users stream straight to the child and as many through the gateway, at the same time. "
        "The two sides share the model's batches and the machine's slow spells, so the ratio "
        "shows what the relay does to a stream. What the relay's CPU could take from the "
        "model is charged on top: the gateway's CPU seconds per relayed token over direct "
        "llama-server's per generated token, both from the streaming workloads above at the "
        "same concurrency, as if every CPU second the gateway spent were taken from the "
        "model's thread (the most it could take: with `--threads` one less than the cores, "
        "the gateway and the load generator mostly run on a core llama-server does not "
        "use).\n\n" + _table(head, rows)
    )


def _errors(tallies: Mapping[str, Any], error_check: Mapping[str, Any]) -> str:
    rows = [
        (name, f"{t['requests']:,}", _counts(t["errors"]), _counts(t["disconnects"]), t["retries"])
        for name, t in sorted(tallies.items(), key=lambda kv: _rank(kv[0]))
    ]
    head = ("target", "requests", "errors", "disconnects", "retried (closed keep-alive)")
    text = "## Errors and disconnects (every measured request)\n\n" + _table(head, rows)
    for name, check in error_check.items():
        text += (
            f"\nError check, {name}: {check['requests']:,} requests (half streamed) at "
            f"concurrency 16 in {check['wall_s']:.0f} s ({_f(check['rps'], 0)} req/s): "
            f"{_counts(check['errors'])} errors, {_counts(check['disconnects'])} disconnects, "
            f"{check['retries']} retried.\n"
        )
    return text


def _gateway_process(gateway: Mapping[str, Any], model_cpu: Mapping[str, float | None]) -> str:
    cpu, rss = gateway["cpu_s_per_1k_tokens"], gateway["rss_mb"]
    per_c = ", ".join(f"concurrency {c}: {_f(v, 3)}" for c, v in cpu.items() if c != "all")
    model = ", ".join(f"concurrency {c}: {_f(v, 1)}" for c, v in model_cpu.items() if c != "all")
    return (
        "## The gateway process\n\n"
        f"- CPU seconds per 1,000 relayed tokens (streaming workloads): {_f(cpu.get('all'), 3)} "
        f"({per_c}). Direct llama-server spent per 1,000 tokens it generated: {model}.\n"
        f"- RSS: {_f(rss.get('idle_start'), 1)} MB idle after warm-up, "
        f"{_f(rss.get('peak_load'), 1)} MB peak under load, {_f(rss.get('idle_end'), 1)} MB "
        "idle after the run.\n"
    )


def _cold(cold: Mapping[str, float | None], swap: Mapping[str, Any]) -> str:
    rows = [
        ("gateway: unload, then request → first token", _f(cold.get("gateway"), 3)),
        ("router: unload, then request → first token", _f(cold.get("router"), 3)),
        ("direct: llama-server process start → first token", _f(cold.get("direct_start"), 3)),
        (f"gateway swap: `swap_seconds` ({', '.join(swap['modes'])})",
         _f(swap.get("swap_seconds"), 3)),
        ("gateway swap: the client's wait for the answer", _f(swap.get("client_s"), 3)),
        ("router swap", "n/a (no swap API)"),
    ]  # fmt: skip
    return f"## Cold load and swap (medians of {swap['count']})\n\n" + _table(
        ("what", "seconds"), rows
    )


def _relay(relay: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> str:
    if not relay:
        return ""
    rows = []
    for target in ("canned", "gateway-canned"):
        latency = relay["latency_c1"]["median"].get(target, {})
        requests = relay["requests_c16"]["median"].get(target, {})
        stream = relay["stream_c16"]["median"].get(target, {})
        rows.append((target, _f(latency.get("p50_ms")), _f(latency.get("p99_ms")),
                     _f(requests.get("rps"), 0), _f(stream.get("events_per_s"), 0)))  # fmt: skip
    head = ("target", "p50 ms (c1)", "p99 ms (c1)", "req/s (c16)", "SSE events/s (c16)")
    return (
        f"## Relay capacity (zero-cost upstream, streams of {plan['relay_events']} events)\n\n"
        + _table(head, rows)
        + f"\nGateway in front of it: {_signed(relay['latency_c1']['added_p50_ms'])} p50 at "
        f"concurrency 1; {_f(relay['requests_c16']['ratio'], 3)} of the upstream's req/s and "
        f"{_f(relay['stream_c16']['ratio'], 3)} of its events/s at concurrency 16; "
        f"{_f(relay.get('gateway_cpu_ms_per_request'), 2)} ms of gateway CPU per request, "
        f"{_f(relay.get('gateway_cpu_s_per_1k_events'), 3)} s per 1,000 events.\n"
    )


def _ordered(names: Iterable[str]) -> list[str]:
    return sorted(names, key=_rank)


def _rank(name: str) -> tuple[int, str]:
    return (TARGET_ORDER.index(name) if name in TARGET_ORDER else len(TARGET_ORDER), name)


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f} ms"
