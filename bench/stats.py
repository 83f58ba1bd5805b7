"""Pure figures over samples: percentiles, medians, ratios. No I/O, no clocks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) by linear interpolation between closest ranks (numpy's
    default), or None for no samples."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile out of range: {q}")
    if not samples:
        return None
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that exist; None when none do."""
    present = [v for v in values if v is not None]
    return percentile(present, 50)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def difference(minuend: float | None, subtrahend: float | None) -> float | None:
    if minuend is None or subtrahend is None:
        return None
    return minuend - subtrahend


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 in milliseconds."""
    return {
        f"p{q}_ms": _ms(percentile(seconds, q))
        for q in (50, 90, 99)  # the three
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def per_thousand(amount: float, count: int) -> float | None:
    """``amount`` per 1,000 of ``count`` (CPU seconds per 1,000 tokens)."""
    return None if count <= 0 else amount * 1000.0 / count
