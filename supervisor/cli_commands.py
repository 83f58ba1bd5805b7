"""The CLI's client commands: ``models list|status|load|unload|swap``, ``logs`` and ``reload``.
Each talks to a running gateway over its admin API (``admin_client``) and shows the answer
(``cli_render``); ``--json`` prints the gateway's JSON instead."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .admin_client import DEFAULT_URL, AdminClient, LogLine
from .cli_render import (
    log_line,
    model_details,
    models_table,
    reload_report,
    run_with_spinner,
    stdout_console,
    wants_progress,
)
from .errors import AdminRequestFailed, GatewayUnreachable

URL_ENV = "LLAMA_SUPERVISOR_URL"
KEY_ENV = "LLAMA_SUPERVISOR_ADMIN_KEY"
EXIT_REFUSED = 1  # the gateway answered with an error
EXIT_UNREACHABLE = 2  # no gateway at the URL (also argparse's exit status for bad usage)
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, AdminClient], int]

CLIENT_EPILOG = f"""\
Connection: --url (or ${URL_ENV}, default {DEFAULT_URL}) names the gateway; --api-key (or
${KEY_ENV}) is an admin key, sent as "Authorization: Bearer KEY", needed when the
gateway has keys configured. Exit status: 0 done, 1 the gateway refused (its message is shown),
2 no gateway at the URL, 130 interrupted."""


def _client_options() -> argparse.ArgumentParser:
    """The options every client command takes (a parent parser)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("gateway connection")
    group.add_argument(
        "--url", metavar="URL", help=f"the gateway (default ${URL_ENV}, else {DEFAULT_URL})"
    )
    group.add_argument(
        "--api-key", metavar="KEY", help=f"admin key (default ${KEY_ENV}); sent as a bearer token"
    )
    group.add_argument("--json", action="store_true", help="print the gateway's raw JSON")
    return options


