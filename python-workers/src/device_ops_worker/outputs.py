"""Files a job writes under OUTPUT_DIRECTORY, and reading them back.

Every path here comes from a caller (job id, file name, source_output), so
each one is checked to stay inside the output root, symlinks included.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from .errors import InvalidArgumentError, NotFoundError
from .imaging import decode_image

logger = logging.getLogger(__name__)

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILENAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.png$")
SOFTWARE = "device-operations"
PNG_MEDIA_TYPE = "image/png"
_TEMP_PREFIX = ".partial-"


@dataclass(frozen=True)
class OutputFile:
    # Relative to OUTPUT_DIRECTORY: "<job id>/<file>".
    path: str
    media_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int


def check_job_id(job_id: str) -> None:
    """Job ids become folder names, so only a safe alphabet is accepted."""
    if not JOB_ID_PATTERN.fullmatch(job_id) or ".." in job_id:
        raise InvalidArgumentError(
            "job_id: must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def job_directory(output_root: Path, job_id: str) -> Path:
    """The job's folder under output_root, created if missing."""
    check_job_id(job_id)
    root = _resolved_root(output_root)
    directory = root / job_id
    directory.mkdir(exist_ok=True)
    # A pre-existing symlink named like the job would pass mkdir(exist_ok).
    if directory.resolve().parent != root:
        raise InvalidArgumentError("job_id: resolves outside the output directory")
    return directory


def has_job_outputs(output_root: Path, job_id: str) -> bool:
    """Whether a job of this id left outputs: its folder holds anything (a
    partial write included), or something other than a folder (a file, a
    symlink) stands in its place. An empty folder holds nothing to overwrite."""
    check_job_id(job_id)
    path = Path(os.path.realpath(output_root)) / job_id
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        return True
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:  # removed since the look above
        return False


def remove_job_directory(output_root: Path, job_id: str) -> None:
    """Delete a job's folder and everything in it (a cancelled job's partial
    outputs). A symlink in its place was not made by us and is left alone."""
    check_job_id(job_id)
    directory = Path(os.path.realpath(output_root)) / job_id
    if directory.is_symlink() or not directory.is_dir():
        return
    shutil.rmtree(directory, ignore_errors=True)


def write_png(
    output_root: Path,
    job_id: str,
    filename: str,
    image: Image.Image,
    metadata: Mapping[str, object],
) -> OutputFile:
    """Write `image` as <job_id>/<filename> with `metadata` as JSON in a `parameters` text chunk."""
    if not FILENAME_PATTERN.fullmatch(filename) or ".." in filename:
        raise InvalidArgumentError("filename: must be a plain name of letters, digits, '.', '_' or '-' ending in .png")
    directory = job_directory(output_root, job_id)
    data = _encode_png(image, metadata)
    _write_atomically(directory / filename, data)
    return OutputFile(
        path=f"{job_id}/{filename}",
        media_type=PNG_MEDIA_TYPE,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=image.width,
        height=image.height,
    )


def read_output_image(output_root: Path, relative: str, max_pixels: int) -> Image.Image:
    """Open an earlier job's output ("<job_id>/<file>") for postprocessing."""
    path = _resolve_output(output_root, relative)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"source_output: no output named '{relative}'") from None
    except IsADirectoryError:
        raise InvalidArgumentError("source_output: names a folder, not an output file") from None
    return decode_image(data, "source_output", max_pixels)


def _resolve_output(output_root: Path, relative: str) -> Path:
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        raise InvalidArgumentError("source_output: must be a path relative to the output directory")
    root = _resolved_root(output_root)
    # realpath follows every symlink on the way, so a link planted inside the
    # root that points elsewhere is caught here too.
    real = Path(os.path.realpath(root / relative))
    if real == root or not real.is_relative_to(root):
        raise InvalidArgumentError("source_output: must name a file inside the output directory")
    if not real.exists():
        raise NotFoundError(f"source_output: no output named '{relative}'")
    return real


def _resolved_root(output_root: Path) -> Path:
    output_root.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(output_root))


def _encode_png(image: Image.Image, metadata: Mapping[str, object]) -> bytes:
    info = PngImagePlugin.PngInfo()
    # ensure_ascii keeps the chunk a Latin-1 tEXt chunk that every reader understands.
    info.add_text("parameters", json.dumps(dict(metadata), sort_keys=True, ensure_ascii=True, default=str))
    info.add_text("Software", SOFTWARE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _write_atomically(target: Path, data: bytes) -> None:
    """Readers see either no file or the whole file, even if the worker dies mid-write."""
    fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
