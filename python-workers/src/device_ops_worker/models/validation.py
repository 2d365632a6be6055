"""Checks of one model's files, and the file helpers they share with the repository.

Every function here works on an :class:`Inspection` the repository built from
a walk that never followed a symlink out of the repository; files are opened
only through :func:`open_regular`, which refuses anything but a regular file
reached without a final symlink, so a link swapped in for a checked file, or a
FIFO, cannot make the worker read outside the repository or block. (A folder
swapped for a link between the walk and the open is not caught: that needs
write access to the repository, which already means full control of the models.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..model_entry import ModelFormat, ModelManifest, Task
from .safetensors_header import SafetensorsHeaderError, read_header

# Suffixes of files loaded with pickle (unless the file is a TorchScript archive).
PICKLE_SUFFIXES = frozenset({".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"})
SAFETENSORS_SUFFIX = ".safetensors"
HASH_CHUNK_BYTES = 1024 * 1024
# JSON side files (configs, indexes, manifests) are small; a huge one is not
# worth reading into memory.
MAX_JSON_BYTES = 16 * 1024 * 1024
PICKLE_REFUSED = "pickle-based weights are refused; convert to safetensors or set ALLOW_PICKLE_MODELS=true"


@dataclass(frozen=True)
class ModelTree:
    """What a walk of one model found."""

    name: str
    # Resolved model folder or file; None when it is not inside the repository.
    path: Path | None
    is_file: bool
    # "manifest.json" in a folder, "<file>.manifest.json" beside a file.
    manifest_name: str
    # Relative POSIX path → resolved path, for every regular file reached
    # without leaving the repository (a single-file model: its file and its
    # sidecar manifest, by their names in the repository root).
    files: Mapping[str, Path]
    # Relative POSIX paths of sub-folders, symlinked ones (not walked) included.
    dirs: frozenset[str]
    size_bytes: int
    # Changes whenever a file is added, removed, replaced or modified.
    signature: tuple[object, ...]
    # Links out of the repository, unreadable folders, ambiguous names.
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Inspection:
    tree: ModelTree
    format: ModelFormat | None
    manifest: ModelManifest | None
    tasks: frozenset[Task]
    weight_files: tuple[Path, ...]
    # Problems that make the model unusable: get() raises with the first.
    fatal: tuple[str, ...]
    # Problems only validation reports (unknown manifest keys, a renamed model).
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- file helpers


def is_inside(root: Path, path: Path) -> bool:
    """Whether resolved ``path`` lies strictly inside resolved ``root``."""
    return path != root and path.is_relative_to(root)


def open_regular(path: Path) -> io.BufferedReader:
    """Open a resolved path for reading, refusing symlinks and non-regular files."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    with open_regular(path) as stream:
        while count := stream.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()


def read_small(path: Path) -> bytes:
    """Read a small side file; raises ValueError with a reason fit for a report."""
    try:
        with open_regular(path) as stream:
            raw = stream.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"is larger than {MAX_JSON_BYTES} bytes")
    return raw


