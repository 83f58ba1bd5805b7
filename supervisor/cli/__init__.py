"""The ``llama-supervisor`` command: ``program`` parses the command line and runs ``serve``,
``build`` (``build``), ``demo-model`` and the client commands (declared in ``commands``, done in
``actions`` over ``admin_client``, shown by ``render``)."""

from supervisor.cli.program import main

__all__ = ["main"]
