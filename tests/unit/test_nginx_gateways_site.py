"""The nginx site for several gateways (deploy/nginx/llama-supervisor-gateways.conf): the
one-gateway site's server block unchanged, an upstream nginx accepts, and a balancing
method that suits long generations."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from nginx_site import REPO, SITE, nginx_argv, write_nginx_conf

from bench.nginx import find_nginx

GATEWAYS_SITE = REPO / "deploy" / "nginx" / "llama-supervisor-gateways.conf"


def server_block(path: Path) -> str:
    text = path.read_text()
    return text[text.index("\nserver {") :]


def upstream_lines(path: Path) -> list[str]:
    text = path.read_text()
    block = text[text.index("upstream llama_supervisor {") : text.index("\n}")]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()[1:]]


def test_only_the_upstream_differs_from_the_one_gateway_site() -> None:
    assert server_block(GATEWAYS_SITE) == server_block(SITE)


def test_the_upstream_names_several_gateways_and_balances_by_open_requests() -> None:
    lines = [line for line in upstream_lines(GATEWAYS_SITE) if line]
    servers = [line for line in lines if line.startswith("server ")]
    assert len(servers) >= 2
    assert all("max_fails=" in line and "fail_timeout=" in line for line in servers)
    # nginx wants the balancing method before keepalive, or it is ignored.
    assert lines.index("least_conn;") < next(
        i for i, line in enumerate(lines) if line.startswith("keepalive ")
    )


def test_nginx_accepts_the_gateways_site(tmp_path: Path) -> None:
    nginx = find_nginx()
    if nginx is None:
        reason = "nginx is not installed: make system-deps (apt-get install nginx)"
        if os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    site = GATEWAYS_SITE.read_text().replace("listen 80;", "listen 127.0.0.1:18081;")
    site = site.replace("listen [::]:80;", "")
    conf = write_nginx_conf(tmp_path, site)
    done = subprocess.run(nginx_argv(nginx, conf, "-t"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
