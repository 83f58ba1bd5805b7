"""The CLI's client commands, declared: ``models list|status|load|unload|swap|pull|import``,
``logs`` and ``reload``, their options and help. What they do is in ``actions``, imported only
when one runs: it needs httpx and rich, which ``serve`` (parsed by the same parser) does
without."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from supervisor.cli.address import DEFAULT_URL, KEY_ENV, URL_ENV

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
    """The /api/v2 surface's load parameters; each left out is the gateway's configured value."""
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


def _transfer_options(parser: argparse.ArgumentParser) -> None:
    """What ``models pull`` and ``models import`` both take."""
    parser.add_argument(
        "--sha256", metavar="HEX", help="the file's expected sha256 (64 hex digits): checked "
        "before it is moved into place; a mismatch leaves nothing behind",
    )  # fmt: skip
    parser.add_argument(
        "--file", metavar="NAME", help="the name it gets in the models directory (default: "
        "the URL's or path's last part)",
    )  # fmt: skip


def _command(
    commands: Any,
    command: str,
    summary: str,
    description: str,
    examples: str,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        command.split()[-1],
        help=summary,
        description=description,
        epilog=f"examples:\n{examples}\n\n{CLIENT_EPILOG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    parser.set_defaults(run=partial(_run, command))
    return parser


def _run(command: str, args: argparse.Namespace) -> int:
    from supervisor.cli.actions import (
        run_client_command,  # httpx and rich, for client commands only
    )

    return run_client_command(command, args)


def add_client_commands(commands: Any) -> None:
    """Register ``models …``, ``logs`` and ``reload`` on the top-level subparsers."""
    client, load = _client_options(), _load_options()
    models = commands.add_parser(
        "models",
        help="list, inspect, load, unload, hot-swap, pull or import models on a running gateway",
        description="Manage the models of a running gateway (`llama-supervisor serve`) through "
        "its admin API. MODEL is a file name (tiny.Q4_1.gguf), its stem (tiny.Q4_1) or a "
        "configured alias.",
        epilog=CLIENT_EPILOG,
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(
        actions, "models list", "every model and its state",
        "Every .gguf the gateway serves, with its state (loaded, loading, unloaded, failed…), "
        "size, architecture, trained context, child pid, memory (measured, or ~estimated) "
        "and requests in flight / queued.",
        "  llama-supervisor models list\n  llama-supervisor models list --json | jq .",
        [client],
    )  # fmt: skip
    status = _command(
        actions, "models status", "one model in detail",
        "One model's state in detail: file, pid, port, memory, load parameters, restarts, "
        "requests, and the last error with llama-server's last lines when it failed.",
        "  llama-supervisor models status SmolLM2-135M-Instruct.Q4_1", [client],
    )  # fmt: skip
    status.add_argument("model", metavar="MODEL")
    loader = _command(
        actions, "models load", "load a model (waits until it is ready)",
        "Start the model's llama-server and wait until it answers. A model already loaded "
        "with other parameters is hot-swapped to them without dropping requests. Ctrl-C stops "
        "waiting, not the load.",
        "  llama-supervisor models load SmolLM2-135M-Instruct.Q4_1\n"
        "  llama-supervisor models load big-model --ctx 8192 --gpu-layers 99 --threads 8",
        [client, load],
    )  # fmt: skip
    loader.add_argument("model", metavar="MODEL")
    unloader = _command(
        actions, "models unload", "unload a model (after its requests finish)",
        "Let the model's in-flight requests finish (within the gateway's drain_timeout_s), "
        "then stop its llama-server.",
        "  llama-supervisor models unload SmolLM2-135M-Instruct.Q4_1", [client],
    )  # fmt: skip
    unloader.add_argument("model", metavar="MODEL")
    swap = _command(
        actions, "models swap", "hot-swap a model to another .gguf file",
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

    pull = _command(
        actions, "models pull", "download a .gguf into the models directory (progress bar)",
        "Have the gateway download a model over http(s) into its first models directory: "
        "resumed after a cut connection, its GGUF header and (with --sha256) its checksum "
        "checked before it is moved into place, then served at once under the id printed at "
        "the end. hf://ORG/REPO/FILE.gguf is short for the Hugging Face resolve URL. Loopback "
        "and private addresses are refused unless the gateway has pull_allow_private = true. "
        "Ctrl-C cancels the pull.",
        "  llama-supervisor models pull hf://bartowski/SmolLM2-135M-Instruct-GGUF/"
        "SmolLM2-135M-Instruct-Q4_K_M.gguf\n"
        "  llama-supervisor models pull https://mirror.lan/models/qwen.gguf --sha256 9f86d0…"
        " --file qwen-7b.gguf",
        [client],
    )  # fmt: skip
    pull.add_argument("source", metavar="URL", help="http(s):// or hf://ORG/REPO/FILE.gguf")
    _transfer_options(pull)
    importer = _command(
        actions, "models import", "copy a .gguf from an import folder into the models directory",
        "Have the gateway copy a .gguf from one of its import_dirs (a mounted card, a share) "
        "into its first models directory, with the same checks as a pull (GGUF header, "
        "--sha256, size), then serve it at once. Paths outside import_dirs, and symlinks "
        "leading out of them, are refused.",
        "  llama-supervisor models import /media/sdcard/models/phi-3-mini.Q4_K_M.gguf\n"
        "  llama-supervisor models import phi.gguf --file phi-3-mini.gguf --sha256 9f86d0…",
        [client],
    )  # fmt: skip
    importer.add_argument(
        "path", metavar="PATH",
        help="the .gguf on the gateway's host: absolute, or relative to the first import_dirs",
    )  # fmt: skip
    _transfer_options(importer)

    logs = _command(
        commands, "logs", "show (or follow) a model's llama-server output",
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
        commands, "reload", "re-read the gateway's configuration (like SIGHUP)",
        "Make the gateway re-read its TOML file and environment and rescan the models "
        "directories, as SIGHUP does: models whose file or settings changed are hot-swapped, "
        "removed ones drained and unloaded, new ones registered.",
        "  llama-supervisor reload", [client],
    )  # fmt: skip
