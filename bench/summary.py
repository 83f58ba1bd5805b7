"""From raw rows to what the report says: medians across rounds, figures paired within a
round (added latency, ratios to direct), and the issue's targets judged. Pure functions over
the plain data the runner records (and writes to JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .distributed_summary import summarize_distributed
from .several_summary import summarize_several
from .stats import difference, median, per_thousand, ratio

Row = Mapping[str, float | int | None]
Rounds = list[dict[str, Any]]
BASE = "direct"
GATEWAY = "gateway"
ROUTER = "router"
NGINX = "nginx"  # a reference for one extra proxy hop: mentioned, never judged
ADDED_P50_LIMIT_MS = 1.0
JUDGED_LATENCY_CONCURRENCY = "1"  # above it, batching swamps what a relay adds (_batching_row)
ROUTER_SHARE = 1 / 3
STREAM_RATIO_MIN = 0.98
ERROR_CHECK_REQUESTS = 10_000
IDLE_RSS_LIMIT_MB = 80.0


def medians(rounds: Rounds) -> dict[str, dict[str, float | None]]:
    """Each target's each figure, the median over rounds."""
    names: dict[str, set[str]] = {}
    for rows in rounds:
        for target, row in rows.items():
            names.setdefault(target, set()).update(row)
    return {
        target: {
            name: median(rows[target].get(name) for rows in rounds if target in rows)
            for name in sorted(fields)
        }
        for target, fields in names.items()
    }


Combine = Callable[[float | None, float | None], float | None]


def per_round(
    rounds: Rounds, name: str, combine: Combine, base: str = BASE
) -> dict[str, list[Any]]:
    """``combine(target's figure, base's figure)`` within each round: the noise of one round
    hits both sides of each pair alike."""
    targets = {t for rows in rounds for t in rows if t != base}
    return {
        target: [
            combine(rows[target].get(name), rows[base].get(name))
            for rows in rounds
            if target in rows and base in rows
        ]
        for target in sorted(targets)
    }


def paired(
    rounds: Rounds, name: str, combine: Combine, base: str = BASE
) -> dict[str, float | None]:
    """The median over rounds of ``per_round``."""
    return {t: median(v) for t, v in per_round(rounds, name, combine, base).items()}


def summarize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Each phase's figures, for the phases that ran (``--only`` runs one)."""
    summary = _main_phases(raw) if "latency" in raw else {}
    if "several" in raw:
        summary["several"] = summarize_several(raw["several"])
    if "distributed" in raw:
        summary["distributed"] = summarize_distributed(raw["distributed"])
    return summary


