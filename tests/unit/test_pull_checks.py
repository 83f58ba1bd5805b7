"""The pull's pure checks (URLs, addresses, names, request bodies), its rate and its events,
and the downloader's faults through an injected httpx transport: a redirect to a private
address, a body with no length that outgrows the limit, ranges and redirects gone wrong, a
DNS answer that changes after the check; and the installer's moves."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpcore
import httpx
import pytest
from fake_clock import FakeClock, settle

from supervisor.errors import PULL_FAILURES, BadRequest, Conflict, PullFailed, SourceNotAllowed
from supervisor.models.gguf import GGUF_MAGIC
from supervisor.models.pulls import install
from supervisor.models.pulls.names import checked_name, checked_sha256, name_from_url
from supervisor.models.pulls.progress import Pull, PullEvent, RateMeter
from supervisor.models.pulls.request import ImportRequest, PullRequest, parse_import, parse_pull
from supervisor.models.pulls.source import (
    DEFAULT_PORTS,
    check_host,
    expand_url,
    forbidden_address,
    proxied,
    shown_url,
)
from supervisor.models.pulls.transfer import (
    FLUSH_BYTES,
    Download,
    PullTools,
    Target,
    open_part,
    validator_path,
)
from supervisor.surfaces.follow import SSE_HEADERS as HEADERS

MakeGGUF = Callable[..., Path]


def test_hf_urls_expand_to_the_resolve_url() -> None:
    assert expand_url("hf://Org/Repo-GGUF/model.Q4_K_M.gguf") == (
        "https://huggingface.co/Org/Repo-GGUF/resolve/main/model.Q4_K_M.gguf"
    )
    assert expand_url("hf://o/r/sub dir/m.gguf".replace(" ", "%20")).endswith(
        "/resolve/main/sub%2520dir/m.gguf"
    )
    for bad in ("hf://org/m.gguf", "hf://org//m.gguf", "hf://../r/m.gguf", "hf://o/r/../m.gguf"):
        with pytest.raises(BadRequest):
            expand_url(bad)


@pytest.mark.parametrize(
    "url",
    ["ftp://h/m.gguf", "file:///m.gguf", "data:,GGUF", "https://", "http://h:99999/m.gguf",
     "http://h/a b.gguf", "http://h/\r\nX: y", "javascript:alert(1)"],
)  # fmt: skip
def test_only_http_and_https_urls_with_a_host(url: str) -> None:
    with pytest.raises(BadRequest):
        expand_url(url)


def test_shown_urls_carry_no_credentials() -> None:
    assert shown_url("https://user:pw@Host.example:8443/a/m.gguf?sig=x#y") == (
        "https://host.example:8443/a/m.gguf"
    )
    assert shown_url("http://[::1]:8080/m.gguf") == "http://[::1]:8080/m.gguf"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1%eth0", "fc00::1", "::",
     "::ffff:127.0.0.1", "ff02::1"],
)  # fmt: skip
def test_private_and_special_addresses_are_forbidden(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not(address: str) -> None:
    assert not forbidden_address(address)


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("::ffff:127.0.0.1", True),  # mapped
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("2002:7f00:1::1", True),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", True),  # 6to4 of 192.168.1.1
        ("2002:808:808::1", False),  # 6to4 of 8.8.8.8
        ("2001:0:808:808::80ff:fffe", True),  # Teredo: server 8.8.8.8, client 127.0.0.1
        ("2001:0:a00:1::f7f7:f7f7", True),  # Teredo: server 10.0.0.1, client 8.8.8.8
        ("2001:0:808:808::f7f7:f7f7", False),  # Teredo: 8.8.8.8 both
    ],
)
def test_an_ipv6_address_carrying_ipv4_is_judged_by_it(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


def test_module_tables_cannot_be_changed() -> None:
    """No module-level mutable state: the tables every request reads are read-only."""
    for table in (PULL_FAILURES, DEFAULT_PORTS, HEADERS):
        with pytest.raises(TypeError):
            table["x"] = 1  # type: ignore[index]


def test_check_host_asks_the_resolver_and_names_the_setting() -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return {"public.example": ["93.184.216.34"], "lan.example": ["192.168.0.9"]}[host]

    asyncio.run(check_host("https://public.example/m.gguf", resolver, False))
    with pytest.raises(SourceNotAllowed, match="pull_allow_private"):
        asyncio.run(check_host("http://lan.example:8000/m.gguf", resolver, False))
    asyncio.run(check_host("http://lan.example/m.gguf", resolver, True))
    assert asked == [("public.example", 443), ("lan.example", 8000)]

    async def unknown(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(BadRequest, match="cannot resolve"):
        asyncio.run(check_host("http://nowhere.example/m.gguf", unknown, False))


def test_names() -> None:
    assert checked_name("Llama-3.2-1B.Q4_K_M.gguf") == "Llama-3.2-1B.Q4_K_M.gguf"
    assert checked_name("m-00001-of-00002.gguf") == "m-00001-of-00002.gguf"
    for bad in ("", ".", "..", "../m.gguf", "a/m.gguf", "a\\m.gguf", ".m.gguf", "-m.gguf",
                "m.bin", "m.gguf.part", "mmproj-m.gguf", "m-00002-of-00002.gguf", "m\x00.gguf",
                "m é.gguf", "x" * 200 + ".gguf"):  # fmt: skip
        with pytest.raises(BadRequest):
            checked_name(bad)
    assert name_from_url("https://h/r/My%20Model%20(1).gguf?download=1") == "My_Model_1_.gguf"
    assert name_from_url("https://h/a/..%2F..%2Fetc%2Fm.gguf") == "etc_m.gguf"
    for bad in ("https://h/", "https://h/m.bin", "https://h/%2e%2e"):
        with pytest.raises(BadRequest):
            name_from_url(bad)


def test_sha256_values() -> None:
    assert checked_sha256(None) is None
    assert checked_sha256("AB" * 32) == "ab" * 32
    for bad in ("ab" * 31, "g" * 64, 5, "ab" * 32 + "\n"):
        with pytest.raises(BadRequest):
            checked_sha256(bad)


def test_request_bodies() -> None:
    assert parse_pull({"url": "hf://o/r/m.gguf"}) == PullRequest(
        "https://huggingface.co/o/r/resolve/main/m.gguf", "m.gguf", None
    )
    assert parse_pull({"url": "https://h/x.gguf", "file": "y.gguf", "sha256": "A" * 64}) == (
        PullRequest("https://h/x.gguf", "y.gguf", "a" * 64)
    )
    assert parse_import({"path": "card/m.gguf"}) == ImportRequest("card/m.gguf", None, None)
    assert isinstance(parse_import({"url": "https://h/x.gguf", "stream": True}), PullRequest)
    for bad_pull in ({}, {"url": None}, {"url": "https://h/x.gguf", "stream": True}):
        with pytest.raises(BadRequest):
            parse_pull(bad_pull)
    for bad_import in ({}, {"path": "a", "url": "https://h/x.gguf"}, {"path": "a\x00b"},
                       {"path": "a", "stream": 1}, {"path": ["a"]}):  # fmt: skip
        with pytest.raises(BadRequest):
            parse_import(bad_import)


def test_the_rate_is_never_negative_when_the_count_starts_over() -> None:
    """A resume answered 200: the bytes start again from 0; the rate is of the new count."""
    clock = FakeClock(now=0.0)
    meter = RateMeter(clock)
    meter.update(0)
    clock.now = 1.0
    assert meter.update(5000) == 5000.0
    clock.now = 2.0
    assert meter.update(1000) == 0.0
    clock.now = 3.0
    assert meter.update(3000) == 2000.0


def test_the_rate_is_over_the_last_seconds() -> None:
    clock = FakeClock(now=0.0)
    meter = RateMeter(clock)
    assert meter.update(0) == 0.0
    clock.now = 1.0
    assert meter.update(1000) == 1000.0
    clock.now = 2.0
    assert meter.update(3000) == 1500.0
    for second in range(3, 10):  # a stall: the rate falls as the window moves past the bytes
        clock.now = float(second)
        rate = meter.update(3000)
    assert rate == 0.0


def test_followers_read_progress_then_the_end() -> None:
    async def run() -> list[list[PullEvent | None]]:
        clock = FakeClock(now=0.0)
        pull = Pull("pull-1", "https://h/m.gguf", "m.gguf", 0.0, clock)

        async def follow() -> list[PullEvent | None]:
            return [event async for event in pull.follow(keepalive_s=60)]

        early = asyncio.create_task(follow())
        await settle()
        pull.advance(10, 100)
        for size in range(11, 20):  # within the same quarter second: not published, but
            # a follower reads the figures as they are when it wakes
            pull.advance(size, 100)
        await settle()
        clock.now = 1.0
        pull.advance(50, 100)
        await settle()
        pull.finish(PullEvent("done", {"id": "pull-1"}))
        late = await follow()
        return [await early, late]

    early, late = asyncio.run(run())
    assert [e.data["bytes"] if e and e.name == "progress" else e for e in early[:-1]] == [0, 19, 50]
    assert early[-1] == late[-1] == PullEvent("done", {"id": "pull-1"}) and len(late) == 1


# -- the downloader, through an injected transport ------------------------------------------
@pytest.fixture
def gguf(make_gguf: MakeGGUF) -> bytes:
    return make_gguf("m.gguf", tensor_shape=(64, 64)).read_bytes()  # 16 KiB and more


async def public(host: str, port: int) -> list[str]:
    return {"lan.example": ["192.168.1.20"]}.get(host, ["93.184.216.34"])


def body(*chunks: bytes) -> AsyncIterator[bytes]:
    """A streamed body, as a real server's is (the mock's bytes would come read already)."""

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return stream()


def download(
    tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response], max_bytes: int = 1 << 30
) -> tuple[Download, list[tuple[int, int | None]]]:
    reports: list[tuple[int, int | None]] = []
    tools = PullTools(transport=httpx.MockTransport(handler), resolver=public, retry_wait_s=0)
    target = Target("https://files.example/m.gguf", tmp_path / "m.part", max_bytes, False)
    return Download(target, lambda size, total: reports.append((size, total)), tools), reports


def test_a_redirect_to_a_private_address_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://lan.example/m.gguf"})

    fetch, _ = download(tmp_path, handler)
    with pytest.raises(PullFailed, match="pull_allow_private") as failed:
        asyncio.run(fetch.run())
    assert failed.value.kind == "download_failed"
    assert "http://lan.example/m.gguf" in failed.value.message


def test_redirect_loops_and_schemes_are_refused(tmp_path: Path) -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    with pytest.raises(PullFailed, match="redirects"):
        asyncio.run(download(tmp_path, loop)[0].run())

    def to_file(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "file:///etc/passwd"})

    with pytest.raises(PullFailed, match="only http"):
        asyncio.run(download(tmp_path, to_file)[0].run())


def test_a_body_without_a_length_is_held_to_the_limit(tmp_path: Path, gguf: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(gguf[:100], gguf[100:], b"\x00" * 5000))

    fetch, reports = download(tmp_path, handler, max_bytes=len(gguf) + 10)
    with pytest.raises(PullFailed) as failed:
        asyncio.run(fetch.run())
    assert failed.value.kind == "too_large"
    assert reports[0] == (0, None)


def test_a_part_is_resumed_and_hashed_whole(tmp_path: Path, gguf: bytes) -> None:
    (tmp_path / "m.part").write_bytes(gguf[:1000])
    validator_path(tmp_path / "m.part").write_text('"v1"')
    ranges: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append((request.headers.get("range"), request.headers.get("if-range")))
        extent = f"bytes 1000-{len(gguf) - 1}/{len(gguf)}"
        headers = {"Content-Range": extent, "ETag": '"v1"'}
        return httpx.Response(206, content=body(gguf[1000:]), headers=headers)

    fetch, reports = download(tmp_path, handler)
    fetched = asyncio.run(fetch.run())
    assert ranges == [("bytes=1000-", '"v1"')]
    assert fetched.sha256 == hashlib.sha256(gguf).hexdigest() and fetched.size == len(gguf)
    assert (tmp_path / "m.part").read_bytes() == gguf
    assert reports[0] == (1000, len(gguf))


def test_a_part_without_its_validator_starts_over(tmp_path: Path, gguf: bytes) -> None:
    (tmp_path / "m.part").write_bytes(b"GGUF from some other file")
    asked: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers)
        return httpx.Response(200, content=body(gguf), headers={"Last-Modified": "Tue, 1 Dec"})

    fetched = asyncio.run(download(tmp_path, handler)[0].run())
    assert "range" not in asked[0] and "if-range" not in asked[0]
    assert fetched.sha256 == hashlib.sha256(gguf).hexdigest()
    assert (tmp_path / "m.part").read_bytes() == gguf
    assert validator_path(tmp_path / "m.part").read_text() == "Tue, 1 Dec"


def test_a_206_of_another_version_starts_over(tmp_path: Path, gguf: bytes) -> None:
    """A server that ignores If-Range and sends the tail of a newer file: not appended."""
    (tmp_path / "m.part").write_bytes(GGUF_MAGIC + b"\x00" * 996)  # an older file's head
    validator_path(tmp_path / "m.part").write_text('"old"')

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("range"):
            extent = f"bytes 1000-{len(gguf) - 1}/{len(gguf)}"
            headers = {"Content-Range": extent, "ETag": '"new"'}
            return httpx.Response(206, content=body(gguf[1000:]), headers=headers)
        return httpx.Response(200, content=body(gguf), headers={"ETag": '"new"'})

    fetched = asyncio.run(download(tmp_path, handler)[0].run())
    assert fetched.sha256 == hashlib.sha256(gguf).hexdigest()
    assert validator_path(tmp_path / "m.part").read_text() == '"new"'


def test_a_range_not_asked_for_fails(tmp_path: Path, gguf: bytes) -> None:
    (tmp_path / "m.part").write_bytes(gguf[:1000])
    validator_path(tmp_path / "m.part").write_text('"v1"')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, content=gguf[5:], headers={"Content-Range": "bytes 5-9/99"})

    with pytest.raises(PullFailed, match="range"):
        asyncio.run(download(tmp_path, handler)[0].run())


def test_an_unsatisfiable_range_starts_over(tmp_path: Path, gguf: bytes) -> None:
    (tmp_path / "m.part").write_bytes(gguf + b"stale tail")
    validator_path(tmp_path / "m.part").write_text('"v1"')
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        if request.headers.get("range"):
            return httpx.Response(416)
        return httpx.Response(200, content=body(gguf))

    fetched = asyncio.run(download(tmp_path, handler)[0].run())
    assert ranges == [f"bytes={len(gguf) + 10}-", None]
    assert fetched.sha256 == hashlib.sha256(gguf).hexdigest()
    assert (tmp_path / "m.part").read_bytes() == gguf


class Network(httpcore.AsyncNetworkBackend):
    """A network where each connection reads the next of ``answers``: records the address
    each connection went to, the name TLS was started for, and the bytes sent."""

    def __init__(self, *answers: bytes, unreachable: frozenset[str] = frozenset()) -> None:
        self.answers = list(answers)
        self.unreachable = unreachable
        self.connected: list[tuple[str, int]] = []
        self.tls_names: list[str | None] = []
        self.sent = bytearray()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        if host in self.unreachable:
            raise httpcore.ConnectError("Network is unreachable")
        return Connection(self, self.answers.pop(0))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Connection(httpcore.AsyncNetworkStream):
    def __init__(self, network: Network, answer: bytes) -> None:
        self._network, self._unread = network, answer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data, self._unread = self._unread[:max_bytes], self._unread[max_bytes:]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._network.sent += buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self._network.tls_names.append(server_hostname)
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


def test_each_hop_connects_to_the_address_checked_not_a_later_answer(
    tmp_path: Path, gguf: bytes
) -> None:
    """DNS rebinding: each name resolves to a public address for the check, then to
    127.0.0.1. The connections go to the addresses checked, the names kept for the Host
    header and for TLS (SNI and the certificate's check)."""
    asked: list[str] = []
    public_first = {"files.example": "93.184.216.34", "cdn.example": "93.184.216.35"}

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return [public_first[host]] if asked.count(host) == 1 else ["127.0.0.1"]

    redirect = b"HTTP/1.1 302 Found\r\nLocation: https://cdn.example:8443/m.gguf\r\n"
    redirect += b"Content-Length: 0\r\n\r\n"
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(gguf) + gguf
    network = Network(redirect, whole)
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=network)
    tools = PullTools(transport=transport, resolver=rebinding, retry_wait_s=0)
    target = Target("https://files.example/m.gguf", tmp_path / "m.part", 1 << 30, False)
    fetched = asyncio.run(Download(target, lambda size, total: None, tools).run())
    assert fetched.sha256 == hashlib.sha256(gguf).hexdigest()
    assert network.connected == [("93.184.216.34", 443), ("93.184.216.35", 8443)]
    assert network.tls_names == ["files.example", "cdn.example"]
    assert b"Host: files.example\r\n" in network.sent
    assert b"Host: cdn.example:8443\r\n" in network.sent
    assert b"93.184" not in network.sent  # the addresses are not shown to the servers


