"""Parsing of model manifests (``manifest.json`` / ``<file>.manifest.json``).

A manifest with a wrong type makes the model unusable (its parsed value would
be a guess), so it raises :class:`ManifestError`. Unknown keys only produce
warnings: the manifest still means something, but a typo such as ``"taks"``
must not pass silently, so validation reports them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import TypeVar

from ..model_entry import ModelFormat, ModelManifest, Task, TensorSpec

MANIFEST_DTYPES = ("float16", "bfloat16", "float32")
# Element types a TorchScript input or output may declare (numpy/torch names).
TENSOR_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SPEC_KEYS = ("name", "dtype", "shape")

_T = TypeVar("_T")
_E = TypeVar("_E", Task, ModelFormat)


class ManifestError(ValueError):
    """The manifest cannot be used; ``field`` names the offending key."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        label = f"{source}: {field}" if field else f"{source}:"
        # "[2].dtype ..." continues the field name: "inputs[2].dtype ...".
        separator = "" if reason.startswith("[") else " "
        super().__init__(f"{label}{separator}{reason}")
        self.source = source
        self.field = field


@dataclass(frozen=True)
class ParsedManifest:
    manifest: ModelManifest
    # Sentences about keys the manifest should not have.
    warnings: tuple[str, ...]


def parse_manifest(raw: bytes, source: str) -> ParsedManifest:
    """Parse manifest bytes; ``source`` is the manifest's name for messages."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(source, "", f"is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ManifestError(source, "", "is not a JSON object")
    fields = _Fields(source, document)
    manifest = ModelManifest(
        name=fields.optional("name", _string),
        task=fields.optional("task", _enum(Task)),
        format=fields.optional("format", _enum(ModelFormat)),
        dtype=fields.optional("dtype", _choice(MANIFEST_DTYPES)),
        files=MappingProxyType(fields.optional("files", _files) or {}),
        inputs=fields.optional("inputs", _specs) or (),
        outputs=fields.optional("outputs", _specs) or (),
        batch_dim=fields.optional("batch_dim", _at_least(0)),
        scale=fields.optional("scale", _at_least(1)),
        dimensions=fields.optional("dimensions", _dimensions) or (),
    )
    return ParsedManifest(manifest=manifest, warnings=fields.unknown_keys())


class _Invalid(ValueError):
    """A value's reason for rejection, without the field name (added by _Fields)."""


class _Fields:
    def __init__(self, source: str, document: dict[str, object]) -> None:
        self._source = source
        self._document = document
        self._seen: set[str] = set()

    def optional(self, key: str, convert: Callable[[object], _T]) -> _T | None:
        self._seen.add(key)
        value = self._document.get(key)
        if value is None:
            return None
        try:
            return convert(value)
        except _Invalid as exc:
            raise ManifestError(self._source, key, str(exc)) from None

    def unknown_keys(self) -> tuple[str, ...]:
        extra = sorted(set(self._document) - self._seen)
        found = [f"{self._source}: unknown key {key!r}" for key in extra]
        for key in ("inputs", "outputs"):
            found.extend(_spec_unknown_keys(self._source, key, self._document.get(key)))
        return tuple(found)


def _spec_unknown_keys(source: str, key: str, items: object) -> list[str]:
    found: list[str] = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        extra = sorted(set(item) - set(_SPEC_KEYS)) if isinstance(item, dict) else []
        found.extend(f"{source}: {key}[{index}] has unknown key {name!r}" for name in extra)
    return found


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string (got {_kind(value)})")
    return value


def _enum(cls: type[_E]) -> Callable[[object], _E]:
    allowed = [member.value for member in cls]

    def convert(value: object) -> _E:
        if not isinstance(value, str) or value not in allowed:
            raise _Invalid(f"must be one of {', '.join(map(repr, allowed))} (got {value!r})")
        return cls(value)

    return convert


def _choice(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise _Invalid(f"must be one of {', '.join(map(repr, allowed))} (got {value!r})")
        return value

    return convert


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(low: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if not _is_int(value) or value < low:  # type: ignore[operator]
            raise _Invalid(f"must be an integer >= {low} (got {value!r})")
        return value  # type: ignore[return-value]

    return convert


def _dimensions(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(d) and d >= 1 for d in value):
        raise _Invalid("must be a non-empty list of integers >= 1 (vector lengths the model may be truncated to)")
    return tuple(sorted(set(value)))  # type: ignore[arg-type]


def _files(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be an object of relative path to sha256 (got {_kind(value)})")
    files: dict[str, str] = {}
    for path, digest in value.items():
        _check_relative(path)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _Invalid(f"entry {path!r} must be a 64-digit hex sha256")
        files[path] = digest.lower()
    return files


def _check_relative(path: str) -> None:
    # Paths are checked again against the filesystem before any file is
    # opened; refusing them here keeps a hostile manifest from loading at all.
    pure = PurePosixPath(path)
    if (
        not path
        or "\0" in path
        or "\\" in path
        or pure.is_absolute()
        or any(part in ("..", ".") for part in path.split("/"))
    ):
        raise _Invalid(f"entry {path!r} is not a relative path inside the model")


def _specs(value: object) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of {{name, dtype, shape}} (got {_kind(value)})")
    return tuple(_spec(index, item) for index, item in enumerate(value))


def _spec(index: int, item: object) -> TensorSpec:
    if not isinstance(item, dict):
        raise _Invalid(f"[{index}] must be an object {{name, dtype, shape}}")
    name, dtype, shape = (item.get(key) for key in _SPEC_KEYS)
    if not isinstance(name, str) or not name:
        raise _Invalid(f"[{index}].name must be a non-empty string")
    if dtype not in TENSOR_DTYPES:
        raise _Invalid(f"[{index}].dtype must be one of {', '.join(TENSOR_DTYPES)} (got {dtype!r})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= -1 for d in shape):
        raise _Invalid(f"[{index}].shape must be a list of integers >= -1 (-1: any size)")
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
