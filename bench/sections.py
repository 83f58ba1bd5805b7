"""A phase run alone (``python -m bench --only NAME``) written into an earlier run's results,
so that rerunning one section does not drop the others' figures from docs/benchmarks.md and
bench/results/latest.json.

The results are ``{"meta", "summary", "raw"}``; each phase that runs alone keeps all of its
figures under its own key in each of the three (``several``, ``distributed``). Merging
replaces that key and keeps everything else, the earlier run's header (date, command, time
taken) included; the phase's own meta gains ``alone``: when, how and with which llama-server
it was rerun, which its section shows."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARTS = ("meta", "summary", "raw")
ALONE_MACHINE_KEYS = ("llama_server", "llama_build_key", "checkout")


def read_previous(path: Path | None) -> dict[str, Any] | None:
    """An earlier run's results, or None where there are none to merge into."""
    if path is None or not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not all(isinstance(found.get(p), dict) for p in PARTS):
        return None
    return found


def alone(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a section run alone says about its run."""
    machine = meta.get("machine", {})
    return {
        "date": meta["date"],
        "command": meta["command"],
        "duration_s": meta["duration_s"],
        **{key: machine.get(key, "unknown") for key in ALONE_MACHINE_KEYS},
    }


def merged(
    previous: Mapping[str, Any] | None, fresh: Mapping[str, Any], section: str
) -> dict[str, Any]:
    """``previous`` with ``section``'s figures replaced by ``fresh``'s (a section that did not
    run this time is dropped rather than left stale); ``fresh`` itself where there is nothing
    earlier."""
    if previous is None:
        return dict(fresh)
    result = copy.deepcopy(dict(previous))
    for part in PARTS:
        if section in fresh[part]:
            result[part][section] = copy.deepcopy(fresh[part][section])
        else:
            result[part].pop(section, None)
    return result
