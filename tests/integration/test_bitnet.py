"""A BitNet-architecture model through the same pipeline: registry, child, /completion."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from bitnet_gguf import write_tiny_bitnet
from harness import MODEL_ID, RunningGateway

pytestmark = pytest.mark.integration


def test_a_tiny_bitnet_model_serves_completions(
    llama_server_bin: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_bitnet(models / "tiny-bitnet.gguf", demo_model_dir / f"{MODEL_ID}.gguf")
    gateway = RunningGateway(llama_server_bin, models, tmp_path / "gateway.log")
    try:
        info = httpx.get(f"{gateway.url}/api/v2/models/tiny-bitnet.gguf", timeout=30).json()
        assert info["metadata"]["model_type"] == "bitnet"
        body = {"model": "tiny-bitnet", "prompt": "Hello", "n_predict": 8, "seed": 1}
        reply = httpx.post(f"{gateway.url}/completion", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert isinstance(reply.json()["content"], str)
        assert reply.json()["tokens_predicted"] == 8  # noise, but eight tokens of it
        stream = httpx.post(f"{gateway.url}/completion", json=body | {"stream": True},
                            timeout=120).text  # fmt: skip
        assert stream.rstrip().endswith("data: [DONE]")
        family = httpx.get(f"{gateway.url}/api/models/tiny-bitnet", timeout=30).json()["family"]
        assert family == "bitnet"
    finally:
        gateway.stop()
