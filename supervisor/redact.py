"""Host paths out of what clients read: the models directories, the llama-server binary, the
home and cache directories are the host's business. Error texts that carry a child's output
or an OS error show each absolute path as ``…/<its last part>``; the gateway's log keeps them
whole (``ModelLoadError`` keeps the full text as ``str(error)``)."""

from __future__ import annotations

import re

# An absolute path of two or more parts, not inside a URL (``http://host/a/b``) or a word:
# ``/health`` and other one-part routes stay as they are.
_SEP = r"[^\s/'\"`,;()\[\]{}<>]"
_ABSOLUTE_PATH = re.compile(rf"(?<![\w./:~-])/(?:{_SEP}+/)+({_SEP}*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute host path shortened to ``…/<last part>``."""
    return _ABSOLUTE_PATH.sub(lambda match: "…/" + match.group(1), text)
