"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a fresh cluster in a
temporary directory, listening on a free loopback port and a private socket directory,
stopped and removed afterwards even when a test failed.

PostgreSQL refuses to run as root, so under root (containers, CI) the cluster is made and run
as the ``postgres`` user, in a directory handed to it. Clients log in with a password over
TCP (``scram-sha-256``), as a gateway would, so a test can check the password never leaks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from supervisor.children.process import free_port

PASSWORD = "pg-test-secret-7f3a"
USER = "postgres"


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps them versioned)."""
    dirs = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    found = [d for d in dirs if (d / "initdb").exists() and (d / "postgres").exists()]
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One running cluster; ``url(db)`` for a database in it, ``create_database()`` for a
    fresh one, ``stop()``/``start()`` to take the server away and bring it back."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(self.root, USER)
            shutil.chown(self.sockets, USER)
            shutil.chown(pwfile, USER)
        self.root.chmod(0o700)
        try:
            self._run(
                str(bin_dir / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--no-instructions",
            )  # fmt: skip
            self.start()
        except BaseException:
            self.remove()
            raise

    def _run(self, *argv: str) -> None:
        subprocess.run(
            argv, check=True, capture_output=True, timeout=120, cwd=self.root,
            user=USER if self._as_root else None,
        )  # fmt: skip

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def start(self) -> None:
        """Start the server (again) on its port, and wait until it takes connections."""
        argv = [
            str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.sockets),
            # Durable against a killed client, not against a crashed host: enough here.
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
        ]  # fmt: skip
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            user=USER if self._as_root else None,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database's URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def running_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.remove()
