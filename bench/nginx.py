"""The ``nginx`` reference target: Debian's nginx run privately (its own nginx.conf, pid, logs
and temp files under the work dir, in the foreground) as a reverse proxy in front of a direct
llama-server of its own. nginx spends next to no CPU per request, so what it adds over direct
is roughly what one extra loopback hop costs on the machine."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from supervisor.children.process import free_port

from .targets import LlamaSettings, Target, ready, spawn, start_direct

NAME = "nginx"


def find_nginx() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a normal user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def user_directive() -> str:
    """As root, nginx would hand its workers to "nobody": keep them as whoever runs it."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"


def version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ") or "nginx"


def nginx_conf(workdir: Path, upstream_port: int, listen_port: int) -> str:
    """Upstream keep-alive (HTTP/1.1, no ``Connection: close``) and no buffering, so SSE
    streams through event by event; reads may wait as long as a long generation. Idle
    upstream connections are dropped after 4 s, below llama-server's 5 s keep-alive, so nginx
    never sends on a connection llama-server is closing (a 502 for a POST otherwise)."""
    temp = workdir / "temp"
    return f"""{user_directive()}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream llama {{ server 127.0.0.1:{upstream_port}; keepalive 16; keepalive_timeout 4s; }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://llama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }}
    }}
}}
"""


def start_nginx(nginx: str, settings: LlamaSettings, workdir: Path) -> Target:
    """nginx in front of its own llama-server ("nginx-upstream"); stopping the target stops
    both."""
    upstream = start_direct(settings, workdir, name=f"{NAME}-upstream")
    try:
        directory = workdir / NAME
        (directory / "temp").mkdir(parents=True, exist_ok=True)
        port = free_port()
        upstream_port = int(upstream.base_url.rsplit(":", 1)[1])
        conf = directory / "nginx.conf"
        conf.write_text(nginx_conf(directory, upstream_port, port))
        log = directory / "nginx.log"
        # -e: the error log before the config is read (the default, /var/log/nginx, may be closed)
        argv = [nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
        proc = spawn(argv, log)
    except BaseException:
        upstream.stop()
        raise
    url = f"http://127.0.0.1:{port}"
    return ready(Target(NAME, url, settings.model_id, proc, log, upstream=upstream))
