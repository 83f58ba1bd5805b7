from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.config import ModelSettings, Settings
from supervisor.errors import ModelNotFound
from supervisor.models.gguf import GGUFInfo, read_gguf_info
from supervisor.models.registry import Registry, is_model_file_name

MakeGGUF = Callable[..., Path]


def make_registry(*dirs: Path, models: list[ModelSettings] | None = None) -> Registry:
    registry = Registry(Settings(models_dirs=list(dirs), models=models or []))
    registry.scan()
    return registry


def ids(registry: Registry) -> list[str]:
    return [entry.id for entry in registry.entries()]


def test_scan_lists_entries_with_metadata(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    path = make_gguf("models/b-model.Q4_1.gguf", ctx=4096)
    make_gguf("models/sub/a-model.gguf")

    entries = make_registry(tmp_path / "models").entries()

    assert [entry.id for entry in entries] == ["a-model", "b-model.Q4_1"]
    entry = entries[1]
    assert entry.path == path.resolve()
    assert entry.file_name == "b-model.Q4_1.gguf"
    assert entry.stem == "b-model.Q4_1"
    assert entry.alias is None
    assert entry.overrides is None
    assert entry.size == path.stat().st_size
    assert entry.modified == path.stat().st_mtime
    assert entry.info.context_length == 4096
    assert entry.names == ("b-model.Q4_1.gguf", "b-model.Q4_1")


def test_resolve_by_alias_file_name_and_stem(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/tiny.Q4_1.gguf")
    overrides = ModelSettings(file="tiny.Q4_1.gguf", alias="tiny", ctx_size=1024)
    registry = make_registry(tmp_path / "models", models=[overrides])

    entry = registry.resolve("tiny")

    assert entry.id == "tiny"
    assert entry.alias == "tiny"
    assert entry.overrides == overrides
    assert entry.names == ("tiny", "tiny.Q4_1.gguf", "tiny.Q4_1")
    assert registry.resolve("tiny.Q4_1.gguf") is entry
    assert registry.resolve("tiny.Q4_1") is entry
    assert registry.find("tiny") is entry


def test_overrides_matched_by_stem(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/m.gguf")
    registry = make_registry(tmp_path / "models", models=[ModelSettings(file="m", parallel=2)])

    entry = registry.resolve("m")

    assert entry.overrides is not None
    assert entry.overrides.parallel == 2
    assert entry.id == "m"


def test_alias_clashing_with_a_stem_wins_and_shadows_that_file(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    aliased = make_gguf("models/a.gguf")
    make_gguf("models/b.gguf")
    overrides = [ModelSettings(file="a.gguf", alias="b")]

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        registry = make_registry(tmp_path / "models", models=overrides)

    # Two models listed under one id would be ambiguous, so the later one is dropped, loudly.
    assert ids(registry) == ["b"]
    assert registry.resolve("b").path == aliased.resolve()
    assert registry.find("b.gguf") is None
    assert "duplicate model name 'b'" in caplog.text


def test_unknown_name_raises_model_not_found(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/m.gguf")
    registry = make_registry(tmp_path / "models")

    with pytest.raises(ModelNotFound) as caught:
        registry.resolve("other")

    assert caught.value.name == "other"
    assert registry.find("other") is None


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/b", "..", ".", "", "m\\..\\m", "m\x00", "models/m.gguf"]
)
def test_path_like_names_are_never_found(tmp_path: Path, make_gguf: MakeGGUF, name: str) -> None:
    make_gguf("models/m.gguf")
    registry = make_registry(tmp_path / "models")

    with pytest.raises(ModelNotFound):
        registry.resolve(name)


def test_path_like_name_never_reaches_files_outside(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    outside = make_gguf("outside/secret.gguf")
    (tmp_path / "models").mkdir()
    registry = make_registry(tmp_path / "models")

    with pytest.raises(ModelNotFound):
        registry.resolve(str(outside))
    with pytest.raises(ModelNotFound):
        registry.resolve("../outside/secret.gguf")


def test_invalid_files_are_skipped_with_warning(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    make_gguf("models/good.gguf")
    (tmp_path / "models" / "garbage.gguf").write_bytes(b"not a model")
    cut = make_gguf("models/cut.gguf")
    cut.write_bytes(cut.read_bytes()[:40])

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        registry = make_registry(tmp_path / "models")

    assert ids(registry) == ["good"]
    assert "garbage.gguf" in caplog.text
    assert "cut.gguf" in caplog.text


def test_skips_mmproj_shards_hidden_and_other_files(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/mmproj-model-f16.gguf")
    make_gguf("models/MMPROJ-upper.gguf")
    make_gguf("models/big-00001-of-00003.gguf")
    make_gguf("models/big-00002-of-00003.gguf")
    make_gguf("models/big-00003-of-00003.gguf")
    make_gguf("models/.hidden.gguf")
    make_gguf("models/.cache/inside-hidden-dir.gguf")
    make_gguf("models/upper.GGUF")
    make_gguf("models/not-a-model.bin")

    registry = make_registry(tmp_path / "models")

    assert ids(registry) == ["big-00001-of-00003", "upper"]
    assert registry.resolve("upper.GGUF").stem == "upper"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("m.gguf", True),
        ("M.GGUF", True),
        ("m-00001-of-00002.gguf", True),
        ("m-00002-of-00002.gguf", False),
        ("mmproj-m.gguf", False),
        (".m.gguf", False),
        ("m.gguf.part", False),
    ],
)
def test_is_model_file_name(name: str, expected: bool) -> None:
    assert is_model_file_name(name) is expected


def test_symlink_outside_models_dir_is_skipped(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    outside = make_gguf("outside/secret.gguf")
    inside = make_gguf("models/real/real.gguf")
    models = tmp_path / "models"
    os.symlink(outside, models / "escape.gguf")
    os.symlink(inside, models / "friendly.gguf")
    os.symlink(tmp_path / "outside", models / "linked-dir")

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        registry = make_registry(models)

    assert ids(registry) == ["friendly", "real"]
    assert registry.resolve("friendly").path == inside.resolve()
    assert registry.find("escape") is None
    assert registry.find("secret") is None
    assert "escape.gguf" in caplog.text


def test_symlink_between_models_dirs_is_kept(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    target = make_gguf("second/model.gguf")
    (tmp_path / "first").mkdir()
    os.symlink(target, tmp_path / "first" / "linked.gguf")

    registry = make_registry(tmp_path / "first", tmp_path / "second")

    assert ids(registry) == ["linked", "model"]


def test_broken_symlink_is_skipped(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/ok.gguf")
    os.symlink(tmp_path / "models" / "gone.gguf", tmp_path / "models" / "broken.gguf")

    assert ids(make_registry(tmp_path / "models")) == ["ok"]


def test_missing_models_dir_is_a_warning(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    make_gguf("models/m.gguf")

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        registry = make_registry(tmp_path / "absent", tmp_path / "models")

    assert ids(registry) == ["m"]
    assert "absent" in caplog.text


def test_duplicate_stems_first_dir_wins(
    tmp_path: Path, make_gguf: MakeGGUF, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_gguf("one/m.gguf", ctx=111)
    make_gguf("two/m.gguf", ctx=222)

    with caplog.at_level(logging.WARNING, logger="supervisor.models.registry"):
        registry = make_registry(tmp_path / "one", tmp_path / "two")

    assert ids(registry) == ["m"]
    assert registry.resolve("m").path == first.resolve()
    assert registry.resolve("m.gguf").info.context_length == 111
    assert "duplicate" in caplog.text


def test_duplicate_stems_in_one_dir_sorted_walk_wins(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/b/m.gguf", ctx=222)
    first = make_gguf("models/a/m.gguf", ctx=111)

    registry = make_registry(tmp_path / "models")

    assert registry.resolve("m").path == first.resolve()


def test_configured_path_is_registered(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    elsewhere = make_gguf("elsewhere/m.gguf", ctx=333)
    make_gguf("models/m.gguf", ctx=111)
    overrides = ModelSettings(file=str(elsewhere), alias="special")

    registry = make_registry(tmp_path / "models", models=[overrides])

    # The path entry's alias belongs to that file only, not to the same-named file in models/.
    assert ids(registry) == ["m", "special"]
    special = registry.resolve("special")
    assert special.path == elsewhere.resolve()
    assert special.overrides == overrides
    assert registry.resolve("m").info.context_length == 111
    assert registry.resolve("m").overrides is None


def test_configured_path_inside_models_dir_is_not_duplicated(
    tmp_path: Path, make_gguf: MakeGGUF
) -> None:
    path = make_gguf("models/m.gguf")
    overrides = ModelSettings(file=str(path), alias="mine")

    registry = make_registry(tmp_path / "models", models=[overrides])

    assert ids(registry) == ["mine"]
    assert registry.resolve("m").overrides == overrides


def test_missing_configured_path_is_skipped(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    make_gguf("models/m.gguf")
    missing = ModelSettings(file=str(tmp_path / "nowhere" / "x.gguf"), alias="x")

    assert ids(make_registry(tmp_path / "models", models=[missing])) == ["m"]


def test_rescan_picks_up_new_and_drops_removed(tmp_path: Path, make_gguf: MakeGGUF) -> None:
    old = make_gguf("models/old.gguf")
    registry = make_registry(tmp_path / "models")
    assert ids(registry) == ["old"]

    old.unlink()
    make_gguf("models/new.gguf")

    assert [entry.id for entry in registry.scan()] == ["new"]
    assert ids(registry) == ["new"]
    assert registry.find("old") is None


def test_rescan_reuses_cached_metadata(
    tmp_path: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def counting_read(path: Path) -> GGUFInfo:
        calls.append(path)
        return read_gguf_info(path)

    monkeypatch.setattr("supervisor.models.registry.read_gguf_info", counting_read)
    make_gguf("models/a.gguf")
    changed = make_gguf("models/b.gguf", ctx=100)
    registry = make_registry(tmp_path / "models")
    assert len(calls) == 2

    registry.scan()
    assert len(calls) == 2

    make_gguf("models/b.gguf", ctx=200, tensor_shape=(8, 8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    registry.scan()
    assert calls[2:] == [changed.resolve()]
    assert registry.resolve("b").info.context_length == 200


def test_failed_scan_keeps_previous_index(
    tmp_path: Path, make_gguf: MakeGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_gguf("models/m.gguf")
    registry = make_registry(tmp_path / "models")
    make_gguf("models/n.gguf")

    def boom(path: Path) -> GGUFInfo:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("supervisor.models.registry.read_gguf_info", boom)
    with pytest.raises(RuntimeError):
        registry.scan()

    assert ids(registry) == ["m"]
    assert registry.resolve("m").stem == "m"


def test_entries_empty_before_scan(tmp_path: Path) -> None:
    registry = Registry(Settings(models_dirs=[tmp_path]))

    assert registry.entries() == []
    assert registry.find("anything") is None
