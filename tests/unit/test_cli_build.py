"""`llama-supervisor build` with a fake build script: the options it passes, the log file, the
binary path it prints, failures, and how output lines become progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.build import BuildEvent, find_build_script, parse_build_line
from supervisor.cli.program import main

FAKE_SCRIPT = """\
#!/usr/bin/env bash
echo "[build_llamacpp] args: $*" >&2
echo "[build_llamacpp] building llama-server: backend=cpu" >&2
echo "-- Configuring done" >&2
echo "[ 50%] Building CXX object common/CMakeFiles/common.dir/arg.cpp.o" >&2
echo "[100%] Linking CXX executable ../../bin/llama-server" >&2
if [ -n "${FAIL:-}" ]; then echo "c++: fatal error: killed" >&2; exit 3; fi
echo "/cache/builds/abc/bin/llama-server"
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "build_llamacpp.sh"
    path.write_text(FAKE_SCRIPT)  # not executable: the CLI runs it through bash
    return path


def test_build_runs_the_script_and_prints_the_binary(
    script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    argv = ["build", "--script", str(script), "--cache-dir", str(cache), "--backend", "cuda",
            "--jobs", "3", "--force", "--cmake-flag=-DGGML_AVX512=OFF", "--cmake-flag=-DX=1",
            "--source", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "/cache/builds/abc/bin/llama-server"
    logs = list((cache / "logs").glob("build-*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert "[ 50%] Building CXX object" in log and "/cache/builds/abc/bin/llama-server" in log
    assert (
        f"args: --backend cuda --source {tmp_path} --jobs 3 --cache-dir {cache} "
        "--cmake-flag -DGGML_AVX512=OFF --cmake-flag -DX=1 --force" in log
    )
    # Without a bar, the script's own step lines still show; cmake's chatter does not.
    assert "[build_llamacpp] building llama-server" in captured.err
    assert "Building CXX object" not in captured.err
    assert str(logs[0]) in captured.err


def test_verbose_shows_every_line(
    script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--script", str(script), "--cache-dir", str(tmp_path), "-v", "--no-progress"]
    assert main(argv) == 0
    assert "[ 50%] Building CXX object" in capsys.readouterr().err


def test_a_progress_bar_does_not_break_the_output(
    script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--script", str(script), "--cache-dir", str(tmp_path), "--progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "/cache/builds/abc/bin/llama-server"


def test_a_failed_build_shows_the_log_tail_and_path(
    script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAIL", "1")
    assert main(["build", "--script", str(script), "--cache-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "build failed (exit 3)" in captured.err
    assert "c++: fatal error: killed" in captured.err
    log = next((tmp_path / "logs").glob("build-*.log"))
    assert str(log) in captured.err.replace("\n", "")


def test_a_missing_script_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.sh"
    assert main(["build", "--script", str(missing), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no build script at {missing}" in err and "--script" in err


def test_the_default_script_is_the_checkouts() -> None:
    script = find_build_script()
    assert script.name == "build_llamacpp.sh"
    assert (script.parent / "supervisor" / "cli" / "build.py").is_file()


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("[build_llamacpp] unpacking x.tar.gz", BuildEvent(step="unpacking x.tar.gz")),
        (
            "[ 42%] Building CXX object ggml/src/CMakeFiles/ggml-cpu.dir/ops.cpp.o",
            BuildEvent(percent=42, detail="ops.cpp"),
        ),
        (
            "[100%] Linking CXX executable ../../bin/llama-server",
            BuildEvent(percent=100, detail="llama-server"),
        ),
        (
            "[  3%] Generating build details",
            BuildEvent(percent=3, detail="Generating build details"),
        ),
        ("-- Configuring done (1.2s)", BuildEvent(step="configuring with cmake")),
        ("-- The CXX compiler identification is GNU 12", BuildEvent(step="configuring with cmake")),
        ("/usr/bin/c++ -O3 -c foo.cpp", None),
        ("", None),
    ],
)
def test_parse_build_line(line: str, event: BuildEvent | None) -> None:
    assert parse_build_line(line) == event


def test_ninja_counts_become_percentages() -> None:
    line = "[12/48] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o"
    assert parse_build_line(line) == BuildEvent(percent=25, detail="ggml.c")
