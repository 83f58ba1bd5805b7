from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from fakes import make_entry as entry

from supervisor.children.argv import build_argv, launch_spec
from supervisor.children.child import server_binary
from supervisor.children.spec import LoadParams, Role, child_name, serving_role
from supervisor.config import ModelSettings, Settings

BINARY = Path("/opt/llama/llama-server")


def test_chat_child_argv_listens_on_loopback_with_the_model_id_as_alias() -> None:
    argv = build_argv(launch_spec(Settings(parallel=2), entry(), BINARY, Role.CHAT, 41000))
    assert argv == [
        "/opt/llama/llama-server",
        "--model", "/models/tiny.Q4_1.gguf",
        "--alias", "tiny.Q4_1",
        "--parallel", "2",
        "--host", "127.0.0.1",
        "--port", "41000",
    ]  # fmt: skip


def test_model_overrides_win_over_global_defaults_and_extra_args_come_last() -> None:
    own = ModelSettings(
        file="tiny.Q4_1.gguf", alias="tiny", ctx_size=512, parallel=1, extra_args=["--mlock"]
    )
    settings = Settings(ctx_size=4096, n_gpu_layers=99, parallel=4, threads=2)
    argv = build_argv(launch_spec(settings, entry(overrides=own), BINARY, Role.CHAT, 1))
    joined = " ".join(argv)
    assert "--alias tiny " in joined
    assert "--ctx-size 512" in joined
    assert "--n-gpu-layers 99" in joined
    assert "--parallel 1" in joined
    assert "--threads 2" in joined
    assert argv[-5:-4] == ["--mlock"]  # then the gateway's own --host and --port


def test_embedding_child_gets_pooling_only_when_the_model_sets_none() -> None:
    settings = Settings(embedding_pooling="mean")
    plain = build_argv(launch_spec(settings, entry(), BINARY, Role.EMBEDDING, 1))
    assert plain[-7:-4] == ["--embeddings", "--pooling", "mean"]
    dedicated = build_argv(launch_spec(settings, entry(pooling_type=2), BINARY, Role.EMBEDDING, 1))
    assert dedicated[-5] == "--embeddings"
    assert "--pooling" not in dedicated


def test_load_parameters_map_to_llama_server_flags_and_win() -> None:
    own = ModelSettings(file="tiny.Q4_1.gguf", ctx_size=512, n_gpu_layers=10)
    params = LoadParams(
        n_gpu_layers=32, n_ctx=2048, n_batch=256, threads=3, use_mlock=True, f16_kv=False
    )
    spec = launch_spec(Settings(), entry(overrides=own), BINARY, Role.CHAT, 1, params)
    joined = " ".join(build_argv(spec))
    for flags in (
        "--n-gpu-layers 32",
        "--ctx-size 2048",
        "--batch-size 256",
        "--threads 3",
        "--mlock",
        "--cache-type-k f32 --cache-type-v f32",
    ):
        assert flags in joined


def test_f16_kv_true_and_mlock_false_add_nothing() -> None:
    spec = launch_spec(
        Settings(), entry(), BINARY, Role.CHAT, 1, LoadParams(f16_kv=True, use_mlock=False)
    )
    argv = build_argv(spec)
    assert "--mlock" not in argv
    assert "--cache-type-k" not in argv


def test_bitnet_models_run_on_the_bitnet_binary_when_one_is_configured(tmp_path: Path) -> None:
    bitnet = dataclasses.replace(
        entry(), info=dataclasses.replace(entry().info, architecture="bitnet")
    )
    main = Path(sys.executable).resolve()
    fork = tmp_path / "bitnet-server"
    fork.write_text("#!/bin/sh\n")
    fork.chmod(0o755)
    assert server_binary(Settings(llama_server=main), bitnet) == main
    with_fork = Settings(llama_server=main, bitnet_llama_server=fork)
    assert server_binary(with_fork, bitnet) == fork.resolve()
    assert server_binary(with_fork, entry()) == main


def test_rerank_child_gets_reranking_and_no_token_limit() -> None:
    settings = Settings(max_tokens_limit=256)
    argv = build_argv(launch_spec(settings, entry(), BINARY, Role.RERANK, 1))
    assert argv[-5] == "--reranking"  # which also means --embeddings --pooling rank
    assert "--embeddings" not in argv and "--pooling" not in argv
    assert "--n-predict" not in argv
    chat = build_argv(launch_spec(settings, entry(), BINARY, Role.CHAT, 1))
    assert "--reranking" not in chat and "--n-predict" in chat


def test_a_dedicated_reranker_reranks_on_its_main_child() -> None:
    reranker = entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", reranker=True))
    settings = Settings(max_tokens_limit=256)
    argv = build_argv(launch_spec(settings, reranker, BINARY, Role.CHAT, 1))
    assert argv[-5] == "--reranking"
    assert "--n-predict" not in argv
    assert serving_role(reranker, Role.RERANK) is Role.CHAT
    assert serving_role(reranker, Role.EMBEDDING) is Role.EMBEDDING
    assert serving_role(entry(), Role.RERANK) is Role.RERANK
    assert reranker.capabilities == ("rerank",)


def test_child_names_say_the_role_of_all_but_the_main_child() -> None:
    assert child_name("tiny", Role.CHAT) == "tiny"
    assert child_name("tiny", Role.EMBEDDING) == "tiny#embedding"
    assert child_name("tiny", Role.RERANK) == "tiny#rerank"


def test_the_projector_goes_on_the_main_child_only() -> None:
    vision = dataclasses.replace(entry(), mmproj=Path("/models/mmproj-tiny.gguf"))
    chat = build_argv(launch_spec(Settings(), vision, BINARY, Role.CHAT, 1))
    assert chat[-6:-4] == ["--mmproj", "/models/mmproj-tiny.gguf"]
    for role in (Role.EMBEDDING, Role.RERANK):
        assert "--mmproj" not in build_argv(launch_spec(Settings(), vision, BINARY, role, 1))
