"""Vision: multimodal projectors paired with their models (by folder, by name, by config),
their encoders read from GGUF, --mmproj on the main child, and capabilities in the listings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from fakes import make_entry

from supervisor.children.argv import build_argv, launch_spec
from supervisor.children.spec import Role
from supervisor.config import ModelSettings, Settings
from supervisor.models.gguf import ProjectorInfo, read_projector_info
from supervisor.models.projectors import pair_projectors
from supervisor.models.registry import ModelEntry, Registry
from supervisor.surfaces.api_v2 import dialect as api_v2
from supervisor.surfaces.openai import dialect as openai
from supervisor.surfaces.schemas import ModelObject, V2ModelSummary

MakeGGUF = Callable[..., Path]
BINARY = Path("/opt/llama/llama-server")


def write_projector(path: Path, vision: bool | None = True, audio: bool | None = None) -> Path:
    """A tiny projector GGUF; ``None`` leaves the encoder's key out (as older files do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "clip")
    if vision is not None:
        writer.add_bool("clip.has_vision_encoder", vision)
    if audio is not None:
        writer.add_bool("clip.has_audio_encoder", audio)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_tensor("mm.0.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def scan(*dirs: Path, models: list[ModelSettings] | None = None) -> dict[str, ModelEntry]:
    registry = Registry(Settings(models_dirs=list(dirs), models=models or []))
    return {entry.id: entry for entry in registry.scan()}


# -- pairing by name ------------------------------------------------------------------------
def test_one_model_and_one_projector_pair_whatever_their_names() -> None:
    assert pair_projectors(["anything.gguf"], ["mmproj-F16.gguf"]) == {
        "anything.gguf": "mmproj-F16.gguf"
    }
    assert pair_projectors(["a.gguf"], []) == {}
    assert pair_projectors([], ["mmproj-a.gguf"]) == {}


def test_several_pair_by_the_longest_shared_name() -> None:
    models = ["gemma-3-4b-it-Q4_K_M.gguf", "gemma-3-12b-it-Q4_K_M.gguf", "qwen2-vl-2b-Q8_0.gguf"]
    projectors = ["mmproj-gemma-3-4b-it-f16.gguf", "mmproj_Qwen2-VL-2B.gguf"]
    assert pair_projectors(models, projectors) == {
        "gemma-3-4b-it-Q4_K_M.gguf": "mmproj-gemma-3-4b-it-f16.gguf",
        "qwen2-vl-2b-Q8_0.gguf": "mmproj_Qwen2-VL-2B.gguf",  # contained, whatever the case
        # gemma-3-12b shares "gemma-3" with the 4b projector, which the 4b model beats
    }


def test_quantizations_of_one_model_share_its_projector() -> None:
    models = ["llava-v1.5-7b-Q4_K_M.gguf", "llava-v1.5-7b-Q8_0.gguf"]
    paired = pair_projectors(models, ["mmproj-llava-v1.5-7b-f16.gguf"])
    assert paired == dict.fromkeys(models, "mmproj-llava-v1.5-7b-f16.gguf")


def test_an_unclear_match_pairs_nothing() -> None:
    two_models = ["gemma-3-4b-it.gguf", "smollm2-135m.gguf"]
    assert pair_projectors(two_models, ["mmproj-F16.gguf"]) == {}
    # Two projectors that fit one model equally well: neither is chosen.
    assert pair_projectors(two_models, ["mmproj-gemma-3-4b-it-F16.gguf",
                                        "mmproj-gemma-3-4b-it-BF16.gguf"]) == {}  # fmt: skip


# -- the registry ---------------------------------------------------------------------------
def test_a_projector_beside_its_model_is_paired_and_never_listed(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    make_gguf("models/smol.gguf")
    projector = write_projector(tmp_path / "models" / "mmproj-smol-f16.gguf")

    entries = scan(tmp_path / "models")

    assert list(entries) == ["smol"]
    entry = entries["smol"]
    assert entry.mmproj == projector.resolve()
    assert entry.mmproj_size == projector.stat().st_size
    assert entry.capabilities == ("completion", "vision")


def test_several_models_and_projectors_in_one_folder(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/gemma-3-4b-it-Q4_K_M.gguf")
    make_gguf("models/qwen2-vl-2b-Q4_K_M.gguf")
    make_gguf("models/plain-text.gguf")
    gemma = write_projector(tmp_path / "models" / "mmproj-gemma-3-4b-it-f16.gguf")
    qwen = write_projector(tmp_path / "models" / "mmproj-qwen2-vl-2b-f16.gguf")

    entries = scan(tmp_path / "models")

    assert entries["gemma-3-4b-it-Q4_K_M"].mmproj == gemma.resolve()
    assert entries["qwen2-vl-2b-Q4_K_M"].mmproj == qwen.resolve()
    assert entries["plain-text"].mmproj is None
    assert entries["plain-text"].capabilities == ("completion",)


def test_a_model_folder_pairs_its_own_projector_only(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/gemma-3-4b-it/gemma-3-4b-it-Q4_K_M.gguf")
    projector = write_projector(tmp_path / "models" / "gemma-3-4b-it" / "mmproj-F16.gguf")
    make_gguf("models/smol.gguf")

    entries = scan(tmp_path / "models")

    assert entries["gemma-3-4b-it-Q4_K_M"].mmproj == projector.resolve()
    assert entries["smol"].mmproj is None


def test_a_projector_that_matches_nothing_clearly_is_a_warning(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    make_gguf("models/gemma-3-4b-it.gguf")
    make_gguf("models/smol.gguf")
    write_projector(tmp_path / "models" / "mmproj-F16.gguf")

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        entries = scan(tmp_path / "models")

    assert all(entry.mmproj is None for entry in entries.values())
    assert "mmproj-F16.gguf matches no model" in caplog.text


def test_the_config_names_the_projector(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/gemma-3-4b-it.gguf")
    make_gguf("models/smol.gguf")
    beside = write_projector(tmp_path / "models" / "mmproj-F16.gguf")
    elsewhere = write_projector(tmp_path / "projectors" / "smol-vision.gguf", audio=True)
    models = [
        ModelSettings(file="gemma-3-4b-it", mmproj="mmproj-F16.gguf"),  # beside the model
        ModelSettings(file="smol.gguf", mmproj=str(elsewhere)),  # a path
    ]

    entries = scan(tmp_path / "models", models=models)

    assert entries["gemma-3-4b-it"].mmproj == beside.resolve()
    assert entries["smol"].mmproj == elsewhere.resolve()
    assert entries["smol"].capabilities == ("completion", "vision", "audio")


def test_the_config_can_turn_pairing_off_and_a_missing_projector_is_a_warning(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    make_gguf("models/a/smol.gguf")
    write_projector(tmp_path / "models" / "a" / "mmproj-smol.gguf")
    make_gguf("models/b/tiny.gguf")
    models = [ModelSettings(file="smol", mmproj=""), ModelSettings(file="tiny", mmproj="gone")]

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        entries = scan(tmp_path / "models", models=models)

    assert entries["smol"].mmproj is None
    assert entries["tiny"].mmproj is None and entries["tiny"].capabilities == ("completion",)
    assert "not using projector" in caplog.text


def test_a_configured_model_path_pairs_the_projector_beside_it(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    model = make_gguf("elsewhere/smol.gguf")
    projector = write_projector(tmp_path / "elsewhere" / "mmproj-smol.gguf")

    entries = scan(tmp_path / "models", models=[ModelSettings(file=str(model))])

    assert entries["smol"].mmproj == projector.resolve()


# -- the projector's encoders ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("vision", "audio", "expected"),
    [
        (True, None, ("vision",)),
        (None, None, ("vision",)),  # written before audio encoders existed
        (False, True, ("audio",)),
        (True, True, ("vision", "audio")),
    ],
)
def test_projector_encoders(
    tmp_path: Path, vision: bool | None, audio: bool | None, expected: tuple[str, ...]
) -> None:
    info = read_projector_info(write_projector(tmp_path / "mmproj.gguf", vision, audio))
    assert info.modalities == expected
    assert info == ProjectorInfo(vision="vision" in expected, audio="audio" in expected)


def test_an_audio_projector_makes_an_audio_model(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/voxtral.gguf")
    write_projector(tmp_path / "models" / "mmproj-voxtral.gguf", vision=False, audio=True)

    assert scan(tmp_path / "models")["voxtral"].capabilities == ("completion", "audio")


# -- launching and listing ----------------------------------------------------------------------
def test_the_paired_projector_is_on_the_chat_childs_command_line(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    make_gguf("models/smol.gguf")
    projector = write_projector(tmp_path / "models" / "mmproj-smol.gguf")
    entry = scan(tmp_path / "models")["smol"]

    chat = build_argv(launch_spec(Settings(), entry, BINARY, Role.CHAT, 1))
    embedding = build_argv(launch_spec(Settings(), entry, BINARY, Role.EMBEDDING, 1))

    assert chat[chat.index("--mmproj") + 1] == str(projector.resolve())
    assert "--mmproj" not in embedding


def test_v1_models_shows_capabilities_where_they_say_more_than_completion() -> None:
    vision = dataclasses.replace(
        make_entry(), mmproj=Path("/models/mmproj.gguf"), modalities=("vision",)
    )
    assert openai.model_object(vision)["capabilities"] == ["completion", "vision"]
    assert "capabilities" not in openai.model_object(make_entry())  # OpenAI's exact shape
    listed = openai.model_list([vision, make_entry(stem="plain")])["data"]
    assert [m.get("capabilities") for m in listed] == [["completion", "vision"], None]
    reranker = make_entry(overrides=ModelSettings(file="tiny.Q4_1.gguf", reranker=True))
    assert openai.model_object(reranker)["capabilities"] == ["rerank"]


def test_api_v2_models_always_shows_capabilities() -> None:
    vision = dataclasses.replace(make_entry(), modalities=("vision", "audio"))
    assert api_v2.model_summary(vision)["capabilities"] == ["completion", "vision", "audio"]
    assert api_v2.model_summary(make_entry())["capabilities"] == ["completion"]


def test_the_schemas_document_capabilities() -> None:
    model = ModelObject.model_json_schema()
    assert "capabilities" in model["properties"]
    assert "capabilities" not in model.get("required", [])  # absent for text-only models
    summary = V2ModelSummary.model_json_schema()
    assert "capabilities" in summary["properties"] and "capabilities" in summary["required"]
