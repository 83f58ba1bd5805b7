"""A secret per child. A child's loopback port is open to every account on the host, so
llama-server is told to refuse requests that do not carry this key (``--api-key-file``; its
``/health`` stays open): local users who find the port cannot use the model past the gateway's
keys, limits and queues, nor llama-server's own actions (``POST /props``, ``/slots``).

The key goes through a file, not the command line (``/proc/<pid>/cmdline`` is readable by
all): in a fresh 0700 directory, mode 0600, removed once the child has read it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def child_key_file() -> Iterator[tuple[str, Path]]:
    """A new key and the file that holds it, for as long as the block runs."""
    key = secrets.token_urlsafe(32)
    folder = Path(tempfile.mkdtemp(prefix="llama-supervisor-key-"))  # mode 0700
    path = folder / "api-key"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(key + "\n")
        yield key, path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
