"""A validated file into the first models directory, shared by pulls and imports.

Nothing appears under a model's name but a whole, validated file, and nothing placed there
meanwhile is replaced: a file on the same filesystem is hard-linked in (``os.link`` fails when
the name is taken: a 409, whenever that file came) and its old name removed; one from
elsewhere is first copied to a hidden temporary file in the models directory (the registry
skips names starting with ``.``; ``HIDDEN_COPY`` names them, for the sweep at start), synced,
then linked in the same way. Only on a filesystem without hard links is it a check then a
rename (``os.replace``). Blocking: callers run these in a thread, and long copies stop between
chunks when ``stop`` is set (the gateway shuts down)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from supervisor.errors import Conflict, PullFailed
from supervisor.models.gguf import GGUF_MAGIC, InvalidModelFile, read_gguf_info
from supervisor.models.pulls.imports import unreadable
from supervisor.models.pulls.transfer import DISK_ERRORS, Fetched
from supervisor.redact import redact_paths

CHUNK = 1 << 20
# The names hidden_copy gives its copies: .NAME.XXXXXXXX.tmp
HIDDEN_COPY = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._+-]*\.[0-9a-f]{8}\.tmp")
# link() errors of a filesystem without hard links (FAT, some network and FUSE filesystems).
NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


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


def move_in(
    part: Path,
    target: Path,
    disk_free: Callable[[Path], int],
    stop: threading.Event | None = None,
) -> None:
    """The validated ``part`` moved to ``target`` (a 409 if the name is taken, then or
    meanwhile); copied in when they lie on two filesystems (the part is removed once the copy
    is in place; the copy stops between chunks when ``stop`` is set)."""
    check_free(target.parent, target.name)
    try:
        link_in(part, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    size = part.stat().st_size
    free = disk_free(target.parent)
    if size > free:
        raise PullFailed("disk_full", f"{size} bytes to copy, {free} free in the models directory")
    hidden, _ = hidden_copy(part, target.parent, target.name, size, stop)
    place(hidden, target)
    part.unlink(missing_ok=True)


def link_in(source: Path, target: Path) -> None:
    """``source`` under ``target``'s name, never over a file there: a hard link, which fails
    when the name is taken (a 409), then the source's name removed. On a filesystem without
    hard links, a check then a rename. ``OSError`` (``EXDEV`` among them) for the caller."""
    try:
        os.link(source, target)
    except FileExistsError as exc:
        raise Conflict(f"{target.name} is already in the models directory", param="file") from exc
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        check_free(target.parent, target.name)
        os.replace(source, target)
        return
    with contextlib.suppress(OSError):  # a second name of the same file: swept, not fatal
        source.unlink()


def hidden_copy(
    source: Path,
    folder: Path,
    name: str,
    max_bytes: int,
    stop: threading.Event | None = None,
    label: str | None = None,
) -> tuple[Path, Fetched]:
    """``source`` copied to a hidden file in ``folder``, synced, with its size and sha256;
    refused (and the copy removed) when it is not GGUF or outgrows ``max_bytes``, or
    abandoned when ``stop`` is set (the gateway shuts down). ``label``: the source as the
    client named it (an import), for a 403 or 400 when it cannot be read; without it, the
    ``OSError`` itself."""
    hidden = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    hasher, size = hashlib.sha256(), 0
    try:
        with _reading(source, label) as reader, hidden.open("xb") as writer:
            while chunk := _read(reader, label):
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
    """The hidden copy moved to its name (removed instead if that name was taken)."""
    try:
        link_in(hidden, target)
    except BaseException:
        hidden.unlink(missing_ok=True)
        raise


def sweep(folder: Path) -> list[str]:
    """Remove the hidden copies a killed gateway left in ``folder`` (names of
    ``hidden_copy``'s pattern only); the names removed."""
    removed = []
    try:
        candidates = [path for path in folder.iterdir() if HIDDEN_COPY.fullmatch(path.name)]
    except OSError:
        return []
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path.name)
    return removed


@contextlib.contextmanager
def _reading(source: Path, label: str | None) -> Iterator[BinaryIO]:
    try:
        reader = source.open("rb")
    except OSError as exc:
        if label is None:
            raise
        raise unreadable(exc, label) from exc
    with reader:
        yield reader


def _read(reader: BinaryIO, label: str | None) -> bytes:
    try:
        return reader.read(CHUNK)
    except OSError as exc:
        if label is None:
            raise
        raise unreadable(exc, label) from exc