def read_json(path: Path) -> object:
    """Parse a small JSON file; raises ValueError with a reason fit for a report."""
    raw = read_small(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None


def torchscript_problem(path: Path) -> str | None:
    """Why the file is not a TorchScript archive, or None when it is one."""
    try:
        with open_regular(path) as stream, zipfile.ZipFile(stream) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "is not a TorchScript archive (not a zip file; a legacy pickle?)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    # torch.jit.save writes "<archive>/code/...": the serialized TorchScript.
    # torch.save writes the same zip layout with data.pkl but no code.
    if any(_is_code_entry(name) for name in names):
        return None
    if any(name.endswith("/data.pkl") for name in names):
        return "is not a TorchScript archive (a torch.save file, e.g. a state dict)"
    return "is not a TorchScript archive (a zip without a code/ entry)"


def _is_code_entry(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 3 and parts[1] == "code"


def is_torchscript_archive(path: Path) -> bool:
    return torchscript_problem(path) is None


def is_pickle_file(relative: str, path: Path) -> bool:
    suffix = os.path.splitext(relative)[1].lower()
    return suffix in PICKLE_SUFFIXES and not is_torchscript_archive(path)


def weight_files(tree: ModelTree) -> tuple[Path, ...]:
    """Files a loader reads weights from: per folder, its safetensors files,
    or its pickle files when it has none (loaders prefer safetensors too)."""
    by_folder: dict[str, list[str]] = {}
    for relative in tree.files:
        by_folder.setdefault(os.path.dirname(relative), []).append(relative)
    chosen: list[str] = []
    for names in by_folder.values():
        safetensors = [n for n in names if n.endswith(SAFETENSORS_SUFFIX)]
        pickles = [n for n in names if os.path.splitext(n)[1].lower() in PICKLE_SUFFIXES]
        chosen.extend(safetensors or pickles)
    return tuple(tree.files[name] for name in sorted(chosen))


# ---------------------------------------------------------------- checks


def check_model(inspection: Inspection, root: Path, allow_pickle: bool) -> tuple[str, ...]:
    """Every problem of the model, one sentence each, in a stable order."""
    problems = [*inspection.fatal, *inspection.warnings]
    problems += _structure(inspection)
    if inspection.manifest is not None:
        problems += _integrity(inspection.tree, inspection.manifest, root)
    problems += _safetensors(inspection.tree)
    if not allow_pickle:
        problems += _pickles(inspection.tree)
    return tuple(dict.fromkeys(problems))


def _structure(inspection: Inspection) -> list[str]:
    tree = inspection.tree
    if inspection.format is ModelFormat.DIFFUSERS:
        return _diffusers(tree)
    if inspection.format is ModelFormat.TRANSFORMERS:
        return _transformers(tree)
    return []  # TorchScript: recognition already opened the archive.


def _json_object(tree: ModelTree, relative: str) -> tuple[dict[str, object] | None, list[str]]:
    if relative not in tree.files:
        return None, [f"{relative}: missing"]
    try:
        document = read_json(tree.files[relative])
    except ValueError as exc:
        return None, [f"{relative}: {exc}"]
    if not isinstance(document, dict):
        return None, [f"{relative}: is not a JSON object"]
    return document, []


def _diffusers(tree: ModelTree) -> list[str]:
    index, problems = _json_object(tree, "model_index.json")
    for component in _components(index or {}):
        if component not in tree.dirs:
            problems.append(f"model_index.json: component {component!r} has no folder {component}/")
    for folder in sorted(d for d in tree.dirs if "/" not in d):
        if f"{folder}/config.json" in tree.files and not _has_weights(tree, folder):
            problems.append(f"{folder}/: has config.json but no weights file (*.safetensors or *.bin)")
    return problems


def _components(index: dict[str, object]) -> Iterator[str]:
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if all(isinstance(part, str) for part in value):
            yield key


def _has_weights(tree: ModelTree, folder: str) -> bool:
    prefix = f"{folder}/" if folder else ""
    for relative in tree.files:
        name = relative[len(prefix) :]
        if relative.startswith(prefix) and "/" not in name and _is_weights_name(name):
            return True
    return False


def _is_weights_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix == SAFETENSORS_SUFFIX or suffix in PICKLE_SUFFIXES


def _transformers(tree: ModelTree) -> list[str]:
    _, problems = _json_object(tree, "config.json")
    indexes = [n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if n in tree.files]
    for index in indexes:
        problems += _shards(tree, index)
    if not indexes and not {"model.safetensors", "pytorch_model.bin"} & tree.files.keys():
        problems.append("config.json: no weights beside it (model.safetensors, a sharded index or pytorch_model.bin)")
    return problems


def _shards(tree: ModelTree, index_name: str) -> list[str]:
    index, problems = _json_object(tree, index_name)
    if index is None:
        return problems
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        return [f"{index_name}: has no weight_map object"]
    shards = sorted({shard for shard in weight_map.values() if isinstance(shard, str)})
    return [f"{index_name}: shard {shard!r} is missing" for shard in shards if shard not in tree.files]


def _integrity(tree: ModelTree, manifest: ModelManifest, root: Path) -> list[str]:
    problems: list[str] = []
    for relative, expected in sorted(manifest.files.items()):
        path = _manifest_file(tree, relative, root)
        if path is None:
            problems.append(f"{relative}: listed in the manifest but missing from the model")
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            problems.append(f"{relative}: cannot be read ({exc.strerror})")
            continue
        if actual != expected:
            problems.append(f"{relative}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
    return problems


def _manifest_file(tree: ModelTree, relative: str, root: Path) -> Path | None:
    if relative in tree.files:
        return tree.files[relative]
    if tree.is_file or tree.path is None:
        return None
    # Files under a symlinked folder are not walked; resolve them here, and
    # only accept them when they stay inside the repository.
    target = Path(os.path.realpath(tree.path / relative))
    return target if is_inside(root, target) and target.is_file() else None


def _safetensors(tree: ModelTree) -> list[str]:
    problems: list[str] = []
    for relative, path in sorted(tree.files.items()):
        if not relative.endswith(SAFETENSORS_SUFFIX):
            continue
        try:
            with open_regular(path) as stream:
                read_header(stream, os.fstat(stream.fileno()).st_size)
        except SafetensorsHeaderError as exc:
            problems.append(f"{relative}: invalid safetensors file ({exc})")
        except OSError as exc:
            problems.append(f"{relative}: cannot be read ({exc.strerror})")
    return problems


def _pickles(tree: ModelTree) -> list[str]:
    return [
        f"{relative}: {PICKLE_REFUSED}"
        for relative, path in sorted(tree.files.items())
        if is_pickle_file(relative, path)
    ]
