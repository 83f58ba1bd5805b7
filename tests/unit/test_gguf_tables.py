"""The copied GGUF tables match the installed ``gguf`` package (the format's reference)."""

from __future__ import annotations

import subprocess
import sys

import gguf

from supervisor import gguf_tables


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


def test_serving_does_not_import_numpy() -> None:
    """numpy (through gguf) was a quarter of the gateway's idle memory."""
    code = (
        "import sys, supervisor.server, supervisor.registry; "
        "print(sorted({'numpy', 'gguf'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
