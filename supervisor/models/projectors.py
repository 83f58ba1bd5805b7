"""Which multimodal projector (``mmproj*.gguf``) goes with which model: pure functions over
the file names of one folder. The registry (``models/registry.py``) walks the folders and loads what
these pair."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[-_. ]")
# Fewer shared characters than this say nothing about whether a projector fits a model.
MIN_NAME_MATCH = 4


def is_projector_file_name(name: str) -> bool:
    """Whether a directory entry named ``name`` is a multimodal projector (llama.cpp's own
    convention: the name starts with "mmproj")."""
    lower = name.lower()
    return not name.startswith(".") and lower.startswith("mmproj") and lower.endswith(".gguf")


def pair_projectors(models: list[str], projectors: list[str]) -> dict[str, str]:
    """Which projector goes with which model, among the file names of one folder.

    One model and one projector pair whatever their names (a model's own folder). Otherwise a
    model takes the projector whose name (less "mmproj" and separators) is contained in its
    own, else shares the longest prefix with it, if no other projector matches it as well and
    no other model matches that projector better; several quantizations of one model may
    share one projector. Anything less clear pairs nothing: a wrong projector fails the load,
    a missing one only costs vision (and the config's ``mmproj`` says what to pair)."""
    if len(models) == 1 and len(projectors) == 1:
        return {models[0]: projectors[0]}
    score = {(m, p): _name_match(p, m) for m in models for p in projectors}
    best_model_score = {p: max((score[m, p] for m in models), default=0) for p in projectors}
    paired: dict[str, str] = {}
    for model in models:
        ranked = sorted(((score[model, p], p) for p in projectors), reverse=True)
        if not ranked:
            continue
        top, projector = ranked[0]
        runner_up = ranked[1][0] if len(ranked) > 1 else -1
        if top >= MIN_NAME_MATCH and top > runner_up and top == best_model_score[projector]:
            paired[model] = projector
    return paired


def _name_match(projector: str, model: str) -> int:
    """How many characters of their names a projector and a model share."""
    key, target = _name_key(projector), _name_key(model)
    if key and key in target:
        return len(key)
    shared = 0
    while shared < min(len(key), len(target)) and key[shared] == target[shared]:
        shared += 1
    return shared


def _name_key(file_name: str) -> str:
    stem = file_name.lower().removesuffix(".gguf").removeprefix("mmproj")
    return _SEPARATORS.sub("", stem)
