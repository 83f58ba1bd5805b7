"""A validated file into the first models directory, shared by pulls and imports.

Nothing appears under a model's name but a whole, validated file: a file on the same
filesystem is renamed in (``os.replace``, atomic); one from elsewhere is first copied to a
hidden temporary file in the models directory (the registry skips names starting with
``.``), synced, then renamed. Blocking: callers run these in a thread."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from supervisor.errors import Conflict, PullFailed
from supervisor.models.gguf import GGUF_MAGIC, InvalidModelFile, read_gguf_info
from supervisor.models.pulls.transfer import DISK_ERRORS, Fetched
from supervisor.redact import redact_paths

CHUNK = 1 << 20


def check_free(models_dir: Path, name: str) -> Path:
    """Where ``name`` goes in ``models_dir``; a 409 if a file (or a link) is there."""
    target = models_dir / name
    if target.exists() or target.is_symlink():
        raise Conflict(f"{name} is already in the models directory", param="file")
    return target


def validate(path: Path, fetched: Fetched, expected_sha256: str | None) -> None:
    """``not_gguf`` unless ``path`` holds a whole GGUF header whose tensors fit the file;
    ``checksum_mismatch`` unless its sha256 is the one the client gave."""
    try:
        read_gguf_info(path)
    except InvalidModelFile as exc:
        raise PullFailed("not_gguf", f"not a usable GGUF model: {redact_paths(str(exc))}") from exc
    if expected_sha256 is not None and fetched.sha256 != expected_sha256:
        raise PullFailed(
            "checksum_mismatch", f"sha256 is {fetched.sha256}, not {expected_sha256} as given"
        )


def move_in(part: Path, target: Path, disk_free: Callable[[Path], int]) -> None:
    """The validated ``part`` renamed to ``target``; copied in when they lie on two
    filesystems (the part is removed once the copy is in place)."""
    check_free(target.parent, target.name)
    try:
        os.replace(part, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    size = part.stat().st_size
    free = disk_free(target.parent)
    if size > free:
        raise PullFailed("disk_full", f"{size} bytes to copy, {free} free in the models directory")
    hidden, _ = hidden_copy(part, target.parent, target.name, size)
    place(hidden, target)
    part.unlink(missing_ok=True)


def hidden_copy(
    source: Path, folder: Path, name: str, max_bytes: int, stop: threading.Event | None = None
) -> tuple[Path, Fetched]:
    """``source`` copied to a hidden file in ``folder``, synced, with its size and sha256;
    refused (and the copy removed) when it is not GGUF or outgrows ``max_bytes``, or
    abandoned when ``stop`` is set (the gateway shuts down)."""
    hidden = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    hasher, size = hashlib.sha256(), 0
    try:
        with source.open("rb") as reader, hidden.open("xb") as writer:
            while chunk := reader.read(CHUNK):
                if stop is not None and stop.is_set():
                    raise PullFailed("cancelled", "the gateway shut down")
                if size == 0 and not chunk.startswith(GGUF_MAGIC):
                    raise PullFailed("not_gguf", "the file is not a GGUF model (bad magic)")
                size += len(chunk)
                if size > max_bytes:
                    raise PullFailed("too_large", f"the file is over {max_bytes} bytes")
                hasher.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException as exc:
        hidden.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
            raise PullFailed("disk_full", "the disk is full") from exc
        raise
    return hidden, Fetched(size, hasher.hexdigest())


def place(hidden: Path, target: Path) -> None:
    """The hidden copy renamed to its name (removed instead if that name was taken)."""
    try:
        check_free(target.parent, target.name)
        os.replace(hidden, target)
    except BaseException:
        hidden.unlink(missing_ok=True)
        raise
