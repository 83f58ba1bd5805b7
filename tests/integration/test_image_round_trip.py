"""Vision through the real gateway: a projector beside SmolLM2 is paired, started with it
(--mmproj), listed as a capability, and an image in a chat request reaches the model.

The projector is a tiny LLaVA-style one (a two-layer ViT on 28x28 images, 2x2 patches, and an
MLP into SmolLM2's 576-wide embeddings) with random weights: llama-server loads it and turns
an image into four tokens of the prompt; what the model then says about it is noise.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from harness import MODEL_ID, RunningGateway
from sse import chat_body

from supervisor.models.demo import MODEL_FILE

pytestmark = pytest.mark.integration

SMOLLM2_EMBEDDING = 576
IMAGE_SIZE, PATCH = 28, 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def write_projector(path: Path, n_embd: int = 32, n_ff: int = 64, n_layer: int = 2) -> None:
    """A real (if untrained) LLaVA MLP projector: the keys and tensors clip.cpp requires."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    for key, value in {
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "embedding_length": n_embd,
        "feed_forward_length": n_ff,
        "block_count": n_layer,
        "projection_dim": SMOLLM2_EMBEDDING,
        "attention.head_count": 2,
    }.items():
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def tensor(name: str, *shape: int, dtype: type = np.float32) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(dtype))

    tensor("v.patch_embd.weight", n_embd, 3, PATCH, PATCH, dtype=np.float16)
    tensor("v.position_embd.weight", IMAGE_TOKENS, n_embd)
    for i in range(n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensor(f"v.blk.{i}.{part}.weight", n_embd, n_embd)
            tensor(f"v.blk.{i}.{part}.bias", n_embd)
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{norm}.weight", np.ones(n_embd, dtype=np.float32))
            writer.add_tensor(f"v.blk.{i}.{norm}.bias", np.zeros(n_embd, dtype=np.float32))
        tensor(f"v.blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"v.blk.{i}.ffn_up.bias", n_ff)
        tensor(f"v.blk.{i}.ffn_down.weight", n_embd, n_ff)
        tensor(f"v.blk.{i}.ffn_down.bias", n_embd)
    tensor("mm.0.weight", 64, n_embd)
    tensor("mm.0.bias", 64)
    tensor("mm.2.weight", SMOLLM2_EMBEDDING, 64)
    tensor("mm.2.bias", SMOLLM2_EMBEDDING)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def png(size: int = IMAGE_SIZE) -> bytes:
    """A small RGB gradient as a PNG file."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(size) for v in (x * 9 % 256, y * 9 % 256, 128))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def gateway(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    models = tmp_path_factory.mktemp("vision-models")
    try:  # a link to the demo model outside this models dir would be skipped: share its inode
        os.link(demo_model_dir / MODEL_FILE, models / MODEL_FILE)
    except OSError:
        shutil.copy(demo_model_dir / MODEL_FILE, models / MODEL_FILE)
    write_projector(models / "mmproj-SmolLM2-135M-Instruct-f32.gguf")
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    running = RunningGateway(llama_server_bin, models, log)
    yield running
    running.stop()


def chat(gateway: RunningGateway, content: object) -> httpx.Response:
    body = chat_body(MODEL_ID, content, max_tokens=4, temperature=0)
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=120)


def test_the_paired_model_lists_vision(gateway: RunningGateway) -> None:
    listed = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    assert [(m["id"], m["capabilities"]) for m in listed] == [(MODEL_ID, ["completion", "vision"])]
    summary = httpx.get(f"{gateway.url}/api/v2/models").json()["available_models"]
    assert [m["capabilities"] for m in summary] == [["completion", "vision"]]


def test_an_image_reaches_the_model(gateway: RunningGateway) -> None:
    question = {"type": "text", "text": "What is in this image?"}
    image_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    image = {"type": "image_url", "image_url": {"url": image_url}}

    seen = chat(gateway, [question, image])
    text_only = chat(gateway, [question])

    assert seen.status_code == 200, seen.text
    assert text_only.status_code == 200, text_only.text
    assert seen.json()["choices"][0]["message"]["content"]
    # The image became prompt tokens of its own: one per patch (and any markers around them).
    extra = seen.json()["usage"]["prompt_tokens"] - text_only.json()["usage"]["prompt_tokens"]
    assert extra >= IMAGE_TOKENS
    [child] = gateway.children()
    argv = child.cmdline()
    assert argv[argv.index("--mmproj") + 1].endswith("mmproj-SmolLM2-135M-Instruct-f32.gguf")


def test_an_anthropic_image_block_reaches_the_model(gateway: RunningGateway) -> None:
    """Anthropic's image block (a base64 source) passes through /v1/messages as it is."""
    question = {"type": "text", "text": "What is in this image?"}
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png()).decode()}

    def message(content: list[object]) -> httpx.Response:
        body = {
            "model": MODEL_ID,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": content}],
        }
        return httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=120)

    seen = message([question, {"type": "image", "source": source}])
    text_only = message([question])
    assert seen.status_code == 200, seen.text
    assert text_only.status_code == 200, text_only.text

    def prompt(reply: httpx.Response) -> int:
        usage = reply.json()["usage"]
        return int(usage["input_tokens"] + usage.get("cache_read_input_tokens", 0))

    assert prompt(seen) - prompt(text_only) >= IMAGE_TOKENS
