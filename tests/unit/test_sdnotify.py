"""sd_notify over a datagram socket the test listens on."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.http.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_messages_arrive_as_datagrams(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready()
    assert sock.recv(4096).decode().split("\n") == [
        "READY=1",
        f"MAINPID={os.getpid()}",
        "STATUS=Serving",
    ]
    notifier.stopping()
    assert sock.recv(4096).decode().startswith("STOPPING=1\n")
    notifier.reloading()
    assert sock.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_abstract_socket_names_start_with_a_nul() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"llama-supervisor-test-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier(f"@{name}").notify("READY=1")
        assert sock.recv(64) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_is_petted_at_half_its_period(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval_s == 1.0
    for now in (10.0, 10.5, 10.9, 11.0, 11.5):
        notifier.watchdog_tick(now)
    sock.settimeout(0.2)
    assert [sock.recv(64), sock.recv(64)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    with pytest.raises(TimeoutError):
        sock.recv(64)


def test_without_a_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled and not notifier.notify("READY=1")
    other_pid = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(other_pid).watchdog_interval_s is None
