from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.models.gguf import GGUFInfo, InvalidModelFile, file_type_name, read_gguf_info

MakeGGUF = Callable[..., Path]


def test_reads_metadata_fields(make_gguf: MakeGGUF) -> None:
    path = make_gguf("m.gguf", ctx=4096, embedding=128, blocks=3, file_type=3, name="Tiny")

    info = read_gguf_info(path)

    assert info == GGUFInfo(
        architecture="llama",
        name="Tiny",
        context_length=4096,
        embedding_length=128,
        block_count=3,
        file_type="Q4_1",
        pooling_type=None,
        has_chat_template=True,
        parameter_count=32,
    )


def test_reads_pooling_type_and_other_arch(make_gguf: MakeGGUF) -> None:
    path = make_gguf(
        "e.gguf", arch="bert", ctx=512, pooling_type=2, chat_template=False, file_type=15
    )

    info = read_gguf_info(path)

    assert info.architecture == "bert"
    assert info.context_length == 512
    assert info.pooling_type == 2
    assert info.file_type == "Q4_K_M"
    assert info.has_chat_template is False


def test_reads_attention_head_counts(make_gguf: MakeGGUF) -> None:
    path = make_gguf("gqa.gguf", head_count=9, head_count_kv=3)

    info = read_gguf_info(path)

    assert (info.head_count, info.head_count_kv) == (9, 3)


def test_missing_optional_fields_are_none(make_gguf: MakeGGUF) -> None:
    path = make_gguf("bare.gguf", file_type=None, name=None, chat_template=False)

    info = read_gguf_info(path)

    assert info.file_type is None
    assert info.name is None
    assert info.has_chat_template is False
    assert info.head_count is None
    assert info.head_count_kv is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "F32"),
        (1, "F16"),
        (3, "Q4_1"),
        (15, "Q4_K_M"),
        (32, "BF16"),
        (4, None),
        (1024, None),
        (99999, None),
        (None, None),
    ],
)
def test_file_type_name(value: int | None, expected: str | None) -> None:
    assert file_type_name(value) == expected


def test_bad_magic_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"NOPE" + b"\x00" * 64)

    with pytest.raises(InvalidModelFile, match="bad magic"):
        read_gguf_info(path)


def test_empty_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")

    with pytest.raises(InvalidModelFile, match="bad magic"):
        read_gguf_info(path)


def test_missing_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="not found"):
        read_gguf_info(tmp_path / "absent.gguf")


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile):
        read_gguf_info(tmp_path)


def test_truncated_file_is_invalid(make_gguf: MakeGGUF) -> None:
    path = make_gguf("cut.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(InvalidModelFile):
        read_gguf_info(path)


def test_truncated_tensor_data_is_invalid(make_gguf: MakeGGUF) -> None:
    # Header intact, only the tail of the tensor data missing: the case a partial download makes.
    path = make_gguf("tail.gguf", tensor_shape=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[:-16])

    with pytest.raises(InvalidModelFile, match="truncated"):
        read_gguf_info(path)


def test_header_only_garbage_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"GGUF" + b"\xff" * 60)

    with pytest.raises(InvalidModelFile):
        read_gguf_info(path)
