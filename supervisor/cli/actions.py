"""What the client commands do (``commands`` declares them): each talks to a running
gateway over its admin API (``admin_client``) and shows the answer (``render``); ``--json``
prints the gateway's JSON instead. Imported only when a client command runs, so ``serve`` loads
neither httpx's client side nor rich for them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from supervisor.cli.address import DEFAULT_URL, KEY_ENV, URL_ENV
from supervisor.cli.admin_client import AdminClient, LogLine, PullEvent
from supervisor.cli.pull_progress import pull_progress
from supervisor.cli.render import (
    format_bytes,
    log_line,
    model_details,
    models_table,
    reload_report,
    run_with_spinner,
    stdout_console,
    wants_progress,
)
from supervisor.errors import AdminRequestFailed, GatewayUnreachable, SupervisorError
from supervisor.models.pulls.source import expand_url, shown_url

EXIT_REFUSED = 1  # the gateway answered with an error
EXIT_UNREACHABLE = 2  # no gateway at the URL (also argparse's exit status for bad usage)
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, AdminClient], int]


def run_client_command(command: str, args: argparse.Namespace) -> int:
    """Run one client command (``"models list"``, ``"logs"`` …): expected failures become one
    clear line and an exit status."""
    handler = HANDLERS[command]
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


# The gateway's codes for a missing, unknown or too weak key; a 403 with another code (a pull
# from a private address, an import from outside import_dirs) is about the request, not the key.
KEY_REASONS = (None, "invalid_api_key", "admin_key_required")


def refusal_message(exc: AdminRequestFailed, key: str | None) -> str:
    if exc.status_code in (401, 403) and exc.reason in KEY_REASONS:
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
    """The load body (the /api/v2 surface's names) from the flags that were given."""
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


def _models_pull(args: argparse.Namespace, client: AdminClient) -> int:
    """Follow the pull's events: progress to the bar (or a few lines), then the model it is
    served under (exit 0) or the gateway's reason it failed (exit 1). Ctrl-C cancels it."""
    label = args.file or args.source.rstrip("/").rsplit("/", 1)[-1]
    pull_id: str | None = None
    last: PullEvent | None = None
    events = client.pull(args.source, args.sha256, args.file)
    try:
        # closing: on Ctrl-C the stream is shut before the DELETE goes out
        with contextlib.closing(events), pull_progress(label, bar=wants_progress(None)) as report:
            for event in events:
                pull_id = pull_id or event.pull_id
                if event.name == "progress":
                    report(event.data)
                elif event.name in ("done", "error"):
                    last = event
                    break
    except KeyboardInterrupt:
        return _cancel_pull(client, pull_id, args)
    if last is None:
        raise AdminRequestFailed(
            0, "the gateway ended the pull's stream before it finished (is it shutting down?)"
        )
    if args.json:
        _print_json(last.data)
    if last.name == "error":
        error = last.data.get("error") or {}
        kind = f" ({error['type']})" if isinstance(error, dict) and error.get("type") else ""
        message = error.get("message") if isinstance(error, dict) else error
        _error(f"pull of {last.data.get('file') or label} failed{kind}: {message or '?'}")
        return EXIT_REFUSED
    if not args.json:
        size = last.data.get("bytes")
        what = f"pulled {last.data.get('file') or label}"
        if isinstance(size, int):
            what += f" ({format_bytes(size)})"
        _say(_served(what, last.data.get("model") or last.data.get("file")))
    return 0


def _served(what: str, model: Any) -> str:
    """``pulled x.gguf (93.8MB): served as x`` and the command that loads it."""
    return f"{what}: served as {model or '?'}\n  next: llama-supervisor models load {model or '?'}"


def _cancel_pull(client: AdminClient, pull_id: str | None, args: argparse.Namespace) -> int:
    """Ctrl-C during a pull: the gateway would carry on without us, so ask it to stop. Before
    the first event named the pull, find it in the running pulls by its file or URL. Whatever
    comes of that, the exit status says the command was interrupted."""
    try:
        pull_id = pull_id or _running_pull(client, args)
        if pull_id is None:
            _error("interrupted before the gateway named the pull; see GET /api/v2/models/pulls")
            return EXIT_INTERRUPTED
        client.cancel_pull(pull_id)
    except AdminRequestFailed as exc:
        if exc.status_code == 404:
            _error(f"interrupted: pull {pull_id} had already ended")
        else:
            _error(f"interrupted, but the pull could not be cancelled: {exc.message}")
        return EXIT_INTERRUPTED
    _error(f"interrupted: pull {pull_id} cancelled")
    return EXIT_INTERRUPTED


def _running_pull(client: AdminClient, args: argparse.Namespace) -> str | None:
    """The running pull of this command: by its file, or by its URL as the gateway lists it
    (``hf://`` expanded; no credentials, query or fragment)."""
    try:
        listed = shown_url(expand_url(args.source))
    except SupervisorError:
        listed = args.source
    for item in client.pulls():
        if (args.file and item.get("file") == args.file) or item.get("url") == listed:
            return str(item["id"]) if item.get("id") is not None else None
    return None


def _models_import(args: argparse.Namespace, client: AdminClient) -> int:
    answer = run_with_spinner(
        lambda: client.import_model(args.path, args.sha256, args.file),
        f"importing {args.path}",
        show=wants_progress(None),
    )
    if args.json:
        _print_json(answer)
        return 0
    size = answer.get("bytes")
    what = f"imported {args.path} as {answer.get('file') or '?'}"
    if isinstance(size, int):
        what += f" ({format_bytes(size)}, sha256 {answer.get('sha256')})"
    _say(_served(what, answer.get("id") or answer.get("file")))
    return 0


def _say(message: str) -> None:
    print(message, flush=True)


def _error(message: str) -> None:
    """Plain text (never wrapped at the terminal's width, never read as markup)."""
    print(f"llama-supervisor: error: {message}", file=sys.stderr)


HANDLERS: Mapping[str, Handler] = {
    "models list": _models_list,
    "models status": _models_status,
    "models load": _models_load,
    "models unload": _models_unload,
    "models swap": _models_swap,
    "models pull": _models_pull,
    "models import": _models_import,
    "logs": _logs,
    "reload": _reload,
}
