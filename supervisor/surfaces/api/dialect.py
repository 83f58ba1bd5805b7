"""The /api surface: models list, model info, load, unload. Pure functions.

The /api surface names models by ``ModelEntry.id`` (the alias, else the file stem).

``template``: the /api surface shows a chat-format name such as "llama3". A GGUF file only tells us
whether it embeds a chat template (llama-server then applies that template as is), not which
family it belongs to, so by default a model with an embedded template reports "chat" and one
without reports None. A caller that knows better (configuration, say) passes ``template=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from supervisor.lifecycle.state import ModelState, ModelStatus
from supervisor.models.registry import ModelEntry
from supervisor.peers.model import PeerModel

EMBEDDED_TEMPLATE = "chat"


class _Default(Enum):
    TEMPLATE = "default"


def default_template(entry: ModelEntry) -> str | None:
    """The default template name: "chat" if the GGUF embeds a chat template, else None."""
    return EMBEDDED_TEMPLATE if entry.info.has_chat_template else None


def model_entry(
    entry: ModelEntry,
    status: ModelStatus,
    parameters: dict[str, Any] | None = None,
    *,
    template: str | _Default | None = _Default.TEMPLATE,
) -> dict[str, Any]:
    """One model in the /api shape (``GET /api/models`` items and ``GET /api/models/{name}``).

    ``parameters`` are the model's default inference options (``temperature``, ``top_p`` …)."""
    info = entry.info
    return {
        "name": entry.id,
        "family": info.architecture,
        "size_mb": round(entry.size / 1024**2),
        "quantization": info.file_type,
        "context_size": info.context_length,
        "template": default_template(entry) if isinstance(template, _Default) else template,
        "parameters": dict(parameters) if parameters else {},
        "loaded": status.state is ModelState.READY,
    }


def peer_model_entry(model: PeerModel) -> dict[str, Any]:
    """A peer's model in the /api shape: what its peer's /v1/models tells is only its name;
    it is listed while the peer is up, so it is loaded as far as a client can tell."""
    return {
        "name": model.id,
        "family": None,
        "size_mb": 0,
        "quantization": None,
        "context_size": None,
        "template": None,
        "parameters": {},
        "loaded": True,
    }


def models_list(
    pairs: list[tuple[ModelEntry, ModelStatus]], peers: Sequence[PeerModel] = ()
) -> dict[str, Any]:
    """``GET /api/models``: the local models, then the peers' (``Peers.models``)."""
    local = [model_entry(entry, status) for entry, status in pairs]
    return {"models": local + [peer_model_entry(model) for model in peers]}


def load_response(name: str) -> dict[str, Any]:
    """``POST /api/models/{model_name}/load``'s success body."""
    return {"status": "success", "message": f"Model '{name}' loaded"}


def unload_response(name: str) -> dict[str, Any]:
    """``POST /api/models/{model_name}/unload``'s success body."""
    return {"status": "success", "message": f"Model '{name}' unloaded"}
