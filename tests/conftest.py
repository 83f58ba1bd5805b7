"""Fixtures shared by the unit and integration tiers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from fake_child import FakeChild
from postgres_server import PostgresServer, find_bin_dir, running_postgres

MakeGGUF = Callable[..., Path]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_child() -> Iterator[FakeChild]:
    """llama-server's HTTP side on a real socket (point a ``FakeFactory`` at its ``url``)."""
    with FakeChild() as child:
        yield child


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on a loopback port (``create_database()`` per test).
    Without PostgreSQL installed this skips, but fails under
    LLAMA_SUPERVISOR_REQUIRE_INTEGRATION=1 (`make test`, CI): `make system-deps` installs it."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL is not installed: make system-deps (apt-get install postgresql)"
        if os.environ.get("LLAMA_SUPERVISOR_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with running_postgres(bin_dir) as server:
        yield server


CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture
def make_gguf(tmp_path: Path) -> MakeGGUF:
    """A writer of tiny but valid GGUF files; relative paths land under ``tmp_path``."""

    def write(
        path: Path | str,
        arch: str = "llama",
        ctx: int = 2048,
        embedding: int = 64,
        blocks: int = 2,
        file_type: int | None = 3,
        name: str | None = "tiny",
        pooling_type: int | None = None,
        chat_template: bool = True,
        tensor_shape: tuple[int, ...] = (4, 8),
        head_count: int | None = None,
        head_count_kv: int | None = None,
    ) -> Path:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = gguf.GGUFWriter(str(target), arch)
        if name is not None:
            writer.add_name(name)
        writer.add_context_length(ctx)
        writer.add_embedding_length(embedding)
        writer.add_block_count(blocks)
        if file_type is not None:
            writer.add_file_type(file_type)
        if pooling_type is not None:
            writer.add_uint32(f"{arch}.pooling_type", pooling_type)
        if chat_template:
            writer.add_chat_template(CHAT_TEMPLATE)
        if head_count is not None:
            writer.add_head_count(head_count)
        if head_count_kv is not None:
            writer.add_head_count_kv(head_count_kv)
        writer.add_tensor("weight", np.ones(tensor_shape, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return target

    return write
