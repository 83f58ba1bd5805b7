"""``POST /v1/import``: a GGUF from ``import_dirs`` copied in and served at once; paths outside
the folders (as given, or through a symlink) refused; the pull's checks; ``{"url"}`` as a
pull, streamed or not. Errors in the OpenAI envelope."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_server import ModelServer, model_server
from pull_gateway import pull, pull_gateway

from supervisor.models.pulls.transfer import PullTools

MakeGGUF = Callable[..., Path]
IMPORT = "/v1/import"


@pytest.fixture
def card(tmp_path: Path, make_gguf: MakeGGUF) -> Path:
    """An import folder (a mounted card) holding ``m1.gguf`` and ``sub/m2.gguf``."""
    make_gguf("card/m1.gguf")
    make_gguf("card/sub/m2.gguf")
    return tmp_path / "card"


@pytest.fixture
def client(tmp_path: Path, card: Path) -> Iterator[httpx.Client]:
    with pull_gateway(tmp_path, import_dirs=[card]) as http_client:
        yield http_client


def served_ids(client: httpx.Client) -> list[str]:
    return [m["id"] for m in client.get("/v1/models").json()["data"]]


def in_models_dir(root: Path) -> list[str]:
    folder = root / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def error_of(answer: httpx.Response, status: int) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    error: dict[str, object] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_file_under_import_dirs_is_copied_in_and_served(
    tmp_path: Path, card: Path, client: httpx.Client
) -> None:
    content = (card / "m1.gguf").read_bytes()
    answer = client.post(IMPORT, json={"path": "m1.gguf"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "model", "id": "m1", "file": "m1.gguf",
                             "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                             "status": "imported"}  # fmt: skip
    assert served_ids(client) == ["m1"]
    assert (tmp_path / "models" / "m1.gguf").read_bytes() == content
    assert (card / "m1.gguf").exists()  # copied, not moved
    by_path = client.post(IMPORT, json={"path": str(card / "sub" / "m2.gguf"), "file": "two.gguf"})
    assert by_path.json()["id"] == "two"
    assert served_ids(client) == ["m1", "two"]
    assert in_models_dir(tmp_path) == ["m1.gguf", "two.gguf"]  # no hidden copies left


def test_the_sha256_given_is_checked(tmp_path: Path, card: Path, client: httpx.Client) -> None:
    content = (card / "m1.gguf").read_bytes()
    error = error_of(client.post(IMPORT, json={"path": "m1.gguf", "sha256": "a" * 64}), 400)
    assert error["code"] == "checksum_mismatch"
    assert in_models_dir(tmp_path) == []
    right = hashlib.sha256(content).hexdigest().upper()
    assert client.post(IMPORT, json={"path": "m1.gguf", "sha256": right}).status_code == 200


@pytest.mark.parametrize(
    "path", ["../outside.gguf", "sub/../../outside.gguf", "OUTSIDE", "/etc/passwd"]
)
def test_paths_outside_import_dirs_are_refused(
    tmp_path: Path, make_gguf: MakeGGUF, client: httpx.Client, path: str
) -> None:
    outside = make_gguf("outside.gguf")
    asked = str(outside) if path == "OUTSIDE" else path
    error = error_of(client.post(IMPORT, json={"path": asked}), 403)
    assert error["code"] == "source_not_allowed"
    assert error["message"] == f"'{asked}' is outside import_dirs"  # the path given, no other
    assert in_models_dir(tmp_path) == []


def test_a_symlink_leaving_import_dirs_is_refused(
    tmp_path: Path, card: Path, make_gguf: MakeGGUF, client: httpx.Client
) -> None:
    (card / "link.gguf").symlink_to(make_gguf("secret/model.gguf"))
    (card / "dir-link").symlink_to(tmp_path / "secret", target_is_directory=True)
    for path in ("link.gguf", "dir-link/model.gguf"):
        error = error_of(client.post(IMPORT, json={"path": path}), 403)
        assert "links outside import_dirs" in str(error["message"])
    assert in_models_dir(tmp_path) == []


def test_a_symlink_within_import_dirs_is_followed(
    tmp_path: Path, card: Path, client: httpx.Client
) -> None:
    (card / "alias.gguf").symlink_to(card / "sub" / "m2.gguf")
    assert client.post(IMPORT, json={"path": "alias.gguf"}).json()["id"] == "alias"
    assert not (tmp_path / "models" / "alias.gguf").is_symlink()


def test_missing_not_gguf_and_existing_files(
    tmp_path: Path, card: Path, make_gguf: MakeGGUF, client: httpx.Client
) -> None:
    assert error_of(client.post(IMPORT, json={"path": "nope.gguf"}), 404)["param"] == "path"
    (card / "fake.gguf").write_bytes(b"PK\x03\x04" + b"\x00" * 4096)
    assert error_of(client.post(IMPORT, json={"path": "fake.gguf"}), 400)["code"] == "not_gguf"
    (card / "short.gguf").write_bytes((card / "m1.gguf").read_bytes()[:100])
    assert error_of(client.post(IMPORT, json={"path": "short.gguf"}), 400)["code"] == "not_gguf"
    (card / "notes.txt").write_text("hello")
    assert error_of(client.post(IMPORT, json={"path": "notes.txt"}), 400)["param"] == "path"
    assert error_of(client.post(IMPORT, json={"path": "sub"}), 400)["param"] == "path"
    assert in_models_dir(tmp_path) == []  # nothing, not even a hidden copy
    make_gguf("models/m1.gguf")
    assert error_of(client.post(IMPORT, json={"path": "m1.gguf"}), 409)["code"] == "conflict"


@pytest.mark.parametrize(
    ("failure", "status", "reason"),
    [(errno.EACCES, 403, "permission denied"), (errno.EIO, 400, "input/output error")],
)
def test_a_source_that_cannot_be_read_is_named_as_given(
    tmp_path: Path,
    card: Path,
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    failure: int,
    status: int,
    reason: str,
) -> None:
    real_open = Path.open

    def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if path.name == "m1.gguf" and path.parent == card:
            raise OSError(failure, os.strerror(failure), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    error = error_of(client.post(IMPORT, json={"path": "m1.gguf"}), status)
    assert error["message"] == f"cannot read 'm1.gguf': {reason}" and error["param"] == "path"
    assert in_models_dir(tmp_path) == []


def test_without_a_models_directory_an_import_is_a_409(tmp_path: Path, card: Path) -> None:
    with pull_gateway(tmp_path, import_dirs=[card], models_dirs=[]) as client:
        error = error_of(client.post(IMPORT, json={"path": "m1.gguf"}), 409)
    assert error["message"] == "no models directory configured: set models_dirs to pull or import"


BAD_BODIES: list[dict[str, object]] = [
    {},
    {"path": "m1.gguf", "url": "https://example.com/m.gguf"},
    {"path": 1},
    {"path": ""},
    {"path": "m1.gguf", "file": "../x.gguf"},
    {"path": "m1.gguf", "file": 3},
    {"path": "m1.gguf", "sha256": "xyz"},
    {"path": "m1.gguf", "color": "red"},
    {"url": "ftp://example.com/m.gguf"},
    {"url": "https://example.com/m.gguf", "stream": "yes"},
    {"url": "https://example.com/m.gguf", "extra": 1},
]


def test_bad_bodies(client: httpx.Client) -> None:
    for body in BAD_BODIES:
        assert client.post(IMPORT, json=body).status_code == 400, body
        error_of(client.post(IMPORT, json=body), 400)
    error_of(client.post(IMPORT, content=b"[1, 2]"), 400)


def test_without_import_dirs_paths_are_refused(tmp_path: Path, card: Path) -> None:
    with pull_gateway(tmp_path) as client:
        error = error_of(client.post(IMPORT, json={"path": str(card / "m1.gguf")}), 403)
    assert "import_dirs" in str(error["message"])


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with model_server() as files:
        yield files


def test_a_url_is_pulled_and_answered_when_served(
    tmp_path: Path, card: Path, server: ModelServer, client: httpx.Client
) -> None:
    content = (card / "m1.gguf").read_bytes()
    url = server.serve("/files/remote.gguf", content)
    answer = client.post(IMPORT, json={"url": url})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "model", "id": "remote", "file": "remote.gguf",
                             "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                             "status": "imported"}  # fmt: skip
    assert served_ids(client) == ["remote"]
    streamed = pull(client, {"url": url, "file": "again.gguf", "stream": True}, IMPORT)
    assert streamed[0][0] == "progress" and streamed[-1][0] == "done"
    assert streamed[-1][1]["model"] == "again"
    mismatch = client.post(IMPORT, json={"url": url, "file": "bad.gguf", "sha256": "b" * 64})
    assert error_of(mismatch, 400)["code"] == "checksum_mismatch"
    assert in_models_dir(tmp_path) == ["again.gguf", "remote.gguf"]


def test_a_full_disk_and_a_file_too_large(tmp_path: Path, card: Path) -> None:
    full = PullTools(retry_wait_s=0, disk_free=lambda _: 100)
    with pull_gateway(tmp_path, full, import_dirs=[card]) as client:
        assert error_of(client.post(IMPORT, json={"path": "m1.gguf"}), 507)["code"] == "disk_full"
    with pull_gateway(tmp_path, import_dirs=[card], pull_max_bytes=100) as client:
        assert error_of(client.post(IMPORT, json={"path": "m1.gguf"}), 413)["code"] == "too_large"
    assert in_models_dir(tmp_path) == []
