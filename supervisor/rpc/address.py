"""Where an RPC worker listens, and which addresses the gateway will send a model to.

``ggml-rpc-server`` has no authentication and runs whatever graph it is sent: anyone who
reaches its port can use its devices and read what it holds. So the gateway only names
workers on loopback and private networks unless ``rpc_allow_public`` says otherwise.
llama.cpp's RPC client connects over IPv4 only (``gethostbyname``, ``AF_INET``), so an IPv6
literal is refused here rather than left to fail inside a child."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from supervisor.errors import ConfigError

ALLOW_PUBLIC_HINT = "set rpc_allow_public = true to allow it (rpc-server has no authentication)"


@dataclass(frozen=True)
class WorkerAddress:
    host: str  # an IPv4 address or a host name
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_worker(text: str) -> WorkerAddress:
    """``host:port`` as llama-server's ``--rpc`` takes it; a ConfigError naming ``text``."""
    value = text.strip()
    if value.count(":") > 1 and "," in value:
        raise ConfigError(
            f'RPC worker {text!r}: one worker per item, e.g. rpc = ["10.0.0.2:50052", '
            '"10.0.0.3:50052"]'
        )
    if value.startswith("["):
        raise ConfigError(
            f"RPC worker {text!r}: llama.cpp's RPC client connects over IPv4 only; give an "
            "IPv4 address or a host name"
        )
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f"RPC worker {text!r}: expected host:port, e.g. 10.0.0.2:50052")
    if ":" in host:
        raise ConfigError(
            f"RPC worker {text!r}: llama.cpp's RPC client connects over IPv4 only; give an "
            "IPv4 address or a host name"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"RPC worker {text!r}: port {port} is out of range")
    if any(c.isspace() or c == "," for c in host):
        raise ConfigError(f"RPC worker {text!r}: not a host name")
    return WorkerAddress(host, port)


def is_public(ip: str) -> bool:
    """Whether ``ip`` is reachable from the internet at large: not loopback, private, link-local
    or shared (100.64.0.0/10, where Tailscale and carrier NAT live). 0.0.0.0 counts as
    public: a worker bound there listens on every interface."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global or address.is_unspecified or address.is_multicast


def literal_ip(host: str) -> str | None:
    """``host`` if it is an IP address literal; None for a host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def refuse_public(worker: WorkerAddress | str, ip: str, allow_public: bool) -> None:
    """A ConfigError naming ``worker`` when ``ip`` (what it is or resolves to) is public."""
    if not allow_public and is_public(ip):
        shown = str(worker)
        via = "" if literal_ip(shown.rpartition(":")[0]) == ip else f" (resolves to {ip})"
        raise ConfigError(f"RPC worker {shown}{via} is a public address: {ALLOW_PUBLIC_HINT}")


def check_workers(workers: list[str], allow_public: bool) -> list[WorkerAddress]:
    """Every configured worker parsed; IP literals checked now (host names are resolved and
    checked before each load, see ``workers.py``)."""
    parsed = [parse_worker(text) for text in workers]
    for worker in parsed:
        ip = literal_ip(worker.host)
        if ip is not None:
            refuse_public(worker, ip, allow_public)
    return parsed
