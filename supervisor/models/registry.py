"""The model registry: which GGUF files exist, and which request names map to them.

Scanning touches the filesystem; resolving a request's model name never does. A name is only
ever a dictionary key, so a client cannot use it to reach files outside the models directories.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from supervisor.config import ModelSettings, Settings
from supervisor.errors import BadRequest, ModelNotFound
from supervisor.models.gguf import GGUFInfo, InvalidModelFile, read_gguf_info, read_projector_info
from supervisor.models.projectors import is_projector_file_name, pair_projectors

logger = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

_CacheKey = tuple[str, int, int]
# A model file to register: its path, its own [[models]] entry (None: look it up by name), and
# the projector found beside it (None: none).
_Candidate = tuple[Path, ModelSettings | None, Path | None]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path
    file_name: str
    stem: str
    alias: str | None
    size: int
    modified: float
    info: GGUFInfo
    # Pydantic models are unhashable; leaving this out of eq/hash keeps entries hashable.
    overrides: ModelSettings | None = field(default=None, compare=False)
    # The multimodal projector loaded beside the model (--mmproj), its size in bytes, and what
    # it lets the model take in ("vision", "audio").
    mmproj: Path | None = None
    mmproj_size: int = 0
    modalities: tuple[str, ...] = ()

    @property
    def reranker(self) -> bool:
        """Configured as a dedicated reranker: its one child runs with --reranking."""
        return self.overrides is not None and self.overrides.reranker

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What clients may ask of the model: "completion" (for a dedicated reranker, whose
        only child answers /v1/rerank, "rerank" instead), then what its projector adds."""
        return ("rerank" if self.reranker else "completion", *self.modalities)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this model answers to, in resolution order."""
        if self.alias is not None:
            return (self.alias, self.file_name, self.stem)
        return (self.file_name, self.stem)


@dataclass(frozen=True)
class _Index:
    entries: tuple[ModelEntry, ...] = ()
    by_alias: dict[str, ModelEntry] = field(default_factory=dict)
    by_file: dict[str, ModelEntry] = field(default_factory=dict)
    by_stem: dict[str, ModelEntry] = field(default_factory=dict)


def is_model_file_name(name: str) -> bool:
    """Whether a directory entry named ``name`` should be registered as a model."""
    if name.startswith(".") or not name.lower().endswith(".gguf"):
        return False
    # Multimodal projectors are loaded alongside a model (--mmproj), never on their own.
    if name.lower().startswith("mmproj"):
        return False
    # llama-server opens a split model through its first shard and finds the rest itself.
    shard = _SHARD_RE.search(name)
    return shard is None or int(shard.group(1)) <= 1


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may be looked up at all: never empty, and never anything path-like."""
    return name not in ("", ".", "..") and not ("/" in name or "\\" in name or "\x00" in name)


