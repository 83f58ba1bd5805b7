"""Markdown pieces the report's sections share: tables, numbers, verdict cells."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def table(head: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict_cell(value: bool | None) -> str:
    if value is None:
        return "not judged"
    return "**pass**" if value else "**FAIL**"


def counts(found: Mapping[str, int]) -> str:
    total = sum(found.values())
    if not total:
        return "0"
    return f"{total} (" + "; ".join(f"{k}: {v}" for k, v in found.items()) + ")"


def spread(values: list[float | None] | None, form: str) -> str:
    """`` (low to high)`` over the rounds, when there are several."""
    known = sorted(v for v in values or [] if v is not None)
    if len(known) < 2:
        return ""
    return f" ({form.format(known[0])} to {form.format(known[-1])})"
