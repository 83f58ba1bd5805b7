"""A tiny random-weight BitNet-architecture GGUF, written with the gguf package.

The tensors are the ones llama.cpp's bitnet loader asks for (src/models/bitnet.cpp), in f32;
the tokenizer is copied from another GGUF (the demo model's), since a model cannot load
without one. Its output is noise: what it proves is the pipeline."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_tiny_bitnet(path: Path, tokenizer_from: Path, n_embd: int = 64, n_ff: int = 128,
                      n_layer: int = 2, n_head: int = 4) -> Path:  # fmt: skip
    reader = gguf.GGUFReader(tokenizer_from)
    writer = gguf.GGUFWriter(str(path), "bitnet")
    writer.add_name("tiny-bitnet")
    writer.add_context_length(256)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _copy_tokenizer(reader, writer)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    rng = np.random.default_rng(0)

    def weight(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        writer.add_tensor(name, data)

    def norm(name: str, size: int) -> None:
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    weight("token_embd.weight", n_vocab, n_embd)
    norm("output_norm.weight", n_embd)
    for i in range(n_layer):
        for name, size in (("attn_norm", n_embd), ("attn_sub_norm", n_embd),
                           ("ffn_norm", n_embd), ("ffn_sub_norm", n_ff)):  # fmt: skip
            norm(f"blk.{i}.{name}.weight", size)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(f"blk.{i}.{name}.weight", n_embd, n_embd)
        weight(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        weight(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        weight(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, value)
        else:
            writer.add_uint32(key, int(value))
