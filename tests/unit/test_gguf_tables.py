"""The copied GGUF tables match the installed ``gguf`` package (the format's reference)."""

from __future__ import annotations

import gguf

from supervisor.models import gguf_tables


def test_value_types_match_the_package() -> None:
    ours = {name.removeprefix("VALUE_"): value for name, value in vars(gguf_tables).items()
            if name.startswith("VALUE_")}  # fmt: skip
    assert ours == {member.name: int(member) for member in gguf.GGUFValueType}


def test_quant_sizes_match_the_package() -> None:
    theirs = {int(kind): (int(block), int(size)) for kind, (block, size)
              in gguf.GGML_QUANT_SIZES.items()}  # fmt: skip
    assert dict(gguf_tables.QUANT_SIZES) == theirs


def test_file_type_names_match_the_package() -> None:
    theirs = {
        int(member): "F32" if member.name == "ALL_F32" else member.name.removeprefix("MOSTLY_")
        for member in gguf.LlamaFileType
        if member != gguf.LlamaFileType.GUESSED
    }
    assert dict(gguf_tables.FILE_TYPE_NAMES) == theirs
