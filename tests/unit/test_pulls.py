"""Model pulls over real sockets: a gateway pulling from a local file server that serves a real
GGUF, with Range, and misbehaves on demand (``model_server``): progress then done and the model
served without a restart; resume after a cut connection (only under the file's validator: a
file changed meanwhile comes whole); checksum, format, size and disk failures that leave
nothing behind; addresses, schemes and names refused; cancel; the list; the hidden copies a
killed gateway left swept at start."""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from model_server import ModelServer, etag, model_server
from pull_gateway import pull, pull_events, pull_gateway

from supervisor.models.pulls.transfer import PullTools, open_part

MakeGGUF = Callable[..., Path]
PULL = "/api/v2/models/pull"
PULLS = "/api/v2/models/pulls"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with model_server() as files:
        yield files


@pytest.fixture
def model(make_gguf: MakeGGUF) -> bytes:
    """A real GGUF of about 256 KiB: many chunks, several progress events."""
    return make_gguf("source/tiny.gguf", tensor_shape=(64, 1024)).read_bytes()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def models_dir_files(root: Path) -> list[str]:
    """Everything in the models directory, hidden files included."""
    folder = root / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def part_files(root: Path) -> list[Path]:
    folder = root / "cache" / "pulls"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_progress_then_done_and_the_model_is_served_at_once(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    url = server.serve("/org/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        assert client.get("/v1/models").json()["data"] == []
        events = pull(client, {"url": url, "sha256": sha(model)})
        names = [name for name, _ in events]
        assert names[0] == "progress" and names[-1] == "done" and set(names) == {"progress", "done"}
        assert events[-2][1]["total"] == len(model)
        done = events[-1][1]
        assert done == {"id": done["id"], "file": "tiny.gguf", "model": "tiny",
                        "bytes": len(model), "sha256": sha(model)}  # fmt: skip
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
        v2 = client.get("/api/v2/models").json()["available_models"]
        assert [m["id"] for m in v2] == ["tiny.gguf"]
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == model
    assert part_files(tmp_path) == []


def test_a_cut_connection_is_resumed_with_range(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.cut_after, server.faults.cuts = 100_000, 1
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": url})
    assert events[-1][0] == "done", events[-1]
    assert "range" not in server.requests[0]
    start = int(server.requests[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 100_000
    assert sha((tmp_path / "models" / "tiny.gguf").read_bytes()) == sha(model)
    assert events[-1][1]["sha256"] == sha(model)


def test_a_later_pull_resumes_what_a_failed_one_left(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.cut_after, server.faults.cuts = 40_000, 10
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        failed = pull(client, {"url": url, "sha256": sha(model)})
        assert failed[-1][0] == "error"
        assert failed[-1][1]["error"]["type"] == "download_failed"
        assert models_dir_files(tmp_path) == []
        part, validator = part_files(tmp_path)
        assert validator.name == part.name + ".validator"
        kept = part.stat().st_size
        assert kept > 0
        server.faults.cuts = 0
        tries = len(server.requests)
        events = pull(client, {"url": url, "sha256": sha(model)})
    assert events[-1][0] == "done", events[-1]
    assert server.requests[tries]["range"] == f"bytes={kept}-"
    assert server.requests[tries]["if-range"] == etag(model)
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == model
    assert part_files(tmp_path) == []


def test_a_file_changed_between_a_cut_and_the_resume_is_fetched_whole(
    tmp_path: Path, server: ModelServer, model: bytes, make_gguf: MakeGGUF
) -> None:
    """The resume sends the part's ETag as If-Range: the server, whose file is another one
    now, answers with it whole, never its tail spliced onto the old file's head."""
    newer = make_gguf("source/newer.gguf", tensor_shape=(64, 1536)).read_bytes()
    server.faults.cut_after, server.faults.cuts = 40_000, 10
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        assert pull(client, {"url": url})[-1][1]["error"]["type"] == "download_failed"
        assert len(part_files(tmp_path)) == 2  # the part and its validator
        server.faults.cuts = 0
        server.serve("/tiny.gguf", newer)
        events = pull(client, {"url": url})
    assert events[-1][0] == "done", events[-1]
    assert events[-1][1]["sha256"] == sha(newer)
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == newer
    assert part_files(tmp_path) == []


def test_a_part_without_a_validator_starts_over(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    """A server that names no version of its file: nothing tells that a later answer's
    tail belongs to the part's head, so a later pull fetches the file whole."""
    server.faults.cut_after, server.faults.cuts, server.faults.no_validator = 40_000, 10, True
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        assert pull(client, {"url": url})[-1][0] == "error"
        assert all("range" not in asked for asked in server.requests)
        server.faults.cuts = 0
        tries = len(server.requests)
        events = pull(client, {"url": url, "sha256": sha(model)})
    assert events[-1][0] == "done", events[-1]
    assert "range" not in server.requests[tries]
    assert part_files(tmp_path) == []


def test_a_server_that_ignores_range_starts_the_file_over(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.cut_after, server.faults.ignore_range = 50_000, True
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": url, "sha256": sha(model)})
    assert events[-1][0] == "done", events[-1]
    assert "range" in server.requests[1]
    assert (tmp_path / "models" / "tiny.gguf").read_bytes() == model


def test_redirects_are_followed(tmp_path: Path, server: ModelServer, model: bytes) -> None:
    server.serve("/files/tiny.gguf", model)
    server.redirects["/latest/model.gguf"] = "/files/tiny.gguf"
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": server.url + "/latest/model.gguf"})
    assert events[-1][1]["file"] == "model.gguf" and events[-1][1]["model"] == "model"


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("checksum", "checksum_mismatch"),
        ("not_gguf", "not_gguf"),
        ("too_large", "too_large"),
        ("disk_free", "disk_full"),
        ("truncated", "not_gguf"),  # Content-Length short of the file: a truncated GGUF
    ],
)
def test_a_failed_pull_leaves_nothing_behind(
    tmp_path: Path, server: ModelServer, model: bytes, fault: str, kind: str
) -> None:
    content = b"<html>not a model</html>" * 1000 if fault == "not_gguf" else model
    if fault == "truncated":
        content = model[: len(model) // 2]
    url = server.serve("/tiny.gguf", content)
    tools = PullTools(retry_wait_s=0, disk_free=lambda _: 1000 if fault == "disk_free" else 1 << 40)
    limits = {"pull_max_bytes": 10_000} if fault == "too_large" else {}
    body = {"url": url, "sha256": "0" * 64 if fault == "checksum" else sha(content)}
    with pull_gateway(tmp_path, tools, **limits) as client:
        events = pull(client, body)
        assert client.get("/v1/models").json()["data"] == []
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == kind, events[-1]
    assert data["file"] == "tiny.gguf" and data["id"].startswith("pull-")
    assert models_dir_files(tmp_path) == []
    assert part_files(tmp_path) == []


def test_not_gguf_is_refused_on_the_first_bytes(tmp_path: Path, server: ModelServer) -> None:
    """The magic is checked as soon as it arrives: the rest is not fetched."""
    server.faults.chunk, server.faults.chunk_delay_s = 1024, 0.01
    url = server.serve("/big.gguf", b"PK\x03\x04" + b"\x00" * 1024 * 1024)
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": url})
    assert events[-1][1]["error"]["type"] == "not_gguf"
    assert events[-1][1]["error"]["message"] == "the file is not a GGUF model (bad magic)"
    assert part_files(tmp_path) == []


class FullDisk:
    """A part file on a disk that fills up after ``room`` bytes."""

    def __init__(self, handle: BinaryIO, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._handle.write(data)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def test_a_disk_that_fills_up_while_writing(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    def opener(path: Path, append: bool) -> BinaryIO:
        return FullDisk(open_part(path, append), 50_000)  # type: ignore[return-value]

    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path, PullTools(retry_wait_s=0, open_part=opener)) as client:
        events = pull(client, {"url": url})
    assert events[-1][1]["error"] == {"type": "disk_full", "message": "the disk is full"}
    assert models_dir_files(tmp_path) == [] and part_files(tmp_path) == []


def test_a_content_length_past_the_body_fails_after_retries(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.extra_length = 1000
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": url})
    assert events[-1][1]["error"]["type"] == "download_failed"
    assert "partial file is kept" in events[-1][1]["error"]["message"]
    assert models_dir_files(tmp_path) == []


def test_private_addresses_are_refused_by_default(tmp_path: Path, server: ModelServer) -> None:
    url = server.serve("/tiny.gguf", b"GGUF")
    with pull_gateway(tmp_path, pull_allow_private=False) as client:
        answer = client.post(PULL, json={"url": url})
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert "pull_allow_private" in error["message"] and error["code"] == "source_not_allowed"
    assert server.requests == []


def test_a_name_that_resolves_to_a_private_address_is_refused(tmp_path: Path) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"] if host == "mirror.example" else []

    with pull_gateway(tmp_path, PullTools(resolver=resolver), pull_allow_private=False) as client:
        answer = client.post(PULL, json={"url": "https://mirror.example/m.gguf"})
    assert answer.status_code == 403
    assert "10.0.0.7" in answer.json()["error"]["message"]


BAD_BODIES: list[dict[str, object]] = [
    {"url": "ftp://example.com/m.gguf"},
    {"url": "file:///etc/passwd"},
    {"url": "gopher://example.com/m.gguf"},
    {"url": "http:///m.gguf"},
    {"url": 42},
    {},
    {"url": "https://example.com/m.gguf", "sha256": "abc"},
    {"url": "https://example.com/m.gguf", "extra": 1},
    {"url": "https://example.com/m.gguf", "file": "../evil.gguf"},
    {"url": "https://example.com/m.gguf", "file": "a/b.gguf"},
    {"url": "https://example.com/m.gguf", "file": ".hidden.gguf"},
    {"url": "https://example.com/m.gguf", "file": "evil.bin"},
    {"url": "https://example.com/m.gguf", "file": "mmproj-x.gguf"},
    {"url": "https://example.com/m.gguf", "file": "x\x00.gguf"},
    {"url": "https://example.com/folder/"},
    {"url": "https://example.com/m.bin"},
]


def test_bad_requests_are_refused_before_any_stream(tmp_path: Path) -> None:
    with pull_gateway(tmp_path) as client:
        for body in BAD_BODIES:
            answer = client.post(PULL, json=body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"]["type"] == "invalid_request_error"
        assert client.post(PULL, content=b"{not json").status_code == 400
        assert client.get(PULLS).json()["data"] == []
    assert models_dir_files(tmp_path) == []


def test_credentials_are_never_shown_and_the_pull_outlives_its_client(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.chunk, server.faults.chunk_delay_s = 8192, 0.02
    url = server.serve("/tiny.gguf", model).replace("http://", "http://user:secret@")
    with pull_gateway(tmp_path) as client:
        with client.stream("POST", PULL, json={"url": url + "?token=hush"}) as response:
            name, first = next(pull_events(response.iter_lines()))
        assert name == "progress"
        [listed] = client.get(PULLS).json()["data"]
        assert listed["id"] == first["id"] and listed["file"] == "tiny.gguf"
        assert listed["url"] == server.url + "/tiny.gguf"
        assert listed["state"] in ("connecting", "downloading")
        assert set(listed) == {"id", "url", "file", "bytes", "total", "rate", "state",
                               "started_at"}  # fmt: skip
        for _ in range(3000):  # the pull runs on without its client, to its end
            if not client.get(PULLS).json()["data"]:
                break
            time.sleep(0.01)
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny"]
    assert server.requests[0]["authorization"].startswith("Basic ")


def test_cancel_while_a_slow_server_sends(
    tmp_path: Path, server: ModelServer, model: bytes
) -> None:
    server.faults.chunk, server.faults.chunk_delay_s = 4096, 0.05
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        with client.stream("POST", PULL, json={"url": url}) as response:
            events = pull_events(response.iter_lines())
            _, first = next(events)
            assert client.post(PULL, json={"url": url}).status_code == 409  # pulled now
            cancelled = client.delete(f"{PULLS}/{first['id']}")
            assert cancelled.json() == {"id": first["id"], "status": "cancelled"}
            rest = list(events)
        assert rest[-1] == ("error", {"id": first["id"], "file": "tiny.gguf",
                                      "error": {"type": "cancelled",
                                                "message": "the pull was cancelled"}})  # fmt: skip
        assert client.get(PULLS).json()["data"] == []
        assert client.delete(f"{PULLS}/{first['id']}").status_code == 404
    assert models_dir_files(tmp_path) == [] and part_files(tmp_path) == []


def test_a_file_already_there_is_a_conflict(
    tmp_path: Path, server: ModelServer, model: bytes, make_gguf: MakeGGUF
) -> None:
    make_gguf("models/tiny.gguf")
    url = server.serve("/tiny.gguf", model)
    with pull_gateway(tmp_path) as client:
        answer = client.post(PULL, json={"url": url})
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "conflict"
        renamed = client.post(PULL, json={"url": url, "file": "other.gguf"})
        assert renamed.status_code == 200
        assert list(pull_events(renamed.iter_lines()))[-1][0] == "done"
    assert models_dir_files(tmp_path) == ["other.gguf", "tiny.gguf"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", PULL), ("GET", PULLS), ("DELETE", f"{PULLS}/pull-1"), ("POST", "/v1/import")],
)
def test_an_inference_key_is_refused_on_every_pull_route(
    tmp_path: Path, method: str, path: str
) -> None:
    with pull_gateway(tmp_path, admin_keys=["admin-key"], api_keys=["inference-key"]) as client:
        body = {
            "json": {"url": "http://127.0.0.1:9/m.gguf"}
        }  # nothing there if method == "POST" else {}
        inference = {"Authorization": "Bearer inference-key"}
        answer = client.request(method, path, headers=inference, **body)  # type: ignore[arg-type]
        assert answer.status_code == 403
        assert client.request(method, path, **body).status_code == 401  # type: ignore[arg-type]
        admin = {"Authorization": "Bearer admin-key"}
        assert client.request(method, path, headers=admin, **body).status_code not in (401, 403)  # type: ignore[arg-type]


def test_pull_routes_win_over_model_routes(tmp_path: Path) -> None:
    with pull_gateway(tmp_path) as client:
        assert client.get(PULLS).json() == {"object": "list", "data": []}
        wrong = client.get("/api/v2/models/pull")  # a reserved name, not a model's info
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        missing = client.delete(f"{PULLS}/nope")
        assert (
            missing.status_code == 404 and "no running pull" in missing.json()["error"]["message"]
        )


def test_hidden_copies_a_killed_gateway_left_are_swept_at_start(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    models = tmp_path / "models"
    make_gguf("models/kept.gguf")
    names = [".big.gguf.0123abcd.tmp", ".notes.tmp", ".big.gguf.tmp", "x.gguf.0123abcd.tmp"]
    for name in names:
        (models / name).write_bytes(b"GGUF")
    with pull_gateway(tmp_path) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["kept"]
    assert models_dir_files(tmp_path) == sorted([*names[1:], "kept.gguf"])


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    """Refused connections are retried, then the pull fails saying so."""
    with pull_gateway(tmp_path) as client:
        events = pull(client, {"url": "http://127.0.0.1:9/m.gguf"})
    assert events[-1][1]["error"]["type"] == "download_failed"
