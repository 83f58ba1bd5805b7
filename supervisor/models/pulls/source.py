"""Which URLs a pull may fetch: ``http`` and ``https`` only (``hf://ORG/REPO/PATH.gguf`` is
Hugging Face's resolve URL), never shown back with their credentials, and only from public
addresses unless ``pull_allow_private`` is on: a gateway that fetches any URL an admin key
names must not become a way into the loopback services and the LAN behind it.

Every hop is checked (``transfer.py`` follows redirects by hand). The check resolves the host
itself, then httpx resolves it again to connect: a DNS server that answers differently within
that moment (DNS rebinding) could still steer a pull; the admin key the route needs bounds who
can try."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import SplitResult, quote, urlsplit

from supervisor.errors import BadRequest, SourceNotAllowed

SCHEMES = ("http", "https")
HF_SCHEME = "hf://"
HF_RESOLVE = "https://huggingface.co/{org}/{repo}/resolve/main/{path}"
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
DEFAULT_PORTS = {"http": 80, "https": 443}

# (host, port) → the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host`` (``OSError`` if it has none)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def expand_url(url: str) -> str:
    """``url`` as it is fetched: ``hf://`` expanded; a 400 for any scheme but http and https,
    a URL without a host, or one with spaces or control characters in it."""
    if _CONTROL.search(url):
        raise BadRequest("url: spaces and control characters are not allowed", param="url")
    if url.lower().startswith(HF_SCHEME):
        url = _hugging_face(url[len(HF_SCHEME) :])
    parts = split_url(url)
    if not parts.hostname:
        raise BadRequest("url: no host", param="url")
    return url


def split_url(url: str) -> SplitResult:
    """``url``'s parts; a 400 unless it is http or https with a valid port."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise BadRequest("url: only http, https and hf:// URLs can be pulled", param="url")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as exc:
        raise BadRequest("url: bad port", param="url") from exc
    return parts


def shown_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path; no user, password, query or
    fragment (a signed URL's query is a credential too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path}"


def forbidden_address(address: str) -> bool:
    """Whether ``address`` is loopback, private, link-local, unspecified, multicast, reserved
    or otherwise not global (an IPv4 address mapped into IPv6 is judged as itself)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is no part
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global
    )


async def check_host(url: str, resolver: Resolver, allow_private: bool) -> None:
    """Refuse ``url`` (403, naming the setting) when its host resolves to any forbidden
    address and ``allow_private`` is off; a 400 when it does not resolve."""
    parts = split_url(url)
    host = parts.hostname or ""
    if allow_private:
        return
    try:
        addresses = await resolver(host, parts.port or DEFAULT_PORTS[parts.scheme.lower()])
    except OSError as exc:
        raise BadRequest(f"url: cannot resolve {host}", param="url") from exc
    for address in addresses:
        if forbidden_address(address):
            raise SourceNotAllowed(
                f"{host} is at {address}, a loopback, private or reserved address: pulls from "
                "such addresses need pull_allow_private = true "
                "(LLAMA_SUPERVISOR_PULL_ALLOW_PRIVATE)"
            )


def _hugging_face(rest: str) -> str:
    """``ORG/REPO/PATH`` as Hugging Face's resolve URL of the main branch."""
    org, _, after = rest.partition("/")
    repo, _, path = after.partition("/")
    segments = path.split("/")
    if not (_HF_PART.fullmatch(org) and _HF_PART.fullmatch(repo)) or not all(
        segment not in ("", ".", "..") for segment in segments
    ):
        raise BadRequest("url: hf:// URLs are hf://ORG/REPO/PATH.gguf", param="url")
    return HF_RESOLVE.format(org=org, repo=repo, path=quote(path, safe="/"))