def _load_options() -> argparse.ArgumentParser:
    """Seed 001's load parameters; each left out is the gateway's configured value."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("load parameters (default: the gateway's settings)")
    group.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (n_ctx)")
    group.add_argument(
        "--gpu-layers", type=int, metavar="N", help="layers on the GPU, -1 all (n_gpu_layers)"
    )
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (threads)")
    group.add_argument("--batch", type=int, metavar="N", help="batch size (n_batch)")
    group.add_argument("--mlock", action="store_true", default=None, help="lock it in RAM")
    return options


def _command(
    commands: Any,
    name: str,
    handler: Handler,
    summary: str,
    description: str,
    examples: str,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"examples:\n{examples}\n\n{CLIENT_EPILOG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    parser.set_defaults(run=lambda args: run_client_command(handler, args))
    return parser


def add_client_commands(commands: Any) -> None:
    """Register ``models …``, ``logs`` and ``reload`` on the top-level subparsers."""
    client, load = _client_options(), _load_options()
    models = commands.add_parser(
        "models",
        help="list, inspect, load, unload or hot-swap models on a running gateway",
        description="Manage the models of a running gateway (`llama-supervisor serve`) through "
        "its admin API. MODEL is a file name (tiny.Q4_1.gguf), its stem (tiny.Q4_1) or a "
        "configured alias.",
        epilog=CLIENT_EPILOG,
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(
        actions, "list", _models_list, "every model and its state",
        "Every .gguf the gateway serves, with its state (loaded, loading, unloaded, failed…), "
        "size, architecture, trained context, child pid, memory (measured, or ~estimated) "
        "and requests in flight / queued.",
        "  llama-supervisor models list\n  llama-supervisor models list --json | jq .",
        [client],
    )  # fmt: skip
    status = _command(
        actions, "status", _models_status, "one model in detail",
        "One model's state in detail: file, pid, port, memory, load parameters, restarts, "
        "requests, and the last error with llama-server's last lines when it failed.",
        "  llama-supervisor models status SmolLM2-135M-Instruct.Q4_1", [client],
    )  # fmt: skip
    status.add_argument("model", metavar="MODEL")
    loader = _command(
        actions, "load", _models_load, "load a model (waits until it is ready)",
        "Start the model's llama-server and wait until it answers. A model already loaded "
        "with other parameters is hot-swapped to them without dropping requests. Ctrl-C stops "
        "waiting, not the load.",
        "  llama-supervisor models load SmolLM2-135M-Instruct.Q4_1\n"
        "  llama-supervisor models load big-model --ctx 8192 --gpu-layers 99 --threads 8",
        [client, load],
    )  # fmt: skip
    loader.add_argument("model", metavar="MODEL")
    unloader = _command(
        actions, "unload", _models_unload, "unload a model (after its requests finish)",
        "Let the model's in-flight requests finish (within the gateway's drain_timeout_s), "
        "then stop its llama-server.",
        "  llama-supervisor models unload SmolLM2-135M-Instruct.Q4_1", [client],
    )  # fmt: skip
    unloader.add_argument("model", metavar="MODEL")
    swap = _command(
        actions, "swap", _models_swap, "hot-swap a model to another .gguf file",
        "Serve MODEL from another file version without dropping requests: the new version "
        "starts beside the old one (blue-green) when memory allows, else stop-then-start with "
        "requests queued. If the new one fails to start, the old one keeps serving.",
        "  llama-supervisor models swap smol v2/SmolLM2-135M-Instruct.Q8_0.gguf\n"
        "  llama-supervisor models swap smol /srv/models/smol-new.gguf --ctx 4096",
        [client, load],
    )  # fmt: skip
    swap.add_argument("model", metavar="MODEL")
    swap.add_argument(
        "path", metavar="PATH",
        help="the new .gguf, on the gateway's host: absolute or relative to a models directory",
    )  # fmt: skip

    logs = _command(
        commands, "logs", _logs, "show (or follow) a model's llama-server output",
        "Print the last lines the gateway kept of the model's llama-server output (chat and "
        "embedding children), as TIME ROLE[PID] LINE. With -f, keep printing new lines until "
        "Ctrl-C.",
        "  llama-supervisor logs SmolLM2-135M-Instruct.Q4_1 -n 50\n"
        "  llama-supervisor logs smol -f",
        [client],
    )  # fmt: skip
    logs.add_argument("model", metavar="MODEL")
    logs.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="default 100")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines as they come")

    _command(
        commands, "reload", _reload, "re-read the gateway's configuration (like SIGHUP)",
        "Make the gateway re-read its TOML file and environment and rescan the models "
        "directories, as SIGHUP does: models whose file or settings changed are hot-swapped, "
        "removed ones drained and unloaded, new ones registered.",
        "  llama-supervisor reload", [client],
    )  # fmt: skip


def run_client_command(handler: Handler, args: argparse.Namespace) -> int:
    """Run one client command: expected failures become one clear line and an exit status."""
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    key = args.api_key or os.environ.get(KEY_ENV) or None
    try:
        with AdminClient(url, key) as client:
            return handler(args, client)
    except GatewayUnreachable as exc:
        _error(exc.message)
        return EXIT_UNREACHABLE
    except AdminRequestFailed as exc:
        _error(refusal_message(exc, key))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        if getattr(args, "follow", False):
            return 0  # the way to stop following
        _error("interrupted: the gateway carries on with what it was asked to do")
        return EXIT_INTERRUPTED


def refusal_message(exc: AdminRequestFailed, key: str | None) -> str:
    if exc.status_code in (401, 403):
        if key is None:
            hint = f"no admin key given: pass --api-key KEY or set ${KEY_ENV}"
        elif exc.status_code == 401:
            hint = f"the gateway does not know this admin key (--api-key / ${KEY_ENV})"
        else:
            hint = f"this key is not an admin key (--api-key / ${KEY_ENV})"
        return f"{hint} [HTTP {exc.status_code}: {exc.message}]"
    if exc.status_code:
        return f"{exc.message} [HTTP {exc.status_code}]"
    return exc.message


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _models_list(args: argparse.Namespace, client: AdminClient) -> int:
    listing = client.list_models()
    if args.json:
        _print_json(listing)
    elif not listing.get("available_models"):
        stdout_console().print("no models: put .gguf files in the gateway's models directories")
    else:
        stdout_console().print(models_table(listing))
    return 0


def _models_status(args: argparse.Namespace, client: AdminClient) -> int:
    info = client.model(args.model)
    if args.json:
        _print_json(info)
    else:
        stdout_console().print(model_details(info))
    return 0


def load_params(args: argparse.Namespace) -> dict[str, Any]:
    """The load body (seed 001's names) from the flags that were given."""
    given = {
        "n_ctx": args.ctx,
        "n_gpu_layers": args.gpu_layers,
        "threads": args.threads,
        "n_batch": args.batch,
        "use_mlock": args.mlock,
    }
    return {key: value for key, value in given.items() if value is not None}


def _state_of(client: AdminClient, model: str) -> Callable[[], str | None]:
    def poll() -> str | None:
        state = client.model(model).get("state") or {}
        return str(state["state"]) if state.get("state") else None

    return poll


def _models_load(args: argparse.Namespace, client: AdminClient) -> int:
    started = time.monotonic()
    answer = run_with_spinner(
        lambda: client.load(args.model, load_params(args)),
        f"loading {args.model}",
        _state_of(client, args.model),
        show=wants_progress(None),
    )
    if args.json:
        _print_json(answer)
        return 0
    took = time.monotonic() - started
    memory = answer.get("memory_used") or "?"
    _say(f"loaded {args.model} in {took:.1f} s (memory {memory})")
    return 0


def _models_unload(args: argparse.Namespace, client: AdminClient) -> int:
    answer = run_with_spinner(
        lambda: client.unload(args.model),
        f"unloading {args.model} (letting its requests finish)",
        show=wants_progress(None),
    )
    if args.json:
        _print_json(answer)
    else:
        _say(f"unloaded {args.model}")
    return 0


def _models_swap(args: argparse.Namespace, client: AdminClient) -> int:
    answer = run_with_spinner(
        lambda: client.swap(args.model, args.path, load_params(args)),
        f"swapping {args.model} to {args.path}",
        _state_of(client, args.model),
        show=wants_progress(None),
    )
    if args.json:
        _print_json(answer)
    else:
        seconds = answer.get("swap_seconds")
        _say(
            f"swapped {args.model} to {answer.get('path', args.path)} "
            f"({answer.get('mode', '?')}, {seconds if seconds is not None else '?'} s)"
        )
    return 0


def _reload(args: argparse.Namespace, client: AdminClient) -> int:
    report = run_with_spinner(client.reload, "reloading", show=wants_progress(None))
    if args.json:
        _print_json(report)
    else:
        stdout_console().print(reload_report(report))
    return 0


def _logs(args: argparse.Namespace, client: AdminClient) -> int:
    out = stdout_console()

    def show(line: LogLine) -> None:
        if args.json:
            print(json.dumps(line.as_json()), flush=True)
        else:
            out.print(log_line(line), soft_wrap=True)

    if not args.follow:
        lines = client.logs(args.model, args.lines)
        if args.json:
            _print_json({"model": args.model, "lines": [line.as_json() for line in lines]})
        else:
            for line in lines:
                show(line)
        return 0
    for line in client.follow_logs(args.model, args.lines):
        show(line)
    print("llama-supervisor: the gateway ended the log stream", file=sys.stderr)
    return 0


def _say(message: str) -> None:
    print(message, flush=True)


def _error(message: str) -> None:
    """Plain text (never wrapped at the terminal's width, never read as markup)."""
    print(f"llama-supervisor: error: {message}", file=sys.stderr)
