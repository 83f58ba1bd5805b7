"""Finding llama.cpp's RPC server: the configured path, else the one beside the llama-server the
gateway would run (the same build, so the same RPC protocol), else PATH. The pinned llama.cpp
names it ``ggml-rpc-server``; older ones ``rpc-server``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from supervisor.children.binary import find_llama_server
from supervisor.errors import ConfigError

NAMES = ("ggml-rpc-server", "rpc-server")
HOW_TO_BUILD = (
    "build one with ./build_llamacpp.sh (it builds the RPC server too), or pass --rpc-server PATH"
)


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_rpc_server(configured: Path | None, cache_dir: Path) -> Path:
    if configured is not None:
        path = configured.expanduser()
        if not _runnable(path):
            raise ConfigError(f"rpc-server not found or not executable: {path}")
        return path.resolve()
    try:
        beside = find_llama_server(None, cache_dir).parent
    except ConfigError:
        beside = None
    if beside is not None:
        for name in NAMES:
            if _runnable(beside / name):
                return beside / name
    for name in NAMES:
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    where = f"beside {beside / 'llama-server'}" if beside else f"in {cache_dir / 'builds'}"
    raise ConfigError(f"no ggml-rpc-server found {where} or on PATH: {HOW_TO_BUILD}")
