"""``llama-supervisor rpc-worker``: run llama.cpp's RPC server on a worker machine and keep it
running (``supervisor/rpc/worker.py``), so that a gateway elsewhere can put a model's layers on
this machine's devices (``rpc = ["this-host:50052"]`` in its config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from supervisor.errors import ConfigError

LOG = logging.getLogger("supervisor.rpc.worker")

DESCRIPTION = """\
Run llama.cpp's RPC server (ggml-rpc-server, built by ./build_llamacpp.sh beside llama-server)
and supervise it: its output goes to this command's log, it is started again with exponential
backoff (1 s doubling to 30 s) when it exits, and SIGTERM or Ctrl-C stops it and then this
command. A gateway uses the worker through rpc = ["HOST:PORT"] in its config.

rpc-server has NO authentication: whoever reaches its port can run code on its devices and
read what they hold. Bind it to a private interface and let only the gateway's machine reach
the port (a firewall rule). Public addresses are refused unless --allow-public."""

EPILOG = """\
examples:
  llama-supervisor rpc-worker                              # 127.0.0.1:50052, every GPU
  llama-supervisor rpc-worker --host 10.0.0.2 --cache      # on the private LAN, with a cache
  llama-supervisor rpc-worker --host 10.0.0.2 --device CUDA0 --port 50053

--mem MB is passed on only to an rpc-server whose --help lists it (older llama.cpp's capped
its CPU device that way); the pinned llama.cpp's has no such option, and then --mem is
refused rather than ignored: choose the devices a worker offers with --device (or
CUDA_VISIBLE_DEVICES)."""


def add_rpc_worker_command(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "rpc-worker",
        help="run and supervise llama.cpp's RPC server (a model's layers on this machine)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="IPv4 address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=50052, help="port (default 50052)")
    parser.add_argument(
        "--mem", type=int, metavar="MB", help="memory cap, for rpc-servers that have one"
    )
    parser.add_argument(
        "--cache", action="store_true", help="keep received tensors on disk: later loads of "
        "the same model skip the network (rpc-server's --cache, in ~/.cache/llama.cpp/rpc)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, metavar="N", help="threads of the CPU device")
    parser.add_argument(
        "--device", metavar="DEV", help="devices to offer, comma-separated (CUDA0,CUDA1)"
    )
    parser.add_argument(
        "--rpc-server", type=Path, metavar="PATH", help="the RPC server binary (default: "
        "ggml-rpc-server beside the newest cached llama-server build, else on PATH)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-public", action="store_true", help="allow listening on a public address"
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run_rpc_worker)


def listen_address(host: str, allow_public: bool) -> str:
    """The address rpc-server binds: an IPv4 literal (it takes nothing else), not a public
    one unless allowed (0.0.0.0 counts: every interface)."""
    from supervisor.rpc.address import is_public, literal_ip

    ip = literal_ip(host)
    if ip is None or ":" in ip:
        raise ConfigError(f"--host {host!r}: rpc-server listens on an IPv4 address only")
    if is_public(ip) and not allow_public:
        raise ConfigError(
            f"--host {host} is public (or every interface): rpc-server has no authentication; "
            "bind a private address, or pass --allow-public behind a firewall"
        )
    return ip


def run_rpc_worker(args: argparse.Namespace) -> int:
    from supervisor.config import default_cache_dir
    from supervisor.log_setup import configure_logging
    from supervisor.rpc.binary import find_rpc_server
    from supervisor.rpc.worker import RpcWorker, WorkerOptions, server_argv, server_help

    configure_logging(args.log_level, args.log_format)
    host = listen_address(args.host, args.allow_public)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is out of range")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: give at least 1")
    binary = find_rpc_server(args.rpc_server, default_cache_dir())
    options = WorkerOptions(host, args.port, args.threads, args.device, args.cache, args.mem)
    argv = server_argv(binary, options, server_help(binary) if args.mem is not None else "")
    asyncio.run(_supervise(RpcWorker(argv)))
    return 0


async def _supervise(worker: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
    LOG.info("rpc-worker stopped")
