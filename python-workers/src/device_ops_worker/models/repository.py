"""The model repository: the models found in one folder (MODEL_DIRECTORY).

Layout: one folder or one TorchScript file per model, directly under the
root. Nothing outside the root is ever opened: every path is resolved and
checked against the resolved root, walks never follow symlinks, and a model
holding a link out of the root is refused as a whole (a partial model would
load the wrong weights or fail later with a worse message).
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, WorkerError
from ..model_entry import (
    DIFFUSION_TASKS,
    ModelEntry,
    ModelFormat,
    ModelManifest,
    Task,
    ValidationReport,
    ValidationState,
)
from .manifest import ManifestError, parse_manifest
from .validation import (
    Inspection,
    ModelTree,
    check_model,
    is_inside,
    read_small,
    torchscript_problem,
    weight_files,
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript")
MANIFEST_NAME = "manifest.json"
SIDECAR_SUFFIX = ".manifest.json"
_ESCAPE = "symlink points outside the model repository"

_DEFAULT_TASKS: dict[ModelFormat, frozenset[Task]] = {
    ModelFormat.DIFFUSERS: DIFFUSION_TASKS,
    ModelFormat.TRANSFORMERS: frozenset({Task.TEXT_EMBEDDING}),
    ModelFormat.TORCHSCRIPT: frozenset({Task.TENSOR}),
}
_ALLOWED_TASKS: dict[ModelFormat, frozenset[Task]] = {
    ModelFormat.DIFFUSERS: DIFFUSION_TASKS,
    ModelFormat.TRANSFORMERS: frozenset({Task.TEXT_EMBEDDING}),
    ModelFormat.TORCHSCRIPT: frozenset({Task.TENSOR, Task.UPSCALE, Task.ENHANCE}),
}
_Signature = tuple[object, ...]


def check_model_name(name: object) -> str:
    """Return ``name`` if it can name a model, else raise InvalidArgumentError."""
    if isinstance(name, str) and _NAME.fullmatch(name) and ".." not in name:
        return name
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    raise InvalidArgumentError(
        f"model: {shown} is not a valid model name (letters, digits, '.', '_' and '-', at most 128)"
    )


class ModelRepository:
    def __init__(self, root: Path, allow_pickle: bool, lookup_ttl_seconds: float = 1.0) -> None:
        self._root = Path(os.path.realpath(root))
        self._allow_pickle = allow_pickle
        self._lock = threading.Lock()
        self._reports: dict[str, tuple[_Signature, ValidationReport]] = {}
        # Every Infer looks its model up: walking the folder each time costs
        # about a millisecond of event-loop time. get() and validation_state()
        # reuse a walk for this long; validate() always walks afresh.
        self._lookup_ttl = lookup_ttl_seconds
        self._lookups: dict[str, tuple[float, ModelTree, ModelEntry | None]] = {}

    @property
    def root(self) -> Path:
        return self._root

    def list(self) -> builtins.list[ModelEntry]:
        """Every usable model, sorted by name; cheap (no hashing, no header parsing)."""
        entries: builtins.list[ModelEntry] = []
        for name in self._candidate_names():
            try:
                entries.append(self.get(name))
            except WorkerError as exc:
                log.warning(
                    "skipping a repository entry that is not a usable model",
                    extra={"model": name, "reason": exc.message},
                )
        return entries

    def get(self, name: str) -> ModelEntry:
        """One model; FailedPreconditionError when it exists but cannot be used."""
        tree, entry = self._recent(name)
        if entry is not None:
            return entry
        inspection = self._inspect(tree)
        if inspection.fatal:
            raise FailedPreconditionError(f"model: {name!r} cannot be used: {inspection.fatal[0]}")
        assert inspection.tree.path is not None and inspection.format is not None
        entry = ModelEntry(
            name=name,
            path=inspection.tree.path,
            format=inspection.format,
            tasks=inspection.tasks,
            size_bytes=inspection.tree.size_bytes,
            manifest=inspection.manifest,
            weight_files=inspection.weight_files,
        )
        with self._lock:
            self._lookups[name] = (self._lookups[name][0], tree, entry)
        return entry

    def _recent(self, name: str) -> tuple[ModelTree, ModelEntry | None]:
        """The folder walk (and entry) of the last lookup if recent, else a fresh walk."""
        check_model_name(name)
        now = time.monotonic()
        with self._lock:
            cached = self._lookups.get(name)
        if cached is not None and now - cached[0] < self._lookup_ttl:
            return cached[1], cached[2]
        tree = self._tree(name)
        with self._lock:
            self._lookups[name] = (now, tree, None)
        return tree, None

    def validate(self, name: str) -> ValidationReport:
        """Every check, hashing included; a broken model is a report, not an error."""
        tree = self._tree(name)
        with self._lock:
            self._lookups[name] = (time.monotonic(), tree, None)
        problems = check_model(self._inspect(tree), self._root, self._allow_pickle)
        report = ValidationReport(model=name, valid=not problems, problems=problems)
        self._remember(name, tree.signature, report)
        log.info("model validated", extra={"model": name, "valid": report.valid, "problems": list(problems)})
        return report

    def validation_state(self, name: str) -> ValidationState:
        """The last validate() verdict while the model's files are unchanged (cheap: stats only)."""
        signature = self._recent(name)[0].signature
        with self._lock:
            cached = self._reports.get(name)
        if cached is None or cached[0] != signature:
            return ValidationState.UNKNOWN
        return ValidationState.VALID if cached[1].valid else ValidationState.INVALID

    def resolve_file(self, entry: ModelEntry, relative: str) -> Path:
        """The resolved path of ``relative`` inside ``entry`` (it need not exist)."""
        _check_relative(relative)
        model = Path(os.path.realpath(entry.path))
        if not is_inside(self._root, model):
            raise FailedPreconditionError(f"model: {entry.name!r} is not inside the model repository")
        if not model.is_dir():
            return self._own_file(entry, model, relative)
        target = Path(os.path.realpath(model / relative))
        if not is_inside(self._root, target):
            raise FailedPreconditionError(f"model: {entry.name!r}: {relative} resolves outside the model repository")
        return target

    # ------------------------------------------------------------ lookup

    def _remember(self, name: str, signature: _Signature, report: ValidationReport) -> None:
        # A file changed while it was being checked: the report describes
        # neither version, so it must not vouch for the current one.
        try:
            unchanged = self._tree(name).signature == signature
        except WorkerError:
            unchanged = False
        with self._lock:
            if unchanged:
                self._reports[name] = (signature, report)
            else:
                self._reports.pop(name, None)

    def _candidate_names(self) -> builtins.list[str]:
        try:
            with os.scandir(self._root) as listing:
                filenames = [entry.name for entry in listing]
        except OSError as exc:
            log.warning("model directory cannot be read", extra={"reason": exc.strerror})
            return []
        names = {self._model_name_of(filename) for filename in filenames}
        return sorted(name for name in names if name is not None)

    def _model_name_of(self, filename: str) -> str | None:
        if filename.startswith(".") or filename.endswith(SIDECAR_SUFFIX):
            return None
        path = self._root / filename
        target = Path(os.path.realpath(path))
        inside = is_inside(self._root, target)
        if inside and target.is_dir():
            return filename
        if filename.endswith(TORCHSCRIPT_SUFFIXES):
            return os.path.splitext(filename)[0]
        if not inside:
            return filename  # get() refuses it and list() logs why.
        log.warning(
            "skipping a repository entry that is not a model folder or TorchScript file", extra={"entry": filename}
        )
        return None

    def _candidates(self, name: str) -> builtins.list[Path]:
        found: builtins.list[Path] = []
        folder = self._root / name
        if os.path.lexists(folder) and self._leads_to(folder, os.path.isdir):
            found.append(folder)
        for suffix in TORCHSCRIPT_SUFFIXES:
            file = self._root / f"{name}{suffix}"
            if os.path.lexists(file) and self._leads_to(file, os.path.isfile):
                found.append(file)
        return found

    def _leads_to(self, path: Path, kind: Callable[[str], bool]) -> bool:
        # A link out of the root counts as a candidate (to be refused by
        # name) without its target ever being touched.
        target = os.path.realpath(path)
        return not is_inside(self._root, Path(target)) or kind(target)

    def _tree(self, name: str) -> ModelTree:
        check_model_name(name)
        candidates = self._candidates(name)
        if not candidates:
            raise NotFoundError(f"model: no model named {name!r} in the repository")
        if len(candidates) > 1:
            listed = ", ".join(path.name for path in candidates)
            return _problem_tree(name, f"{name}: ambiguous, several entries claim this name ({listed})")
        path = candidates[0]
        target = Path(os.path.realpath(path))
        if not is_inside(self._root, target):
            return _problem_tree(name, f"{path.name}: {_ESCAPE}", _link_target(path))
        walker = _Walker(self._root)
        if target.is_dir():
            walker.walk_folder(target)
            return walker.tree(name, target, is_file=False, manifest_name=MANIFEST_NAME)
        walker.add_file(path.name, path)
        sidecar = f"{path.name}{SIDECAR_SUFFIX}"
        if os.path.lexists(self._root / sidecar):
            walker.add_file(sidecar, self._root / sidecar)
        return walker.tree(name, target, is_file=True, manifest_name=sidecar)

    def _own_file(self, entry: ModelEntry, model: Path, relative: str) -> Path:
        if "/" not in relative and Path(os.path.realpath(self._root / relative)) == model:
            return model
        raise InvalidArgumentError(f"file: {relative!r} is not part of model {entry.name!r}")

    # ------------------------------------------------------------ recognition

    def _inspect(self, tree: ModelTree) -> Inspection:
        if tree.path is None:
            return Inspection(tree, None, None, frozenset(), (), tree.problems, ())
        manifest, fatal, warnings = _read_manifest(tree)
        model_format, reason = _detect_format(tree, manifest)
        fatal += [reason] if reason else []
        tasks: frozenset[Task] = frozenset()
        if model_format is not None:
            tasks, task_problem = _tasks(model_format, manifest, tree.manifest_name)
            fatal += [task_problem] if task_problem else []
        weights = _weights(tree, model_format)
        warnings += _manifest_warnings(tree, manifest)
        return Inspection(tree, model_format, manifest, tasks, weights, (*tree.problems, *fatal), tuple(warnings))


