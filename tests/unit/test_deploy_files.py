"""deploy/: the systemd unit and launchd plist as install.sh renders them, the example config,
and the nginx site, checked by the tools that will read them (systemd-analyze, plistlib, nginx)."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nginx_site import REPO, SITE, nginx_argv, site_for, write_nginx_conf

from bench.nginx import find_nginx
from supervisor.config import ENV_PREFIX, load_settings

DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
EXAMPLE_CONFIG = DEPLOY / "config.example.toml"
UNIT = "etc/systemd/system/llama-supervisor.service"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
REQUIRED = os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """An executable at a real path: systemd-analyze checks that ExecStart exists."""
    path = tmp_path / "venv" / "bin" / "llama-supervisor"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def staged_linux(tmp_path: Path, fake_bin: Path) -> Path:
    root = tmp_path / "root"
    done = install(
        "--platform", "linux", "--destdir", str(root), "--prefix", str(fake_bin.parent.parent),
        "--bin", str(fake_bin), "--models-dir", "/srv/llm-models",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def unit_directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → every value given, in order (systemd allows a key many times)."""
    directives: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        directives.setdefault(f"{section}.{key}", []).append(value)
    return directives


def seconds(value: str) -> float:
    """A systemd time span of the simple kinds used here: ``90``, ``90s``, ``2min``."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


# -- install.sh -----------------------------------------------------------------------------------
def test_help_names_every_option() -> None:
    done = install("--help")
    assert done.returncode == 0
    for option in ("--prefix", "--user", "--config", "--dry-run", "--destdir", "--bin"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--bogus"], "unknown option"),
        (["--prefix"], "needs a value"),
        (["--data-dir", "relative/path"], "absolute path"),
        (["--data-dir", "/var/lib/with space"], "plain path"),
        (["--user", "Root;rm"], "plain user name"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], complaint: str) -> None:
    done = install("--platform", "linux", "--dry-run", *args)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path, fake_bin: Path) -> None:
    data, config = tmp_path / "data", tmp_path / "etc" / "config.toml"
    done = install(
        "--platform", "linux", "--dry-run", "--bin", str(fake_bin), "--user", "no-such-user-x",
        "--data-dir", str(data), "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "+ useradd --system" in done.stdout
    assert f"ExecStart={fake_bin} serve --config {config} --data-dir {data}" in done.stdout
    assert "nothing was changed" in done.stdout
    assert not data.exists()
    assert not config.exists()


def test_an_existing_config_is_kept(staged_linux: Path, fake_bin: Path) -> None:
    config = staged_linux / "etc/llama-supervisor/config.toml"
    config.write_text('port = 9999\nmodels_dirs = ["/mine"]\n')
    again = install("--platform", "linux", "--destdir", str(staged_linux), "--bin", str(fake_bin))
    assert again.returncode == 0, again.stderr
    assert "keeping the existing" in again.stdout
    assert config.read_text() == 'port = 9999\nmodels_dirs = ["/mine"]\n'


def test_the_shell_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    done = subprocess.run([shellcheck, str(INSTALL)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# -- the example config ---------------------------------------------------------------------------
def test_the_example_config_loads() -> None:
    settings = load_settings(EXAMPLE_CONFIG)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080  # the nginx site's upstream
    assert settings.models_dirs == [Path("/srv/models")]


def test_the_installed_config_names_the_models_dir(staged_linux: Path) -> None:
    config = staged_linux / "etc/llama-supervisor/config.toml"
    assert load_settings(config).models_dirs == [Path("/srv/llm-models")]


# -- systemd --------------------------------------------------------------------------------------
def test_the_unit_is_rendered_completely(staged_linux: Path, fake_bin: Path) -> None:
    text = (staged_linux / UNIT).read_text()
    assert not PLACEHOLDER.findall(text)
    unit = unit_directives(text)
    assert unit["Service.ExecStart"] == [
        f"{fake_bin} serve --config /etc/llama-supervisor/config.toml "
        "--data-dir /var/lib/llama-supervisor"
    ]
    assert unit["Service.ReadWritePaths"] == ["/var/lib/llama-supervisor"]
    assert unit["Service.WorkingDirectory"] == ["/var/lib/llama-supervisor"]
    assert "LLAMA_SUPERVISOR_CACHE=/var/cache/llama-supervisor" in unit["Service.Environment"]


def test_the_unit_supervises_as_the_gateway_expects(staged_linux: Path) -> None:
    unit = unit_directives((staged_linux / UNIT).read_text())

    def one(key: str) -> str:
        values = unit[f"Service.{key}"]
        assert len(values) == 1, f"{key} given {len(values)} times"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("KillMode") == "mixed"
    assert one("OOMPolicy") == "continue"
    assert one("Restart") == "on-failure"
    assert one("User") == "llama-supervisor"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert seconds(one("WatchdogSec")) > 0
    # Longer than the gateway's whole stop: the drain, then each child's SIGTERM→SIGKILL grace.
    settings = load_settings(EXAMPLE_CONFIG)
    assert seconds(one("TimeoutStopSec")) > settings.shutdown_grace_s + settings.stop_grace_s
    assert seconds(one("TimeoutStopSec")) > 40


def test_the_unit_is_hardened_but_leaves_the_gpus_reachable(staged_linux: Path) -> None:
    unit = unit_directives((staged_linux / UNIT).read_text())
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ]:
        assert unit[f"Service.{key}"] == [value]
    assert "Service.PrivateDevices" not in unit
    assert "Service.MemoryDenyWriteExecute" not in unit
    assert {"char-nvidia* rw", "char-drm rw"} <= set(unit["Service.DeviceAllow"])


def test_systemd_analyze_verifies_the_unit(staged_linux: Path) -> None:
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd is Linux only")
    if not os.access(analyze, os.X_OK):
        _unavailable("systemd-analyze is missing: make system-deps (apt-get install systemd)")
    unit = staged_linux / UNIT
    assert _verify(analyze, unit) == []
    # The check can fail: a misspelt directive is reported, and so is a missing ExecStart.
    broken = unit.parent / "broken" / unit.name
    broken.parent.mkdir()
    text = unit.read_text().replace("OOMPolicy=continue", "OOMPolicy=continue\nOOMPolice=stop")
    broken.write_text(text.replace("ExecStart=/", "ExecStart=/no/such/dir/"))
    complaints = "\n".join(_verify(analyze, broken))
    assert "OOMPolice" in complaints
    assert "/no/such/dir/" in complaints


def _verify(analyze: str, unit: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about this unit (not about the system's own)."""
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    if done.returncode != 0 and not said:
        said = [f"exit {done.returncode}: {done.stderr}"]
    return said


