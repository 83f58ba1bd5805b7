"""Read the few GGUF metadata fields the gateway needs to describe and launch a model.

Only the header is read (key/values and tensor infos); tensor data is never touched, so this
costs milliseconds even for multi-gigabyte models. The format's constants are in
``gguf_tables`` (not imported from the ``gguf`` package, which would pull in numpy).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from supervisor.models.gguf_tables import (
    FILE_TYPE_NAMES,
    QUANT_SIZES,
    VALUE_ARRAY,
    VALUE_BOOL,
    VALUE_FLOAT32,
    VALUE_FLOAT64,
    VALUE_INT8,
    VALUE_INT16,
    VALUE_INT32,
    VALUE_INT64,
    VALUE_STRING,
    VALUE_UINT8,
    VALUE_UINT16,
    VALUE_UINT32,
    VALUE_UINT64,
)

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_COUNT = 1 << 24  # key/values or tensors in one file
MAX_ARRAY = 1 << 32
MAX_STRING = 1 << 26
MAX_DIMS = 8
SCALARS: dict[int, str] = {
    VALUE_UINT8: "<B",
    VALUE_INT8: "<b",
    VALUE_UINT16: "<H",
    VALUE_INT16: "<h",
    VALUE_UINT32: "<I",
    VALUE_INT32: "<i",
    VALUE_FLOAT32: "<f",
    VALUE_BOOL: "<?",
    VALUE_UINT64: "<Q",
    VALUE_INT64: "<q",
    VALUE_FLOAT64: "<d",
}


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
    # Attention heads, for sizing the KV cache: grouped-query models keep fewer K/V heads.
    head_count: int | None = None
    head_count_kv: int | None = None


@dataclass(frozen=True)
class ProjectorInfo:
    """What a multimodal projector (an ``mmproj`` GGUF) lets its model take in."""

    vision: bool
    audio: bool

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(name for name, has in (("vision", self.vision), ("audio", self.audio)) if has)


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path``; raise ``InvalidModelFile`` if it is bad."""
    return _info_from_header(_read_header(path))


def read_projector_info(path: Path) -> ProjectorInfo:
    """The encoders of the projector at ``path``; raise ``InvalidModelFile`` if it is bad.

    Projectors written before audio support carry neither ``clip.has_*_encoder`` key, and
    they are all vision encoders."""
    fields = _read_header(path).fields
    vision, audio = fields.get("clip.has_vision_encoder"), fields.get("clip.has_audio_encoder")
    if vision is None and audio is None:
        return ProjectorInfo(vision=True, audio=False)
    return ProjectorInfo(vision=vision is True, audio=audio is True)


def _read_header(path: Path) -> _Header:
    try:
        with path.open("rb") as handle:
            return _HeaderReader(handle, path).read()
    except FileNotFoundError as exc:
        raise InvalidModelFile(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise InvalidModelFile(f"not a file: {path}") from exc
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc.strerror or exc}") from exc


@dataclass
class _Header:
    fields: dict[str, object]
    parameter_count: int


