"""Imports that cost the gateway resident memory stay out of the paths that do not need them
(the gateway's idle RSS is a benchmark target)."""

from __future__ import annotations

import subprocess
import sys


def imported(code: str, watched: set[str]) -> set[str]:
    """Which of ``watched`` a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys; {code}; print(' '.join(sorted({watched!r} & set(sys.modules))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_serving_does_not_import_numpy() -> None:
    """numpy (through the gguf package) was a quarter of the gateway's idle memory."""
    code = "import supervisor.cli, supervisor.http.server, supervisor.models.registry"
    assert imported(code, {"numpy", "gguf"}) == set()


def test_the_cli_parser_imports_neither_rich_nor_the_admin_client() -> None:
    """`serve` goes through the same parser as the client and build commands."""
    watched = {"rich", "httpx", "supervisor.cli.admin_client", "supervisor.cli.render"}
    assert imported("import supervisor.cli; supervisor.cli.program._parser()", watched) == set()


def test_serve_keeps_httpx_from_loading_its_command_line_client() -> None:
    code = (
        "import supervisor.cli as cli; cli.program._without_httpx_cli(); "
        "import supervisor.http.server"
    )
    assert imported(code, {"rich", "pygments", "httpx"}) == {"httpx"}
