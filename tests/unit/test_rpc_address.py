"""RPC worker addresses: what the gateway accepts in ``rpc``, and which it refuses as public;
what a model's children are started with (``--rpc``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import make_entry as entry
from pydantic import ValidationError

from supervisor.children.argv import build_argv, launch_spec
from supervisor.children.spec import Role
from supervisor.cli.rpc_worker import listen_address
from supervisor.config import ModelSettings, Settings
from supervisor.errors import ConfigError
from supervisor.rpc.address import WorkerAddress, check_workers, is_public, parse_worker
from supervisor.rpc.workers import model_workers

BINARY = Path("/opt/llama/llama-server")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.0.0.2:50052", WorkerAddress("10.0.0.2", 50052)),
        (" gpu-box.lan:50053 ", WorkerAddress("gpu-box.lan", 50053)),
        ("localhost:1", WorkerAddress("localhost", 1)),
    ],
)
def test_workers_parse_as_host_and_port(text: str, parsed: WorkerAddress) -> None:
    assert parse_worker(text) == parsed
    assert str(parsed) == text.strip()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.2", "expected host:port"),
        (":50052", "expected host:port"),
        ("10.0.0.2:http", "expected host:port"),
        ("10.0.0.2:70000", "out of range"),
        ("10.0.0.2:0", "out of range"),
        ("[fd00::2]:50052", "IPv4 only"),
        ("fd00::2:50052", "IPv4 only"),
        ("a,b:1", "not a host name"),
        ("10.0.0.2:50052,10.0.0.3:50052", "one worker per item"),
        ("10.0.0.2:\uff15\uff10\uff10\uff15\uff12", "expected host:port"),  # not ASCII
    ],
)
def test_malformed_workers_are_refused_by_name(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_worker(text)
    assert says in caught.value.message and repr(text) in caught.value.message


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.20", False),
        ("100.101.102.103", False),  # shared address space: Tailscale, carrier NAT
        ("169.254.0.5", False),
        ("8.8.8.8", True),
        ("0.0.0.0", True),  # every interface
        ("224.0.0.1", True),
        ("::ffff:8.8.8.8", True),
        ("::1", False),
    ],
)
def test_public_means_reachable_from_the_internet(ip: str, public: bool) -> None:
    assert is_public(ip) is public


def test_public_workers_are_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match=r"RPC worker 8\.8\.8\.8:50052 is a public address"):
        check_workers(["10.0.0.2:1", "8.8.8.8:50052"], allow_public=False)
    assert check_workers(["8.8.8.8:50052"], allow_public=True) == [WorkerAddress("8.8.8.8", 50052)]
    # Host names are checked once resolved, before each load (test_rpc_probe.py).
    assert check_workers(["example.com:1"], allow_public=False)


def test_settings_refuse_bad_workers_globally_and_per_model() -> None:
    with pytest.raises(ValidationError, match="public address"):
        Settings(rpc=["1.1.1.1:50052"])
    with pytest.raises(ValidationError, match="expected host:port"):
        Settings(models=[ModelSettings(file="a.gguf", rpc=["nowhere"])])
    allowed = Settings(rpc=["1.1.1.1:50052"], rpc_allow_public=True)
    assert allowed.rpc == ["1.1.1.1:50052"]


def test_a_models_own_workers_win_and_an_empty_list_means_none() -> None:
    settings = Settings(rpc=["10.0.0.2:50052"])
    assert model_workers(settings, entry()) == ["10.0.0.2:50052"]
    own = ModelSettings(file="tiny.Q4_1.gguf", rpc=["10.0.0.3:1", "10.0.0.4:2"])
    assert model_workers(settings, entry(overrides=own)) == ["10.0.0.3:1", "10.0.0.4:2"]
    none = ModelSettings(file="tiny.Q4_1.gguf", rpc=[])
    assert model_workers(settings, entry(overrides=none)) == []


def test_children_get_rpc_with_their_workers_and_layers_as_configured() -> None:
    own = ModelSettings(file="tiny.Q4_1.gguf", rpc=["10.0.0.3:1", "10.0.0.4:2"], n_gpu_layers=99)
    argv = build_argv(launch_spec(Settings(), entry(overrides=own), BINARY, Role.CHAT, 5))
    assert argv[argv.index("--rpc") + 1] == "10.0.0.3:1,10.0.0.4:2"
    assert argv[argv.index("--n-gpu-layers") + 1] == "99"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "5"]
    embedding = build_argv(
        launch_spec(Settings(rpc=["10.0.0.2:7"]), entry(), BINARY, Role.EMBEDDING, 6)
    )
    assert embedding[embedding.index("--rpc") + 1] == "10.0.0.2:7"
    assert "--rpc" not in build_argv(launch_spec(Settings(), entry(), BINARY, Role.CHAT, 7))


def test_the_worker_listens_on_a_private_ipv4_address_unless_allowed() -> None:
    assert listen_address("10.0.0.2", allow_public=False) == "10.0.0.2"
    with pytest.raises(ConfigError, match="IPv4 address only"):
        listen_address("gpu-box.lan", allow_public=False)
    with pytest.raises(ConfigError, match="IPv4 address only"):
        listen_address("::1", allow_public=False)
    with pytest.raises(ConfigError, match="--allow-public"):
        listen_address("0.0.0.0", allow_public=False)
    assert listen_address("0.0.0.0", allow_public=True) == "0.0.0.0"