class Registry:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._index = _Index()
        self._info_cache: dict[_CacheKey, GGUFInfo] = {}

    def scan(self) -> list[ModelEntry]:
        """Rescan the models directories and configured paths; return entries sorted by id."""
        cache: dict[_CacheKey, GGUFInfo] = {}
        found: list[ModelEntry] = []
        seen_paths: set[Path] = set()
        for link_path, overrides, projector in self._candidates():
            entry = self._make_entry(link_path, overrides, projector, cache)
            if entry is None:
                continue
            # A configured path that also sits in a models dir is the same model, not a clash.
            if overrides is not None and entry.path in seen_paths:
                continue
            seen_paths.add(entry.path)
            found.append(entry)
        index = _build_index(found)
        # Swapped in only once complete, so a scan that raises leaves the previous index intact;
        # the cache keeps only files still present, so it cannot grow without bound.
        self._index = index
        self._info_cache = cache
        return list(index.entries)

    def entries(self) -> list[ModelEntry]:
        """The last scan's entries, sorted by id."""
        return list(self._index.entries)

    def find(self, name: str) -> ModelEntry | None:
        """The model ``name`` refers to (alias, then file name, then stem), or None."""
        if not is_safe_name(name):
            return None
        index = self._index
        for table in (index.by_alias, index.by_file, index.by_stem):
            entry = table.get(name)
            if entry is not None:
                return entry
        return None

    def resolve(self, name: str) -> ModelEntry:
        """Like ``find``, but raise ``ModelNotFound`` for an unknown name."""
        entry = self.find(name)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def _candidates(self) -> list[_Candidate]:
        # Directory files come first so their order decides duplicates; configured paths carry
        # their own [[models]] entry.
        roots = _existing_roots(self._settings.models_dirs)
        found = [c for root in roots for c in _walk_models_dir(root, roots)]
        for model in self._settings.models:
            path = _configured_path(model.file)
            if path is not None:
                found.append((path, model, _projector_beside(path)))
        return found

    def _make_entry(
        self,
        path: Path,
        overrides: ModelSettings | None,
        projector: Path | None,
        cache: dict[_CacheKey, GGUFInfo],
    ) -> ModelEntry | None:
        try:
            resolved = path.resolve(strict=True)
            stat = resolved.stat()
        except (OSError, RuntimeError) as exc:
            logger.warning("skipping model file %s: %s", path, exc)
            return None
        key: _CacheKey = (str(resolved), stat.st_size, stat.st_mtime_ns)
        info = cache.get(key) or self._info_cache.get(key)
        if info is None:
            try:
                info = read_gguf_info(resolved)
            except InvalidModelFile as exc:
                logger.warning("skipping model file %s: %s", path, exc)
                return None
        cache[key] = info
        # Names come from the link itself, so a symlink can give a model a friendlier name.
        file_name = path.name
        stem = path.stem
        if overrides is None:
            overrides = _overrides_for(self._settings, file_name, stem, resolved)
        alias = overrides.alias if overrides is not None else None
        if overrides is not None and overrides.mmproj is not None:
            projector = _configured_projector(overrides.mmproj, path)
        mmproj, mmproj_size, modalities = _load_projector(projector, path)
        return ModelEntry(
            id=alias or stem,
            path=resolved,
            file_name=file_name,
            stem=stem,
            alias=alias,
            size=stat.st_size,
            modified=stat.st_mtime,
            info=info,
            overrides=overrides,
            mmproj=mmproj,
            mmproj_size=mmproj_size,
            modalities=modalities,
        )


def _load_projector(
    projector: Path | None, model: Path
) -> tuple[Path | None, int, tuple[str, ...]]:
    """The projector's resolved path, size and modalities; nothing if there is none, or if it
    cannot be used (then the model is served without it, and a warning says why)."""
    if projector is None:
        return None, 0, ()
    try:
        resolved = projector.resolve(strict=True)
        info = read_projector_info(resolved)
    except (OSError, RuntimeError, InvalidModelFile) as exc:
        logger.warning("model %s: not using projector %s: %s", model, projector, exc)
        return None, 0, ()
    return resolved, resolved.stat().st_size, info.modalities


def _configured_projector(mmproj: str, model: Path) -> Path | None:
    """``mmproj`` of a [[models]] entry: a bare file name is looked for beside the model, a
    path is taken as ``file``'s is; an empty string turns pairing off."""
    if mmproj == "":
        return None
    if _is_path_like(mmproj):
        return Path(mmproj).expanduser()
    return model.parent / mmproj


def _existing_roots(dirs: list[Path]) -> list[Path]:
    roots: list[Path] = []
    for directory in dirs:
        resolved = directory.expanduser().resolve()
        if not resolved.is_dir():
            logger.warning("models directory %s does not exist; skipping it", directory)
            continue
        if resolved not in roots:
            roots.append(resolved)
    return roots


def _walk_models_dir(root: Path, roots: list[Path]) -> list[_Candidate]:
    found: list[_Candidate] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # Sorted in place so the walk order, and with it duplicate resolution, is deterministic.
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        folder = Path(dirpath)
        names = sorted(filenames)
        models = [n for n in names if is_model_file_name(n) and _inside(folder / n, roots)]
        projectors = [n for n in names if is_projector_file_name(n) and _inside(folder / n, roots)]
        pairs = pair_projectors(models, projectors)
        for unpaired in sorted(set(projectors) - set(pairs.values())):
            logger.warning(
                "projector %s matches no model in its folder clearly; name it in a model's "
                "[[models]] entry (mmproj) to use it",
                folder / unpaired,
            )
        found += [(folder / n, None, folder / pairs[n] if n in pairs else None) for n in models]
    return found


