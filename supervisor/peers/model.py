"""A model another server (a peer) serves, as this gateway names it."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX_SEPARATOR = "/"  # "box2/qwen": peer box2's model qwen


def prefixed(peer: str, remote_id: str) -> str:
    """The name that always means ``peer``'s model, whatever else is served as its bare id."""
    return f"{peer}{PREFIX_SEPARATOR}{remote_id}"


@dataclass(frozen=True)
class PeerModel:
    """``id`` is the name clients use (``"box2/qwen"``, or the bare ``"qwen"``), ``peer`` the
    peer's name, ``remote_id`` the model's id on the peer (what the relayed body names)."""

    id: str
    peer: str
    remote_id: str

    @property
    def capabilities(self) -> tuple[str, ...]:
        """A peer's /v1/models says nothing reliable beyond text: completion only."""
        return ("completion",)

    @property
    def file_name(self) -> str:
        """The /api/v2 name (local models go by file name there): the id itself."""
        return self.id

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id,)
