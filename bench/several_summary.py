"""The several-models figures (issue 17): medians over rounds, the gateway's throughput over
its baseline's paired within a round, and the targets judged. Pure functions over what
``bench/several.py`` records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .stats import median, ratio

GATEWAY = "gateway"
BASELINES = {"two_models": "split", "chat_embeddings": "split", "alone": "direct"}
RATIO_FIELDS = {"streams": "streams_per_s", "embeddings": "embeddings_per_s",
                "combined": "completed_per_s"}  # fmt: skip
TWO_MODELS_MIN = 0.9
CHAT_EMBEDDINGS_MIN = 0.9
ALONE_MIN = 0.97
COUNTED = ("deliberate", "lost", "warmup_deliberate", "warmup_lost", "retries")


def summarize_several(raw: Mapping[str, Any]) -> dict[str, Any]:
    workloads = {
        workload: _workload(rounds, BASELINES.get(workload, "split"))
        for workload, rounds in raw.get("rounds", {}).items()
        if rounds
    }
    return {"workloads": workloads, "verdicts": several_verdicts(workloads)}


def _workload(rounds: list[Mapping[str, Mapping[str, Any]]], base: str) -> dict[str, Any]:
    setups = sorted({name for rows in rounds for name in rows})
    ratios: dict[str, dict[str, list[float | None]]] = {
        name: {
            key: [ratio(rows[name].get(field), rows[base].get(field))
                  for rows in rounds if name in rows and base in rows]
            for key, field in RATIO_FIELDS.items()
        }
        for name in setups
        if name != base
    }  # fmt: skip
    return {
        "baseline": base,
        "rounds": len(rounds),
        "median": {name: _medians(_of(rounds, name)) for name in setups},
        "totals": {name: _totals(_of(rounds, name)) for name in setups},
        "ratio": {name: {k: median(v) for k, v in r.items()} for name, r in ratios.items()},
        "ratio_rounds": ratios,
        "failed": {
            name: [str(row["failed"]) for row in _of(rounds, name) if "failed" in row]
            for name in setups
            if any("failed" in row for row in _of(rounds, name))
        },
    }


def _of(rounds: list[Mapping[str, Mapping[str, Any]]], name: str) -> list[Mapping[str, Any]]:
    """Setup ``name``'s rows, from the rounds it ran in."""
    return [rows[name] for rows in rounds if name in rows]


def _medians(rows: list[Mapping[str, Any]]) -> dict[str, float | None]:
    """Each numeric figure's median over rounds; per-label completions likewise."""
    names = {k for row in rows for k, v in row.items() if _numeric(v)}
    found: dict[str, float | None] = {
        name: median(row.get(name) for row in rows) for name in sorted(names)
    }
    labels = {label for row in rows for label in row.get("completed_by_label", {})}
    for label in sorted(labels):
        found[f"completed:{label}"] = median(
            row.get("completed_by_label", {}).get(label, 0) for row in rows
        )
    return found


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _totals(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Failures add up over rounds (a target of none is judged on all of them)."""
    errors: Counter[str] = Counter()
    warmup: Counter[str] = Counter()
    for row in rows:
        errors.update(row.get("errors", {}))
        warmup.update(row.get("warmup_errors", {}))
    totals: dict[str, Any] = {key: sum(int(row.get(key) or 0) for row in rows) for key in COUNTED}
    return totals | {"errors": dict(errors), "warmup_errors": dict(warmup)}


def several_verdicts(workloads: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for several models, each with what was measured and pass (True),
    fail (False) or not judged (None: not run, or a figure missing)."""
    found = []
    two = workloads.get("two_models")
    found.append(_ratio_verdict(
        f"two models, 16 clients each: streams ≥ {TWO_MODELS_MIN:g} of the hand split's",
        two, ("streams",), TWO_MODELS_MIN,
    ))  # fmt: skip
    found.append(_ratio_verdict(
        f"chat + embeddings on one model: streams and embeddings each ≥ "
        f"{CHAT_EMBEDDINGS_MIN:g} of the hand split's",
        workloads.get("chat_embeddings"), ("streams", "embeddings"), CHAT_EMBEDDINGS_MIN,
    ))  # fmt: skip
    found.append(_ratio_verdict(
        f"one model alone: streams ≥ {ALONE_MIN:g} of one direct llama-server's (defaults)",
        workloads.get("alone"), ("streams",), ALONE_MIN,
    ))  # fmt: skip
    found.append(_lost_verdict(workloads))
    return found


def _ratio_verdict(
    target: str, figures: Mapping[str, Any] | None, keys: tuple[str, ...], floor: float
) -> dict[str, Any]:
    if not figures or GATEWAY not in figures["ratio"]:
        return _verdict(target, "not run", None)
    failed = figures.get("failed", {})
    if failed:  # the gateway's failing fails the target; its baseline's leaves it unjudged
        said = "; ".join(f"{name} failed: {messages[0]}" for name, messages in failed.items())
        return _verdict(target, said, False if GATEWAY in failed else None)
    ratios = figures["ratio"][GATEWAY]
    rounds = figures["ratio_rounds"][GATEWAY]
    parts = [f"{key} {_num(ratios[key])}{_range(rounds[key])}" for key in keys]
    gateway = figures["median"].get(GATEWAY, {})
    base = figures["median"].get(figures["baseline"], {})
    counts = "; ".join(
        f"{_num(gateway.get(key), 0)} vs {_num(base.get(key), 0)} {key}"
        for key in ("streams", "embeddings")
        if key in keys
    )
    if len(keys) > 1:
        parts.append(f"together {_num(ratios.get('combined'))}")
    window = _num(gateway.get("window_s"), 0)
    measured = f"{', '.join(parts)} ({counts} in {window} s, median of {figures['rounds']})"
    values = [ratios[key] for key in keys]
    if any(v is None for v in values):
        return _verdict(target, measured, None)
    return _verdict(target, measured, all(v is not None and v >= floor for v in values))


def _lost_verdict(workloads: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every gateway request of every workload and round, the warm-up's included: lost are
    failures other than 429/503 with a Retry-After header."""
    target = "nothing lost but deliberate 429/503 with Retry-After (gateway, every workload)"
    totals = [f["totals"][GATEWAY] for f in workloads.values() if GATEWAY in f["totals"]]
    if not totals:
        return _verdict(target, "not run", None)
    lost = sum(t["lost"] for t in totals)
    warm_lost = sum(t["warmup_lost"] for t in totals)
    deliberate = sum(t["deliberate"] + t["warmup_deliberate"] for t in totals)
    kinds: Counter[str] = Counter()
    for t in totals:
        kinds.update(t["errors"])
        kinds.update(t["warmup_errors"])
    detail = "; ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
    measured = (
        f"{lost} lost in the measured windows, {warm_lost} in the warm-ups; {deliberate} "
        f"deliberate" + (f" ({detail})" if detail else "")
    )
    return _verdict(target, measured, lost + warm_lost == 0)


def _verdict(target: str, measured: str, passed: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "pass": passed}


def _range(values: list[float | None]) -> str:
    known = sorted(v for v in values if v is not None)
    return f" ({known[0]:.3f} to {known[-1]:.3f})" if len(known) > 1 else ""


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"