def test_the_next_checked_address_is_tried_when_one_cannot_be_reached(
    tmp_path: Path, gguf: bytes
) -> None:
    async def dual_stack(host: str, port: int) -> list[str]:
        return ["2606:4700::1111", "93.184.216.34"]

    whole = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(gguf) + gguf
    network = Network(whole, unreachable=frozenset({"2606:4700::1111"}))
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=network)
    tools = PullTools(transport=transport, resolver=dual_stack, retry_wait_s=0)
    target = Target("http://files.example/m.gguf", tmp_path / "m.part", 1 << 30, False)
    asyncio.run(Download(target, lambda size, total: None, tools).run())
    assert network.connected == [("2606:4700::1111", 80), ("93.184.216.34", 80)]
    assert network.tls_names == []  # plain http: no TLS, no SNI


def test_a_proxy_from_the_environment_is_left_to_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    assert not proxied("https://files.example/m.gguf")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lan:3128")
    monkeypatch.setenv("NO_PROXY", "mirror.example")
    assert proxied("https://files.example/m.gguf")
    assert not proxied("http://files.example/m.gguf")
    assert not proxied("https://mirror.example/m.gguf")


class CountingWrites:
    """A part file that records each write: its size and whether it ran off the loop."""

    def __init__(self, handle: BinaryIO, loop_thread: int, writes: list[tuple[int, bool]]):
        self._handle, self._loop_thread, self.writes = handle, loop_thread, writes

    def write(self, data: bytes) -> int:
        self.writes.append((len(data), threading.get_ident() != self._loop_thread))
        return self._handle.write(data)

    def __enter__(self) -> CountingWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_the_body_is_hashed_and_written_in_large_pieces_off_the_loop(tmp_path: Path) -> None:
    content = GGUF_MAGIC + os.urandom(3 * FLUSH_BYTES // 2)
    chunks = [content[i : i + 65536] for i in range(0, len(content), 65536)]
    writes: list[tuple[int, bool]] = []
    loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread

    def opener(path: Path, append: bool) -> BinaryIO:
        return CountingWrites(open_part(path, append), loop_thread, writes)  # type: ignore[return-value]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(*chunks))

    tools = PullTools(transport=httpx.MockTransport(handler), resolver=public, retry_wait_s=0,
                      open_part=opener)  # fmt: skip
    target = Target("https://files.example/m.gguf", tmp_path / "m.part", 1 << 30, False)
    fetched = asyncio.run(Download(target, lambda size, total: None, tools).run())
    assert fetched.sha256 == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "m.part").read_bytes() == content
    assert [size for size, _ in writes] == [FLUSH_BYTES, len(content) - FLUSH_BYTES]
    assert all(off_loop for _, off_loop in writes)


