"""From the beyond-one-machine rows (``bench/distributed.py``) to what the report says:
medians over rounds, what each hop adds (taken within a round, then the median), and the
split model's tokens/s over the local one's. Pure functions over the plain data the runner
records. Nothing here is judged: the issue asks for the figures, not a target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .distributed import CHILD, GATEWAY, LOCAL, SPLIT, VIA_PEER
from .stats import difference, median, ratio

Rounds = list[dict[str, Any]]
# (what is added, the upper hop, the one under it)
HOPS = (("the gateway", GATEWAY, CHILD), ("a peer hop", VIA_PEER, GATEWAY))
HOP_FIGURES = {"latency_c1": ("p50_ms", "p95_ms"), "stream_c1": ("ttft_p50_ms", "ttft_p95_ms")}


def summarize_distributed(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "peer_hop": _part(raw.get("peer_hop"), _peer_hop),
        "rpc_split": _part(raw.get("rpc_split"), _rpc_split),
    }


def _part(raw: Mapping[str, Any] | None, summarize: Any) -> dict[str, Any]:
    if raw is None:
        return {"skipped": "not run"}
    for reason in ("failed", "skipped"):
        if reason in raw:
            return {reason: raw[reason]}
    result: dict[str, Any] = summarize(raw["rounds"])
    return result


def medians(rounds: Rounds) -> dict[str, dict[str, float | None]]:
    """Each target's each number, the median over the rounds it ran in."""
    fields: dict[str, set[str]] = {}
    for rows in rounds:
        for target, row in rows.items():
            fields.setdefault(target, set()).update(
                k for k, v in row.items() if v is None or isinstance(v, int | float)
            )
    return {
        target: {f: median(rows[target].get(f) for rows in rounds if target in rows)
                 for f in sorted(names)}
        for target, names in fields.items()
    }  # fmt: skip


def added_per_round(rounds: Rounds, figure: str, upper: str, lower: str) -> list[float | None]:
    """``upper``'s figure minus ``lower``'s, round by round."""
    return [
        difference(rows[upper].get(figure), rows[lower].get(figure))
        for rows in rounds
        if upper in rows and lower in rows
    ]


def _peer_hop(rounds: Mapping[str, Rounds]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for workload, figures in HOP_FIGURES.items():
        found = rounds.get(workload, [])
        added: dict[str, dict[str, Any]] = {}
        for label, upper, lower in HOPS:
            per_figure = {f: added_per_round(found, f, upper, lower) for f in figures}
            added[label] = {
                "median": {f: median(values) for f, values in per_figure.items()},
                "rounds": per_figure,
            }
        summary[workload] = {"median": medians(found), "added": added, "rounds": len(found)}
    return summary


def _rpc_split(rounds: Mapping[str, Rounds]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for workload, found in rounds.items():
        ratios = [
            ratio(rows[SPLIT].get("tokens_per_s"), rows[LOCAL].get("tokens_per_s"))
            for rows in found
            if SPLIT in rows and LOCAL in rows
        ]
        summary[workload] = {
            "median": medians(found),
            "ratio": median(ratios),
            "ratio_rounds": ratios,
            "rounds": len(found),
        }
    return summary