def _main_phases(raw: Mapping[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "latency": {
            c: {
                "median": medians(rounds),
                "added_p50_ms": paired(rounds, "p50_ms", difference),
                "added_p50_ms_rounds": per_round(rounds, "p50_ms", difference),
            }
            for c, rounds in raw["latency"].items()
        },
        "streaming": {
            c: {
                "median": medians(rounds),
                "ratio_to_direct": paired(rounds, "tokens_per_s", ratio),
                "ratio_rounds": per_round(rounds, "tokens_per_s", ratio),
            }
            for c, rounds in raw["streaming"].items()
        },
        "gateway": {
            "cpu_s_per_1k_tokens": _cpu_per_1k_tokens(raw["cpu"].get(GATEWAY, {})),
            "rss_mb": raw["rss_mb"],
        },
        "model_cpu_s_per_1k_tokens": _cpu_per_1k_tokens(raw["cpu"].get(BASE, {})),
        "cold_load_s": {name: median(times) for name, times in raw["cold"].items()},
        "swap": _swap(raw["swap"]),
        "relay": _relay(raw.get("relay"), raw["cpu"].get("gateway-canned", {})),
    }
    summary["shared"] = {
        c: _shared(rounds, _cpu_share(summary, c)) for c, rounds in raw.get("shared", {}).items()
    }
    summary["verdicts"] = verdicts(summary, raw["error_check"], raw["tallies"])
    return summary


def _shared(rounds: Rounds, cpu_share: float | None) -> dict[str, Any]:
    """Streams through the gateway against streams straight to its child, at once: the ratio
    of their tokens/s within each round, then the median; and that ratio with the gateway's
    CPU charged to the model (``charged``: the ratio times 1 - ``cpu_share``)."""
    ratios = per_round(rounds, "tokens_per_s", ratio).get(GATEWAY, [])
    charged = [None if r is None or cpu_share is None else r * (1 - cpu_share) for r in ratios]
    return {
        "median": medians(rounds),
        "ratio": median(ratios),
        "ratio_rounds": ratios,
        "cpu_share": cpu_share,
        "charged": median(charged),
        "charged_rounds": charged,
    }


def _cpu_share(summary: Mapping[str, Any], concurrency: str) -> float | None:
    """The gateway's CPU seconds per token relayed over direct llama-server's per token
    generated, at the same concurrency: how much the gateway could slow the model down at
    most, were every CPU second it spent taken from the model's threads."""
    gateway = summary["gateway"]["cpu_s_per_1k_tokens"].get(concurrency)
    model = summary["model_cpu_s_per_1k_tokens"].get(concurrency)
    return ratio(gateway, model)


def _cpu_per_1k_tokens(cpu: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    streams = {k.removeprefix("stream_c"): v for k, v in cpu.items() if k.startswith("stream_c")}
    figures = {c: per_thousand(v["cpu_s"], int(v["tokens"])) for c, v in streams.items()}
    total_cpu = sum(v["cpu_s"] for v in streams.values())
    figures["all"] = per_thousand(total_cpu, int(sum(v["tokens"] for v in streams.values())))
    return figures


def _swap(swaps: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "swap_seconds": median(s.get("swap_seconds") for s in swaps),
        "client_s": median(s.get("client_s") for s in swaps),
        "modes": sorted({str(s.get("mode")) for s in swaps}),
        "count": len(swaps),
    }


def _relay(
    relay: Mapping[str, Rounds] | None, cpu: Mapping[str, Mapping[str, float]]
) -> dict[str, Any] | None:
    if not relay:
        return None
    base, gateway = "canned", "gateway-canned"
    out: dict[str, Any] = {
        "latency_c1": {
            "median": medians(relay["latency_c1"]),
            "added_p50_ms": paired(relay["latency_c1"], "p50_ms", difference, base).get(gateway),
        },
        "requests_c16": {
            "median": medians(relay["requests_c16"]),
            "ratio": paired(relay["requests_c16"], "rps", ratio, base).get(gateway),
        },
        "stream_c16": {
            "median": medians(relay["stream_c16"]),
            "ratio": paired(relay["stream_c16"], "events_per_s", ratio, base).get(gateway),
        },
    }
    requests, streams = cpu.get("relay_c16"), cpu.get("relay_stream_c16")
    if requests:
        out["gateway_cpu_ms_per_request"] = _per(requests["cpu_s"] * 1000, requests["requests"])
    if streams:
        out["gateway_cpu_s_per_1k_events"] = per_thousand(streams["cpu_s"], int(streams["events"]))
    return out


def _per(amount: float, count: float) -> float | None:
    return amount / count if count else None


def verdicts(
    summary: Mapping[str, Any],
    error_check: Mapping[str, Mapping[str, Any]],
    tallies: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and pass (True), fail (False) or not
    judged (None: too few requests, or a figure missing)."""
    found: list[dict[str, Any]] = []
    for c, figures in summary["latency"].items():
        added = figures["added_p50_ms"]
        gateway, router, nginx = added.get(GATEWAY), added.get(ROUTER), added.get(NGINX)
        if c != JUDGED_LATENCY_CONCURRENCY:
            found.append(_batching_row(c, figures["added_p50_ms_rounds"]))
            continue
        reference = "" if nginx is None else f" (nginx {_ms(nginx)})"
        found.append(_verdict(
            f"added p50 latency ≤ {ADDED_P50_LIMIT_MS:g} ms (max_tokens 1, concurrency {c})",
            f"{_ms(gateway)} over direct{reference}",
            None if gateway is None else gateway <= ADDED_P50_LIMIT_MS,
        ))  # fmt: skip
        found.append(_verdict(
            f"added p50 latency ≤ ⅓ of the router's (concurrency {c})",
            f"gateway {_ms(gateway)}, router {_ms(router)}",
            None if gateway is None or router is None else gateway <= router * ROUTER_SHARE,
        ))  # fmt: skip
    found.append(_stream_verdict(summary["streaming"], summary["shared"]))
    found.append(_error_verdict(error_check.get(GATEWAY), tallies.get(GATEWAY)))
    rss = summary["gateway"]["rss_mb"]
    idle = [v for v in (rss.get("idle_start"), rss.get("idle_end")) if v is not None]
    found.append(_verdict(
        f"gateway idle RSS ≤ {IDLE_RSS_LIMIT_MB:g} MB",
        " / ".join(f"{v:.1f} MB" for v in idle) + " (after warm-up / after the run)",
        None if not idle else max(idle) <= IDLE_RSS_LIMIT_MB,
    ))  # fmt: skip
    return found


def _batching_row(concurrency: str, rounds: Mapping[str, list[float | None]]) -> dict[str, Any]:
    """Above concurrency 1 the added latency is not judged: a request's wait is mostly for a
    place in llama-server's next batch, which moves the figure by tens of ms from round to
    round for every relay alike (the rounds' ranges, quoted)."""
    spans = []
    for name in (GATEWAY, ROUTER, NGINX):
        known = sorted(v for v in rounds.get(name, []) if v is not None)
        if known:
            spans.append(f"{name} {_ms(known[0])} to {_ms(known[-1])}")
    measured = (
        "not judged: the rounds' ranges (" + "; ".join(spans) + ") measure llama-server's "
        "batching, not the relay (see Reading the figures)"
    )
    return _verdict(f"added p50 latency (max_tokens 1, concurrency {concurrency})", measured, None)


def _stream_verdict(
    streaming: Mapping[str, Mapping[str, Any]], shared: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Judged on the streams sharing one child with the gateway's CPU charged to the model,
    where they ran; otherwise on the targets' own llama-servers taking turns."""
    target = f"streaming tokens/s ≥ {STREAM_RATIO_MIN:g} of direct's at every concurrency"
    turns = {c: f["ratio_to_direct"] for c, f in streaming.items()}
    taking_turns = ", ".join(
        f"c{c}: {_num(r.get(GATEWAY), 3)} (router {_num(r.get(ROUTER), 3)})"
        for c, r in turns.items()
    )
    if shared:
        charged = {c: f["charged"] for c, f in shared.items()}
        measured = (
            "one child, both at once: "
            + ", ".join(f"c{c}: {_num(f['ratio'], 3)}" for c, f in shared.items())
            + "; with all the gateway's CPU charged to the model: "
            + ", ".join(f"c{c}: {_num(r, 3)}" for c, r in charged.items())
            + f"; separate llama-servers taking turns: {taking_turns}"
        )
        return _verdict(target, measured, _all_at_least(charged.values(), STREAM_RATIO_MIN))
    gateway = [r.get(GATEWAY) for r in turns.values()]
    return _verdict(target, taking_turns, _all_at_least(gateway, STREAM_RATIO_MIN))


def _all_at_least(values: Iterable[float | None], floor: float) -> bool | None:
    """None when there is nothing to judge or a figure is missing."""
    known = list(values)
    if not known or any(v is None for v in known):
        return None
    return all(v is not None and v >= floor for v in known)


def _error_verdict(
    check: Mapping[str, Any] | None, tally: Mapping[str, Any] | None
) -> dict[str, Any]:
    target = f"zero errors and disconnects over {ERROR_CHECK_REQUESTS:,} requests"
    if not check or not tally:
        return _verdict(target, "not run", None)
    failed = sum(check["errors"].values()) + sum(check["disconnects"].values())
    failed_all = sum(tally["errors"].values()) + sum(tally["disconnects"].values())
    measured = (
        f"{failed} in the {check['requests']:,}-request run, {failed_all} in all "
        f"{tally['requests']:,} measured gateway requests"
    )
    if failed_all or failed:
        return _verdict(target, measured, False)
    return _verdict(target, measured, True if check["requests"] >= ERROR_CHECK_REQUESTS else None)


def _verdict(target: str, measured: str, passed: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "pass": passed}


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} ms"


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