class _HeaderReader:
    """A streaming reader of the GGUF header (key/values and tensor infos).

    ``gguf.GGUFReader`` maps every array into numpy objects, which takes seconds for a
    tokenizer's 50,000 strings; this reads scalars and skips arrays, so a header costs
    milliseconds and never more memory than one value. Limits on counts and lengths keep
    garbage from asking for absurd reads. Truncation is caught by checking that the file is as
    long as its tensor infos say."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self._handle = handle
        self._path = path

    def read(self) -> _Header:
        if self._handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise InvalidModelFile(f"not a GGUF file (bad magic): {self._path}")
        version, tensor_count, kv_count = struct.unpack("<IQQ", self._take(20))
        if version not in (2, 3) or tensor_count > MAX_COUNT or kv_count > MAX_COUNT:
            raise InvalidModelFile(f"unsupported or corrupt GGUF header: {self._path}")
        fields: dict[str, object] = {}
        for _ in range(kv_count):
            key = self._string()
            fields[key] = self._value(self._u32())
        data_end, parameters = self._tensor_extent(tensor_count)
        alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            alignment = DEFAULT_ALIGNMENT
        data_start = -(-self._handle.tell() // alignment) * alignment
        size = os.fstat(self._handle.fileno()).st_size
        if data_start + data_end > size:
            raise InvalidModelFile(
                f"truncated GGUF file {self._path}: tensors need {data_start + data_end} bytes, "
                f"the file has {size}"
            )
        return _Header(fields, parameters)

    def _tensor_extent(self, count: int) -> tuple[int, int]:
        """(end of the last tensor's data relative to the data section, total elements)."""
        end = 0
        total = 0
        for _ in range(count):
            self._string()
            n_dims = self._u32()
            if n_dims > MAX_DIMS:
                raise InvalidModelFile(f"corrupt tensor info in {self._path}")
            dims = struct.unpack(f"<{n_dims}Q", self._take(8 * n_dims))
            ggml_type, offset = struct.unpack("<IQ", self._take(12))
            elements = math.prod(dims)
            block, type_size = _block_size(ggml_type, self._path)
            end = max(end, offset + elements // block * type_size)
            total += elements
        return end, total

    def _take(self, size: int) -> bytes:
        data = self._handle.read(size)
        if len(data) != size:
            raise InvalidModelFile(f"truncated GGUF header: {self._path}")
        return data

    def _u32(self) -> int:
        return int(struct.unpack("<I", self._take(4))[0])

    def _u64(self) -> int:
        return int(struct.unpack("<Q", self._take(8))[0])

    def _string(self) -> str:
        length = self._u64()
        if length > MAX_STRING:
            raise InvalidModelFile(f"corrupt string length in {self._path}")
        return self._take(length).decode("utf-8", "replace")

    def _value(self, value_type: int) -> object:
        if value_type == VALUE_STRING:
            return self._string()
        if value_type == VALUE_ARRAY:
            self._skip_array()
            return None
        scalar = SCALARS.get(value_type)
        if scalar is None:
            raise InvalidModelFile(f"unknown GGUF value type {value_type} in {self._path}")
        value = struct.unpack(scalar, self._take(struct.calcsize(scalar)))[0]
        return bool(value) if value_type == VALUE_BOOL else value

    def _skip_array(self) -> None:
        item_type, count = self._u32(), self._u64()
        if count > MAX_ARRAY:
            raise InvalidModelFile(f"corrupt array length in {self._path}")
        if item_type in SCALARS:
            self._handle.seek(count * struct.calcsize(SCALARS[item_type]), os.SEEK_CUR)
        elif item_type == VALUE_STRING:
            for _ in range(count):
                length = self._u64()
                if length > MAX_STRING:
                    raise InvalidModelFile(f"corrupt string length in {self._path}")
                self._handle.seek(length, os.SEEK_CUR)
        else:  # arrays of arrays do not occur in practice; refuse rather than guess
            raise InvalidModelFile(f"unsupported nested GGUF array in {self._path}")


def _block_size(ggml_type: int, path: Path) -> tuple[int, int]:
    sizes = QUANT_SIZES.get(ggml_type)
    if sizes is None:
        raise InvalidModelFile(f"unknown tensor type {ggml_type} in {path}")
    return sizes


def _info_from_header(header: _Header) -> GGUFInfo:
    fields = header.fields
    arch = _text(fields, "general.architecture")
    template = _text(fields, "tokenizer.chat_template")
    return GGUFInfo(
        architecture=arch,
        name=_text(fields, "general.name"),
        context_length=_number(fields, f"{arch}.context_length") if arch else None,
        embedding_length=_number(fields, f"{arch}.embedding_length") if arch else None,
        block_count=_number(fields, f"{arch}.block_count") if arch else None,
        file_type=file_type_name(_number(fields, "general.file_type")),
        pooling_type=_number(fields, f"{arch}.pooling_type") if arch else None,
        has_chat_template=bool(template and template.strip()),
        parameter_count=header.parameter_count,
        head_count=_number(fields, f"{arch}.attention.head_count") if arch else None,
        head_count_kv=_number(fields, f"{arch}.attention.head_count_kv") if arch else None,
    )


def _text(fields: dict[str, object], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) else None


def _number(fields: dict[str, object], key: str) -> int | None:
    value = fields.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def file_type_name(value: int | None) -> str | None:
    """``general.file_type`` as a quantization name: 3 -> "Q4_1", 15 -> "Q4_K_M", 0 -> "F32"."""
    return None if value is None else FILE_TYPE_NAMES.get(value)
