"""Finding the llama-server binary: the configured path, else the newest cached build, else
PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from supervisor.errors import ConfigError

HOW_TO_BUILD = "build one with ./build_llamacpp.sh, or pass --llama-server PATH"


def find_llama_server(configured: Path | None, cache_dir: Path) -> Path:
    if configured is not None:
        path = configured.expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"llama-server not found or not executable: {path}")
        return path.resolve()
    cached = sorted(
        (p for p in (cache_dir / "builds").glob("*/bin/llama-server") if os.access(p, os.X_OK)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if cached:
        return cached[0]
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    raise ConfigError(
        f"no llama-server binary found in {cache_dir / 'builds'} or PATH: {HOW_TO_BUILD}"
    )