class _Walker:
    """Collects a model's regular files without following symlinks out of the root."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._files: dict[str, Path] = {}
        self._stats: dict[str, os.stat_result] = {}
        self._dirs: set[str] = set()
        self._problems: builtins.list[str] = []

    def walk_folder(self, folder: Path) -> None:
        def unreadable(exc: OSError) -> None:
            where = _posix(os.path.relpath(exc.filename, folder)) if exc.filename else "."
            label = "model folder" if where == "." else f"{where}/"
            self._problems.append(f"{label}: cannot be read ({exc.strerror})")

        for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=False):
            base = _posix(os.path.relpath(dirpath, folder))
            prefix = "" if base == "." else f"{base}/"
            for dirname in dirnames:
                self._add_dir(prefix + dirname, Path(dirpath, dirname))
            for filename in filenames:
                self.add_file(prefix + filename, Path(dirpath, filename))

    def add_file(self, relative: str, path: Path) -> None:
        try:
            status = os.lstat(path)
            if stat.S_ISLNK(status.st_mode):
                target = Path(os.path.realpath(path))
                if not is_inside(self._root, target):
                    self._problems.append(f"{relative}: {_ESCAPE}")
                    return
                path, status = target, os.stat(target)
        except OSError:
            return  # Vanished, or a dangling link: as if it were not there.
        if stat.S_ISREG(status.st_mode):
            self._files[relative] = Path(os.path.realpath(path))
            self._stats[relative] = status

    def _add_dir(self, relative: str, path: Path) -> None:
        # os.walk does not descend into linked folders; one that stays inside
        # the root is allowed (its files are reachable through resolve_file).
        if path.is_symlink() and not is_inside(self._root, Path(os.path.realpath(path))):
            self._problems.append(f"{relative}/: {_ESCAPE}")
            return
        self._dirs.add(relative)

    def tree(self, name: str, path: Path, is_file: bool, manifest_name: str) -> ModelTree:
        unique = {(s.st_dev, s.st_ino): s.st_size for s in self._stats.values()}
        files = tuple(
            sorted((rel, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for rel, s in self._stats.items())
        )
        return ModelTree(
            name=name,
            path=path,
            is_file=is_file,
            manifest_name=manifest_name,
            files=dict(sorted(self._files.items())),
            dirs=frozenset(self._dirs),
            size_bytes=sum(unique.values()),
            signature=(files, tuple(sorted(self._dirs)), tuple(self._problems)),
            problems=tuple(self._problems),
        )


def _problem_tree(name: str, problem: str, detail: str = "") -> ModelTree:
    return ModelTree(
        name=name,
        path=None,
        is_file=False,
        manifest_name=MANIFEST_NAME,
        files={},
        dirs=frozenset(),
        size_bytes=0,
        signature=(problem, detail),
        problems=(problem,),
    )


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _posix(relative: str) -> str:
    return relative.replace(os.sep, "/")


def _check_relative(relative: object) -> None:
    if (
        not isinstance(relative, str)
        or not relative
        or "\0" in relative
        or relative.startswith("/")
        or ".." in relative.split("/")
    ):
        raise InvalidArgumentError(
            f"file: {relative!r} is not a relative path inside the model (absolute paths and '..' are refused)"
        )


# ---------------------------------------------------------------- recognition helpers


def _read_manifest(tree: ModelTree) -> tuple[ModelManifest | None, builtins.list[str], builtins.list[str]]:
    path = tree.files.get(tree.manifest_name)
    if path is None:
        return None, [], []
    try:
        parsed = parse_manifest(read_small(path), tree.manifest_name)
    except ValueError as exc:  # ManifestError, or read_small's reason
        message = str(exc) if isinstance(exc, ManifestError) else f"{tree.manifest_name}: {exc}"
        return None, [message], []
    return parsed.manifest, [], builtins.list(parsed.warnings)


def _manifest_warnings(tree: ModelTree, manifest: ModelManifest | None) -> builtins.list[str]:
    if manifest is None:
        return []
    source = tree.manifest_name
    found: builtins.list[str] = []
    # A manifest may not rename a model: lookups go by folder or file name.
    if manifest.name is not None and manifest.name != tree.name:
        found.append(f"{source}: name {manifest.name!r} does not match the model name {tree.name!r}")
    if manifest.task is Task.UPSCALE and manifest.scale is None:
        found.append(f"{source}: task 'upscale' needs scale (the enlargement factor)")
    return found


def _detect_format(tree: ModelTree, manifest: ModelManifest | None) -> tuple[ModelFormat | None, str | None]:
    declared = manifest.format if manifest else None
    if tree.is_file:
        problem = _torchscript_file(tree, [name for name in tree.files if name != tree.manifest_name])
        if problem is None and declared not in (None, ModelFormat.TORCHSCRIPT):
            return None, f"{tree.manifest_name}: format {declared.value!r} but the model is a TorchScript file"
        return (ModelFormat.TORCHSCRIPT, None) if problem is None else (None, problem)
    if declared is not None:
        problem = _MARKERS[declared](tree)
        if problem is None:
            return declared, None
        return None, f"{tree.manifest_name}: format {declared.value!r} does not match the files ({problem})"
    for model_format in (ModelFormat.DIFFUSERS, ModelFormat.TRANSFORMERS):
        if _MARKERS[model_format](tree) is None:
            return model_format, None
    problem = _torchscript_folder(tree)
    return (ModelFormat.TORCHSCRIPT, None) if problem is None else (None, problem)


def _diffusers_marker(tree: ModelTree) -> str | None:
    return None if "model_index.json" in tree.files else "model folder: no model_index.json"


def _transformers_marker(tree: ModelTree) -> str | None:
    return None if "config.json" in tree.files else "model folder: no config.json"


def _torchscript_candidates(tree: ModelTree) -> builtins.list[str]:
    return [name for name in tree.files if "/" not in name and name.endswith(TORCHSCRIPT_SUFFIXES)]


def _torchscript_folder(tree: ModelTree) -> str | None:
    if not _torchscript_candidates(tree):
        return "model folder: no model_index.json, config.json or TorchScript file (.pt, .pth, .torchscript) at its top"
    return _torchscript_file(tree, _torchscript_candidates(tree))


def _torchscript_file(tree: ModelTree, candidates: builtins.list[str]) -> str | None:
    if len(candidates) != 1:
        listed = ", ".join(candidates) or "none"
        return f"model folder: needs exactly one TorchScript file (.pt, .pth, .torchscript), found: {listed}"
    problem = torchscript_problem(tree.files[candidates[0]])
    return None if problem is None else f"{candidates[0]}: {problem}"


_MARKERS = {
    ModelFormat.DIFFUSERS: _diffusers_marker,
    ModelFormat.TRANSFORMERS: _transformers_marker,
    ModelFormat.TORCHSCRIPT: _torchscript_folder,
}


def _tasks(
    model_format: ModelFormat, manifest: ModelManifest | None, source: str
) -> tuple[frozenset[Task], str | None]:
    task = manifest.task if manifest else None
    if task is None:
        return _DEFAULT_TASKS[model_format], None
    if task not in _ALLOWED_TASKS[model_format]:
        allowed = ", ".join(sorted(repr(t.value) for t in _ALLOWED_TASKS[model_format]))
        return (
            frozenset(),
            f"{source}: task {task.value!r} does not apply to a {model_format.value} model (allowed: {allowed})",
        )
    # A text-to-image pipeline also runs image-to-image and inpainting.
    return (DIFFUSION_TASKS if task is Task.TEXT_TO_IMAGE else frozenset({task})), None


def _weights(tree: ModelTree, model_format: ModelFormat | None) -> tuple[Path, ...]:
    if model_format is ModelFormat.TORCHSCRIPT:
        names = [n for n in tree.files if n != tree.manifest_name] if tree.is_file else _torchscript_candidates(tree)
        return tuple(tree.files[name] for name in names)
    return weight_files(tree)

