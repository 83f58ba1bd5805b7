from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import load_settings
from supervisor.errors import ConfigError


def write_toml(tmp_path: Path) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(
        'port = 9000\nhost = "0.0.0.0"\nmodels_dirs = ["/srv/models"]\n'
        'default_model = "tiny"\n\n'
        '[[models]]\nfile = "tiny.Q4_1.gguf"\nalias = "tiny"\nctx_size = 1024\n'
        'extra_args = ["--mlock"]\n'
    )
    return path


def test_defaults_listen_on_loopback_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMA_SUPERVISOR_CONFIG", raising=False)
    settings = load_settings()
    assert (settings.host, settings.port, settings.autoload) == ("127.0.0.1", 8080, True)


def test_toml_then_env_then_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml(tmp_path)
    settings = load_settings(config)
    assert settings.port == 9000
    assert settings.models_dirs == [Path("/srv/models")]
    assert settings.models[0].alias == "tiny"
    assert settings.models[0].extra_args == ["--mlock"]

    monkeypatch.setenv("LLAMA_SUPERVISOR_PORT", "9100")
    monkeypatch.setenv("LLAMA_SUPERVISOR_AUTOLOAD", "false")
    settings = load_settings(config)
    assert (settings.port, settings.host, settings.autoload) == (9100, "0.0.0.0", False)

    settings = load_settings(config, port=9200, host=None)
    assert (settings.port, settings.host) == (9200, "0.0.0.0")


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_SUPERVISOR_CONFIG", str(write_toml(tmp_path)))
    assert load_settings().default_model == "tiny"


def test_bad_values_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError):
        load_settings(port=70000)
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