# -- launchd --------------------------------------------------------------------------------------
def test_the_plist_is_rendered_and_parses(tmp_path: Path, fake_bin: Path) -> None:
    home = tmp_path / "Jo's home & <stuff>"  # XML-special characters and spaces in paths
    root = tmp_path / "root"
    done = install(
        "--platform", "macos", "--destdir", str(root), "--bin", str(fake_bin),
        env={"HOME": str(home), "LLAMA_SUPERVISOR_CACHE": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = Path(f"{root}{home}/Library/LaunchAgents/org.llama-supervisor.gateway.plist")
    assert not PLACEHOLDER.findall(path.read_text())
    with path.open("rb") as handle:
        plist: dict[str, Any] = plistlib.load(handle)
    support = f"{home}/Library/Application Support/llama-supervisor"
    assert plist["Label"] == "org.llama-supervisor.gateway"
    assert plist["ProgramArguments"] == [
        str(fake_bin), "serve",
        "--config", f"{support}/config.toml", "--data-dir", f"{support}/data",
    ]  # fmt: skip
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] > 40
    assert plist["StandardOutPath"] == f"{home}/Library/Logs/llama-supervisor/gateway.log"
    assert plist["StandardErrorPath"] == plist["StandardOutPath"]
    environment = plist["EnvironmentVariables"]
    assert environment["LLAMA_SUPERVISOR_CACHE"] == f"{home}/.cache/llama-supervisor"
    config = Path(f"{root}{support}/config.toml")
    assert load_settings(config).models_dirs == [Path(f"{support}/models")]
    plutil = shutil.which("plutil")  # macOS only
    if plutil:
        lint = subprocess.run([plutil, "-lint", str(path)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout


# -- nginx ----------------------------------------------------------------------------------------
def site_directives() -> dict[str, list[str]]:
    """Directive name → its values, from the site's uncommented lines."""
    directives: dict[str, list[str]] = {}
    for raw in SITE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().rstrip(";")
        if line and not line.endswith(("{", "}")):
            name, _, value = line.partition(" ")
            directives.setdefault(name, []).append(value.strip())
    return directives


def test_the_nginx_site_streams_and_keeps_connections() -> None:
    site = site_directives()
    assert site["proxy_buffering"] == ["off"]
    assert site["proxy_request_buffering"] == ["off"]
    assert site["proxy_http_version"] == ["1.1"]
    assert 'Connection ""' in site["proxy_set_header"]
    assert int(site["keepalive"][0]) > 0
    assert site["proxy_next_upstream"] in (["off"], ["error"])  # never "timeout": no reruns
    assert seconds(site["proxy_read_timeout"][0]) >= 3600
    assert seconds(site["proxy_send_timeout"][0]) >= 3600
    assert site["client_max_body_size"] == ["16m"]
    assert "ssl_certificate" not in site  # TLS is the operator's, shown commented out
    assert "# ssl_certificate " in SITE.read_text()


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = find_nginx()
    if nginx is None:
        _unavailable("nginx is not installed: make system-deps (apt-get install nginx)")
        return
    conf = write_nginx_conf(tmp_path, site_for(upstream_port=8080, listen_port=18080))
    done = subprocess.run(nginx_argv(nginx, conf, "-t"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