def test_a_stopped_download_stops_hashing_its_part(tmp_path: Path, gguf: bytes) -> None:
    """The thread hashing a resumed part stops between chunks once the download is over
    (``run`` sets ``stop`` however it ends: cancelled, or the gateway shutting down)."""
    (tmp_path / "m.part").write_bytes(gguf)
    validator_path(tmp_path / "m.part").write_text('"v1"')
    asked: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(404)

    tools = PullTools(transport=httpx.MockTransport(handler), resolver=public, retry_wait_s=0)
    target = Target("https://files.example/m.gguf", tmp_path / "m.part", 1 << 30, False)
    stop = threading.Event()
    with pytest.raises(PullFailed, match="answered 404"):
        asyncio.run(Download(target, lambda size, total: None, tools, stop).run())
    assert stop.is_set()  # set as run ended
    with pytest.raises(PullFailed, match="stopped"):
        asyncio.run(Download(target, lambda size, total: None, tools, stop).run())
    assert len(asked) == 1


def test_an_error_status_fails_at_once(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404)

    with pytest.raises(PullFailed, match="answered 404"):
        asyncio.run(download(tmp_path, handler)[0].run())
    assert len(calls) == 1


# -- the installer --------------------------------------------------------------------------
def cross_device(monkeypatch: pytest.MonkeyPatch, part: Path) -> list[tuple[str, str]]:
    """``os.link`` as between two filesystems for ``part``; the links made."""
    links: list[tuple[str, str]] = []
    real_link = os.link

    def link(source: str | Path, target: str | Path) -> None:
        links.append((Path(source).name, Path(target).name))
        if Path(source) == part:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    return links


