"""Host paths out of what clients read: the models directories, the llama-server binary, the
home and cache directories are the host's business. Error texts that carry a child's output
or an OS error show each absolute path as ``…/<its last part>``; the gateway's log keeps them
whole (``ModelLoadError`` keeps the full text as ``str(error)``)."""

from __future__ import annotations

import json
import re

# An absolute path of two or more parts, not inside a URL (``http://host/a/b``) or a word:
# ``/health`` and other one-part routes stay as they are.
_SEP = r"[^\s/'\"`,;()\[\]{}<>]"
_ABSOLUTE_PATH = re.compile(rf"(?<![\w./:~-])/(?:{_SEP}+/)+({_SEP}*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute host path shortened to ``…/<last part>``."""
    return _ABSOLUTE_PATH.sub(lambda match: "…/" + match.group(1), text)


def scrub_paths(content: bytes) -> bytes:
    """A child's JSON answer with each value of a key that names a path (``/props``'s
    ``model_path``, a LoRA adapter's ``path``) cut to its last part, the file's name, which
    is what clients show of it. Nothing else is touched (prompts and generated text may hold
    paths of their own); an answer that is not JSON is returned as it is."""
    try:
        answer = json.loads(content)
    except ValueError:
        return content
    if not _scrub(answer):
        return content
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def _scrub(value: object) -> bool:
    """Cut the paths in ``value`` in place; whether any was."""
    changed = False
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (key == "path" or key.endswith("_path")):
                name = re.split(r"[/\\]", item.rstrip("/\\"))[-1]
                changed |= name != item
                value[key] = name
            else:
                changed |= _scrub(item)
    elif isinstance(value, list):
        for item in value:
            changed |= _scrub(item)
    return changed