def _inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path``, symlinks followed, stays inside the models directories."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        logger.warning("skipping %s: %s", path, exc)
        return False
    if not any(target.is_relative_to(allowed) for allowed in roots):
        logger.warning("skipping %s: it links outside the models directories", path)
        return False
    return True


def _projector_beside(path: Path) -> Path | None:
    """The projector paired with a configured model file in its own folder, if any."""
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return None
    models = [n for n in names if is_model_file_name(n)]
    projectors = [n for n in names if is_projector_file_name(n)]
    paired = pair_projectors(models, projectors).get(path.name)
    return path.parent / paired if paired else None


def _is_path_like(file: str) -> bool:
    return os.sep in file or "/" in file or Path(file).is_absolute()


def _configured_path(file: str) -> Path | None:
    # Only a value that is visibly a path is treated as one; a bare name is matched by scanning.
    if not _is_path_like(file):
        return None
    path = Path(file).expanduser()
    if not path.is_file():
        logger.warning("configured model file %s does not exist; skipping it", file)
        return None
    return path


def _overrides_for(
    settings: Settings, file_name: str, stem: str, resolved: Path
) -> ModelSettings | None:
    """The ``[[models]]`` entry naming this file by name or stem. An entry giving a path only
    applies to that very file: otherwise ``/elsewhere/m.gguf`` would hand its alias to every
    ``m.gguf`` in a models dir."""
    for model in settings.models:
        if Path(model.file).name not in (file_name, stem):
            continue
        if _is_path_like(model.file):
            try:
                if Path(model.file).expanduser().resolve() != resolved:
                    continue
            except (OSError, RuntimeError):
                continue
        return model
    return None


def _build_index(found: list[ModelEntry]) -> _Index:
    by_id: dict[str, ModelEntry] = {}
    by_alias: dict[str, ModelEntry] = {}
    by_file: dict[str, ModelEntry] = {}
    by_stem: dict[str, ModelEntry] = {}
    for entry in found:
        # An entry whose id is taken could never be listed or addressed by it: drop it whole.
        if not _claim(by_id, entry.id, entry):
            continue
        if entry.alias is not None:
            _claim(by_alias, entry.alias, entry)
        _claim(by_file, entry.file_name, entry)
        _claim(by_stem, entry.stem, entry)
    entries = tuple(sorted(by_id.values(), key=lambda entry: entry.id))
    return _Index(entries, by_alias, by_file, by_stem)


def _claim(table: dict[str, ModelEntry], name: str, entry: ModelEntry) -> bool:
    first = table.setdefault(name, entry)
    if first is not entry:
        logger.warning("duplicate model name %r: %s wins over %s", name, first.path, entry.path)
    return first is entry


def version_entry(settings: Settings, current: ModelEntry, path: str) -> ModelEntry:
    """``current`` served from another file, for a hot swap. ``path`` (absolute, or relative to
    a models directory) must resolve, symlinks followed, to a readable GGUF inside a models
    directory: anything else is a 400 that names no host path beyond what was given."""
    if "\x00" in path:  # the OS refuses such a path (ValueError), so no file has this name
        raise BadRequest("a model file path cannot contain a NUL byte", param="path")
    roots = _existing_roots(settings.models_dirs)
    given = Path(path)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for candidate in candidates:
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not any(resolved.is_relative_to(root) for root in roots):
            raise BadRequest(f"'{path}' is outside the models directories", param="path")
        if resolved.suffix.lower() != ".gguf" or not resolved.is_file():
            raise BadRequest(f"'{path}' is not a .gguf file", param="path")
        try:
            info = read_gguf_info(resolved)
        except InvalidModelFile as exc:
            raise BadRequest(f"'{path}' is not a usable GGUF file: {exc}", param="path") from exc
        stat = resolved.stat()
        return replace(current, path=resolved, size=stat.st_size, modified=stat.st_mtime, info=info)
    raise BadRequest(f"no model file '{path}' in the models directories", param="path")