def test_across_filesystems_a_part_is_copied_in_hidden_then_linked(
    tmp_path: Path, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    part, models = tmp_path / "cache" / "x.part", tmp_path / "models"
    part.parent.mkdir()
    models.mkdir()
    part.write_bytes(gguf)
    links = cross_device(monkeypatch, part)
    install.move_in(part, models / "m.gguf", lambda _: 1 << 40)
    assert links[0] == ("x.part", "m.gguf")
    assert links[1][0].startswith(".m.gguf.") and links[1][1] == "m.gguf"
    assert (models / "m.gguf").read_bytes() == gguf
    assert sorted(p.name for p in models.iterdir()) == ["m.gguf"] and not part.exists()


def test_a_copy_across_filesystems_stops_with_the_gateway(
    tmp_path: Path, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    part, models = tmp_path / "x.part", tmp_path / "models"
    models.mkdir()
    part.write_bytes(gguf)
    cross_device(monkeypatch, part)
    stop = threading.Event()
    stop.set()
    with pytest.raises(PullFailed, match="shut down"):
        install.move_in(part, models / "m.gguf", lambda _: 1 << 40, stop)
    assert list(models.iterdir()) == [] and part.exists()


def test_a_file_placed_after_the_check_is_never_replaced(
    tmp_path: Path, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the check that the name is free and the move, someone copies a file there by
    hand: the move fails (409) and their file stays as it is."""
    part, models = tmp_path / "x.part", tmp_path / "models"
    models.mkdir()
    part.write_bytes(gguf)
    theirs = models / "m.gguf"
    monkeypatch.setattr(install, "check_free", lambda folder, name: folder / name)
    theirs.write_bytes(b"their file")
    with pytest.raises(Conflict):
        install.move_in(part, theirs, lambda _: 1 << 40)
    hidden = models / ".m.gguf.0123abcd.tmp"
    hidden.write_bytes(gguf)
    with pytest.raises(Conflict):
        install.place(hidden, theirs)
    assert theirs.read_bytes() == b"their file"
    assert part.exists() and not hidden.exists()


def test_without_hard_links_a_part_is_renamed_in(
    tmp_path: Path, gguf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: str | Path, target: str | Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    part, models = tmp_path / "x.part", tmp_path / "models"
    models.mkdir()
    part.write_bytes(gguf)
    install.move_in(part, models / "m.gguf", lambda _: 1 << 40)
    assert (models / "m.gguf").read_bytes() == gguf and not part.exists()


def test_a_copy_stops_when_the_gateway_does(tmp_path: Path, gguf: bytes) -> None:
    (tmp_path / "src.gguf").write_bytes(gguf)
    stop = threading.Event()
    stop.set()
    with pytest.raises(PullFailed, match="shut down"):
        install.hidden_copy(tmp_path / "src.gguf", tmp_path, "m.gguf", 1 << 30, stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "src.gguf"]  # make_gguf's
