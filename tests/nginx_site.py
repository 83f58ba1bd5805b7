"""The shipped nginx site (deploy/nginx/llama-supervisor.conf) run by a private nginx.

The site is used as shipped, except for the addresses: its upstream points at a test gateway
and it listens on a free loopback port. A minimal nginx.conf of our own wraps it, with every
path nginx writes (pid, logs, temp files) under a temporary directory.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.nginx import user_directive

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "deploy" / "nginx" / "llama-supervisor.conf"


def _replace_once(pattern: str, replacement: str, text: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"the site should have one match of {pattern!r}, has {count}")
    return new


def site_for(upstream_port: int, listen_port: int, read_timeout: str | None = None) -> str:
    """The shipped site, pointed at ``127.0.0.1:upstream_port`` and listening on
    ``127.0.0.1:listen_port``; ``read_timeout`` replaces its proxy_read_timeout."""
    text = SITE.read_text()
    text = _replace_once(r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream_port};", text)
    text = _replace_once(r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    text = _replace_once(r"^\s*listen \[::\]:80;\n", "", text)
    if read_timeout is not None:
        text = _replace_once(
            r"proxy_read_timeout \S+;", f"proxy_read_timeout {read_timeout};", text
        )
    return text


def write_nginx_conf(workdir: Path, site: str) -> Path:
    """An nginx.conf in ``workdir`` that runs in the foreground and includes ``site``."""
    site_path = workdir / "site.conf"
    site_path.write_text(site)
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user_directive()}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site_path};
}}
"""
    )
    return conf


def nginx_argv(nginx: str, conf: Path, *extra: str) -> list[str]:
    workdir = conf.parent
    # -e: the error log before the config is read (the default, /var/log/nginx, may be closed).
    return [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf), *extra]


class RunningNginx:
    """nginx in the foreground (``daemon off``) with ``conf``; stop() ends it and its worker."""

    def __init__(self, nginx: str, conf: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.error_log = conf.parent / "error.log"
        self.proc = subprocess.Popen(
            nginx_argv(nginx, conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_listening(port)

    def _wait_listening(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {stderr}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nginx's fast shutdown, workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
