"""The tensor storages of a torch.save / torch.jit.save archive, read from its
pickles with pickletools, which only parses: nothing is executed."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

# Legacy storage class names torch writes into pickles: element size, floating?
_PICKLE_STORAGES: dict[str, tuple[int, bool]] = {
    "DoubleStorage": (8, True), "FloatStorage": (4, True), "HalfStorage": (2, True),
    "BFloat16Storage": (2, True), "LongStorage": (8, False), "IntStorage": (4, False),
    "ShortStorage": (2, False), "CharStorage": (1, False), "ByteStorage": (1, False),
    "BoolStorage": (1, False), "ComplexFloatStorage": (8, False), "ComplexDoubleStorage": (16, False),
}
_STRING_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING", "STRING"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}


def archive_storages(path: Path) -> list[tuple[int, int, bool]]:
    """(numel, element size, floating) of every storage in the archive's
    data.pkl and constants.pkl. Raises ValueError when it names none."""
    storages: dict[tuple[str, str], tuple[int, int, bool]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(("data.pkl", "constants.pkl")):
                for key, storage in _pickled_storages(archive.read(name)).items():
                    storages[(name, key)] = storage
    if not storages:
        raise ValueError("no storages found")
    return list(storages.values())


def _pickled_storages(data: bytes) -> dict[str, tuple[int, int, bool]]:
    """storage key → (numel, element size, floating) from persistent ids
    ('storage', torch.<Kind>Storage, key, location, numel)."""
    values = _pickle_scalars(data)
    found: dict[str, tuple[int, int, bool]] = {}
    for index in range(len(values) - 4):
        marker, kind, key, _location, numel = values[index : index + 5]
        if marker != "storage" or not isinstance(kind, str) or not isinstance(numel, int):
            continue
        storage = _PICKLE_STORAGES.get(kind.rsplit(".", 1)[-1])
        if storage is not None and isinstance(key, str):
            found[key] = (numel, *storage)
    return found


def _pickle_scalars(data: bytes) -> list[object]:
    """The values pushed by a pickle, in order, with memo references resolved;
    anything that is not a string, an int or a global is None."""
    values: list[object] = []
    memo: dict[int, object] = {}
    last: object = None
    for opcode, arg, _position in pickletools.genops(data):
        name = opcode.name
        if name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = last
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        if name in _STRING_OPS or name in _INT_OPS:
            last = arg
        elif name == "GLOBAL":
            last = str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL" and len(values) >= 2:
            last = f"{values.pop(-2)}.{values.pop()}"
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(int(arg))
        else:
            last = None
        values.append(last)
    return values
