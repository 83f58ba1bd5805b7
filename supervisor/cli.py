"""The ``llama-supervisor`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from . import __version__
from .errors import SupervisorError

LOG = logging.getLogger("supervisor")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-supervisor",
        description="One dependable gateway in front of supervised llama.cpp servers.",
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

    demo = commands.add_parser(
        "demo-model",
        help="fetch the demo model (SmolLM2-135M-Instruct Q4_1) into a models directory",
    )
    demo.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from .app import create_app
    from .backends.binary import find_llama_server
    from .config import Settings, load_settings

    given = {
        "host": args.host,
        "port": args.port,
        "models_dirs": args.models_dirs,
        "llama_server": args.llama_server,
        "data_dir": args.data_dir,
        "default_model": args.default_model,
        "log_level": args.log_level,
    }
    settings = load_settings(args.config, **given)
    _configure_logging(settings.log_level)
    binary = find_llama_server(settings.llama_server, settings.cache_dir)
    LOG.info("llama-server: %s", binary)

    def reload_settings() -> Settings:
        """SIGHUP and POST /api/v2/reload: the same flags, the file and environment anew."""
        fresh = load_settings(args.config, **given)
        return fresh if fresh.llama_server else fresh.model_copy(update={"llama_server": binary})

    settings = settings.model_copy(update={"llama_server": binary})
    config = uvicorn.Config(
        create_app(settings, load_settings=reload_settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.stop_grace_s) + 5,
    )
    GatewayServer(config).run()
    return 0


class GatewayServer(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM/SIGINT after its graceful shutdown: once the
    children are stopped, a signalled gateway exits 0, as a service manager expects."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _demo_model(args: argparse.Namespace) -> int:
    from .config import default_cache_dir
    from .demo_model import fetch_demo_model

    path = fetch_demo_model(args.models_dir, default_cache_dir())
    print(path.resolve())
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO, readiness polls included: too loud for a gateway log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return _demo_model(args)
    except SupervisorError as exc:
        print(f"llama-supervisor: error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
