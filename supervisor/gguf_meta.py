"""Read the few GGUF metadata fields the gateway needs to describe and launch a model.

``gguf.GGUFReader`` memory-maps the file and parses only the header, so this is cheap even for
multi-gigabyte models; tensor data is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

GGUF_MAGIC = b"GGUF"


class InvalidModelFile(ValueError):
    """The file is missing, unreadable, not GGUF, or truncated/corrupt."""


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str | None
    name: str | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    file_type: str | None
    pooling_type: int | None
    has_chat_template: bool
    parameter_count: int | None


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``; raise ``InvalidModelFile`` if it is bad."""
    _check_magic(path)
    try:
        # Truncation surfaces here too: the reader reshapes each tensor's view of the memory
        # map, which fails when the file ends early.
        reader = gguf.GGUFReader(path)
        return _info_from_reader(reader)
    # GGUFReader signals corruption with whatever its numpy parsing happens to raise.
    except Exception as exc:
        raise InvalidModelFile(f"corrupt or truncated GGUF file {path}: {exc}") from exc


def _check_magic(path: Path) -> None:
    # Checked before GGUFReader sees the file: on garbage it may raise anything, or try to
    # allocate arrays sized by random header bytes.
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except FileNotFoundError as exc:
        raise InvalidModelFile(f"file not found: {path}") from exc
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise InvalidModelFile(f"not a GGUF file (bad magic): {path}")


def _info_from_reader(reader: Any) -> GGUFInfo:
    arch = _str_field(reader, "general.architecture")
    prefix = arch or ""
    template = _str_field(reader, "tokenizer.chat_template")
    return GGUFInfo(
        architecture=arch,
        name=_str_field(reader, "general.name"),
        context_length=_int_field(reader, f"{prefix}.context_length") if arch else None,
        embedding_length=_int_field(reader, f"{prefix}.embedding_length") if arch else None,
        block_count=_int_field(reader, f"{prefix}.block_count") if arch else None,
        file_type=file_type_name(_int_field(reader, "general.file_type")),
        pooling_type=_int_field(reader, f"{prefix}.pooling_type") if arch else None,
        has_chat_template=bool(template and template.strip()),
        parameter_count=_parameter_count(reader),
    )


def file_type_name(value: int | None) -> str | None:
    """``general.file_type`` as a quantization name: 3 -> "Q4_1", 15 -> "Q4_K_M", 0 -> "F32"."""
    if value is None:
        return None
    try:
        member = gguf.LlamaFileType(value)
    except ValueError:
        return None
    if member == gguf.LlamaFileType.GUESSED:
        return None
    name = str(member.name)
    if name == "ALL_F32":
        return "F32"
    return name.removeprefix("MOSTLY_")


def _str_field(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or field.types != [gguf.GGUFValueType.STRING]:
        return None
    value = field.contents()
    return value if isinstance(value, str) else None


def _int_field(reader: Any, key: str) -> int | None:
    field = reader.get_field(key)
    # A single scalar; arrays and strings under an int key mean a malformed file, so ignore.
    if field is None or len(field.types) != 1:
        return None
    value = field.contents()
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _parameter_count(reader: Any) -> int | None:
    try:
        return sum(int(tensor.n_elements) for tensor in reader.tensors)
    except (TypeError, ValueError, AttributeError):
        return None
