"""Which files may be imported: those under ``import_dirs`` (a mounted card, a shared folder),
symlinks followed and held to the same rule, so that an import can never read anything else
of the host. Messages name only the path the client gave."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from supervisor.errors import BadRequest, NotFound, SourceNotAllowed, SupervisorError


def import_source(import_dirs: list[Path], path: str) -> Path:
    """The file ``path`` names (absolute, or relative to the first import folder), resolved.
    403 when it lies outside the import folders, as given or once its links are followed;
    404 when it is missing; 400 when it is not a file."""
    if not import_dirs:
        raise SourceNotAllowed("imports from paths are off: set import_dirs to allow them")
    roots = [Path(os.path.realpath(folder.expanduser())) for folder in import_dirs]
    given = Path(path)
    candidate = given if given.is_absolute() else roots[0] / given
    # As given first, so that a probe learns nothing of files outside the folders.
    if not _inside(
        Path(os.path.normpath(candidate)), roots + [f.expanduser() for f in import_dirs]
    ):
        raise SourceNotAllowed(f"'{path}' is outside import_dirs", param="path")
    try:
        resolved = candidate.resolve(strict=True)
    except PermissionError as exc:
        raise unreadable(exc, path) from exc
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise NotFound(f"no file '{path}' to import", param="path") from exc
    if not _inside(resolved, roots):
        raise SourceNotAllowed(f"'{path}' links outside import_dirs", param="path")
    if not resolved.is_file():
        raise BadRequest(f"'{path}' is not a file", param="path")
    return resolved


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def unreadable(exc: OSError, path: str) -> SupervisorError:
    """An import source that cannot be read, named as the client gave it (``path``): a 403
    when the gateway may not read it, else a 400 with the system's reason."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SourceNotAllowed(f"cannot read '{path}': permission denied", param="path")
    reason = exc.strerror or "input/output error"
    return BadRequest(f"cannot read '{path}': {reason.lower()}", param="path")
