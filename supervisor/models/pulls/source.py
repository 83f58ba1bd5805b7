"""Which URLs a pull may fetch: ``http`` and ``https`` only (``hf://ORG/REPO/PATH.gguf`` is
Hugging Face's resolve URL), never shown back with their credentials, and only from public
addresses unless ``pull_allow_private`` is on: a gateway that fetches any URL an admin key
names must not become a way into the loopback services and the LAN behind it.

Every hop is checked (``transfer.py`` follows redirects by hand), and the check holds for the
connection actually made: ``check_host`` returns the address it judged, and the downloader
connects to that address (the name kept for the ``Host`` header and, over TLS, for SNI and the
certificate check: ``pinned``), so a DNS server that answers a public address to the check and
a loopback one a moment later (DNS rebinding) steers nothing. Through a proxy from the
environment (``proxied``) the proxy connects, and nothing is pinned: the check stands for
what this host resolves. An IPv6 address that embeds an
IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by the IPv4 address it leads to."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from supervisor.errors import BadRequest, SourceNotAllowed

SCHEMES = ("http", "https")
HF_SCHEME = "hf://"
HF_RESOLVE = "https://huggingface.co/{org}/{repo}/resolve/main/{path}"
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"http": 80, "https": 443})
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are IPv4

# (host, port) → the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host``, in its order of preference (``OSError``
    if it has none)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
    or otherwise not global. An IPv6 address that carries an IPv4 one is judged by it: mapped
    (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``), and Teredo (its
    server and its client both)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is no part
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:
            return any(_forbidden(inner) for inner in embedded)
    return _forbidden(ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to ``ip`` is carried to, where it embeds any."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or not ip.is_global
    )


async def check_host(url: str, resolver: Resolver, allow_private: bool) -> list[str] | None:
    """Refuse ``url`` (403, naming the setting) when its host resolves to any forbidden
    address and ``allow_private`` is off; a 400 when it does not resolve. The addresses
    checked, to connect to (``pinned``), in the resolver's order; None when nothing is checked
    (``allow_private``)."""
    parts = split_url(url)
    host = parts.hostname or ""
    if allow_private:
        return None
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
    if not addresses:
        raise BadRequest(f"url: cannot resolve {host}", param="url")
    return addresses


@dataclass(frozen=True)
class Pinned:
    """A request's URL with its host replaced by the address checked, and what keeps the name
    for the server: the ``Host`` header, and the TLS server name (SNI, and the name the
    certificate is verified against: httpcore passes the ``sni_hostname`` extension to
    ``start_tls`` as ``server_hostname``)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def proxied(url: str) -> bool:
    """Whether the environment's proxy settings (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``) send ``url`` through a proxy. The proxy then makes the
    connection: there is none of ours to pin, and the name is left for it to resolve."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme.lower()) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")  # NO_PROXY, on Linux


def pinned(url: str, address: str | None) -> Pinned:
    """``url`` to be fetched from ``address`` (as checked); unchanged when ``address`` is
    None (nothing was checked)."""
    if address is None:
        return Pinned(url, {}, {})
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    at = parts.netloc.rpartition("@")
    credentials = at[0] + "@" if at[1] else ""
    port = f":{parts.port}" if parts.port is not None else ""
    rewritten = parts._replace(netloc=f"{credentials}{literal}{port}").geturl()
    tls = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return Pinned(rewritten, {"Host": netloc}, tls)


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
