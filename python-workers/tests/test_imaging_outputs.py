"""Image decoding, the PIL postprocessing operations, and the output files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device_ops_worker import outputs
from device_ops_worker.errors import InvalidArgumentError, NotFoundError
from device_ops_worker.imaging import decode_image, enhance, lanczos_upscale
from device_ops_worker.outputs import job_directory, read_output_image, write_png

LIMIT = 4_194_304


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample(width: int = 32, height: int = 24, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 255, (height, width, channels), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width × height whose pixels never follow: decoding it
    would need the pixels, so refusing it proves the check reads the header only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_png_and_jpeg_decode_to_rgb(fmt: str) -> None:
    image = decode_image(encode(sample(), fmt), "init_image", LIMIT)
    assert image.size == (32, 24) and image.mode == "RGB"


def test_alpha_png_becomes_rgb_and_masks_become_grayscale() -> None:
    data = encode(sample(mode="RGBA"), "PNG")
    assert decode_image(data, "init_image", LIMIT).mode == "RGB"
    assert decode_image(data, "mask_image", LIMIT, mode="L").mode == "L"


def test_jpeg_orientation_tag_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(sample(32, 24), "JPEG", exif=exif.tobytes())
    assert decode_image(data, "init_image", LIMIT).size == (24, 32)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", encode(sample(), "GIF"), encode(sample(), "BMP")],
    ids=["empty", "garbage", "gif", "bmp"],
)
def test_anything_but_png_or_jpeg_is_refused_naming_the_field(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^init_image: (not a PNG or JPEG image|empty image)$"):
        decode_image(data, "init_image", LIMIT)


def test_truncated_png_is_refused() -> None:
    data = encode(sample(256, 256), "PNG")
    with pytest.raises(InvalidArgumentError, match=r"^mask_image: image data is truncated or corrupt$"):
        decode_image(data[: len(data) // 2], "mask_image", LIMIT, mode="L")


def test_too_many_pixels_are_refused_before_decoding() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^init_image: 5000x5000 exceeds the 4194304-pixel limit$"):
        decode_image(png_header_only(5000, 5000), "init_image", LIMIT)


def test_decompression_bomb_beyond_pils_own_guard_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^init_image: .*pixel limit"):
        decode_image(png_header_only(100_000, 100_000), "init_image", LIMIT)


def test_pixel_limit_is_per_call() -> None:
    pil_global = Image.MAX_IMAGE_PIXELS
    data = encode(sample(100, 100), "PNG")
    with pytest.raises(InvalidArgumentError, match="100x100 exceeds the 9999-pixel limit"):
        decode_image(data, "init_image", 9_999)
    assert decode_image(data, "init_image", 10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == pil_global


# ---------------------------------------------------------------- postprocessing


@pytest.mark.parametrize("scale", [2, 4])
def test_lanczos_upscale_enlarges(scale: int) -> None:
    assert lanczos_upscale(sample(10, 6), scale).size == (10 * scale, 6 * scale)


@pytest.mark.parametrize("scale", [0, 1, 3, 8])
def test_lanczos_upscale_only_by_two_or_four(scale: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^scale: must be 2 or 4$"):
        lanczos_upscale(sample(), scale)


@pytest.mark.parametrize("name", ["contrast", "color", "sharpness", "exposure"])
def test_each_adjustment_changes_the_image_and_one_leaves_it(name: str) -> None:
    image = sample()
    assert np.array_equal(np.asarray(enhance(image, {name: 1.0})), np.asarray(image))
    assert not np.array_equal(np.asarray(enhance(image, {name: 1.8})), np.asarray(image))


def test_adjustments_apply_in_a_fixed_order() -> None:
    image = sample()
    one = enhance(image, {"contrast": 1.5, "exposure": 0.7, "color": 2.0})
    other = enhance(image, {"color": 2.0, "exposure": 0.7, "contrast": 1.5})
    assert np.array_equal(np.asarray(one), np.asarray(other))


@pytest.mark.parametrize("factor", [-0.1, 4.01, float("nan"), float("inf")])
def test_adjustment_factors_outside_zero_to_four_are_refused(factor: float) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^adjustments\.contrast: factor must be between 0 and 4$"):
        enhance(sample(), {"contrast": factor})


def test_unknown_and_missing_adjustments_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^adjustments\.blur: unknown adjustment"):
        enhance(sample(), {"contrast": 1.2, "blur": 1.0})
    expected = r"^adjustments: at least one of contrast, color, sharpness, exposure$"
    with pytest.raises(InvalidArgumentError, match=expected):
        enhance(sample(), {})


def test_edge_factors_are_accepted() -> None:
    assert enhance(sample(), {"exposure": 0.0, "contrast": 4.0}).size == (32, 24)


# ---------------------------------------------------------------- outputs


def test_png_is_written_with_metadata_and_a_matching_digest(tmp_path: Path) -> None:
    metadata = {"prompt": "a café at night ☕", "seed": 42, "steps": 4, "model": "tiny-sd"}
    image = sample(40, 30)
    written = write_png(tmp_path, "job-1", "image-0.png", image, metadata)
    path = tmp_path / "job-1" / "image-0.png"
    data = path.read_bytes()
    assert written.path == "job-1/image-0.png"
    assert written.media_type == "image/png"
    assert (written.width, written.height) == (40, 30)
    assert written.size_bytes == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(path) as reopened:
        assert json.loads(reopened.text["parameters"]) == metadata
        assert reopened.text["Software"] == "device-operations"
        assert np.array_equal(np.asarray(reopened.convert("RGB")), np.asarray(image))
    assert b"tEXtparameters" in data  # plain tEXt: ASCII JSON, readable everywhere
    assert os.listdir(tmp_path / "job-1") == ["image-0.png"]


def test_a_failed_write_leaves_neither_image_nor_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(source: str, target: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_png(tmp_path, "job-2", "image-0.png", sample(), {})
    assert os.listdir(tmp_path / "job-2") == []


@pytest.mark.parametrize("job_id", ["", "..", "../escape", "a/b", "a\\b", ".hidden", "-x", "a..b", "x" * 129, "ünï"])
def test_unsafe_job_ids_are_refused(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^job_id: "):
        job_directory(tmp_path / "out", job_id)


def test_job_directory_is_created_inside_the_root(tmp_path: Path) -> None:
    directory = job_directory(tmp_path / "out", "Job_1.a-b")
    assert directory.is_dir() and directory.parent == (tmp_path / "out").resolve()


def test_a_job_directory_symlinked_elsewhere_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "job-3").symlink_to(outside)
    with pytest.raises(InvalidArgumentError, match=r"^job_id: resolves outside"):
        write_png(root, "job-3", "image-0.png", sample(), {})
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("filename", ["../x.png", "a/b.png", "image.jpg", ".png", "image-0.PNG.exe", "x\x00.png"])
def test_unsafe_filenames_are_refused(tmp_path: Path, filename: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^filename: "):
        write_png(tmp_path, "job-4", filename, sample(), {})


def test_outputs_read_back_for_postprocessing(tmp_path: Path) -> None:
    write_png(tmp_path, "job-5", "image-0.png", sample(40, 30), {"seed": 1})
    image = read_output_image(tmp_path, "job-5/image-0.png", LIMIT)
    assert image.size == (40, 30) and image.mode == "RGB"
    with pytest.raises(InvalidArgumentError, match=r"^source_output: 40x30 exceeds the 100-pixel limit$"):
        read_output_image(tmp_path, "job-5/image-0.png", 100)


@pytest.mark.parametrize(
    "relative", ["../secret.png", "/etc/passwd", "job-6/../../secret.png", "", ".", "job-6\\..\\..\\secret.png"]
)
def test_source_outputs_outside_the_root_are_refused(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "out"
    write_png(root, "job-6", "image-0.png", sample(), {})
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    with pytest.raises(InvalidArgumentError, match=r"^source_output: "):
        read_output_image(root, relative, LIMIT)


def test_symlinks_inside_the_root_cannot_reach_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "secret.png")
    write_png(root, "job-7", "image-0.png", sample(), {})
    (root / "job-7" / "link.png").symlink_to(outside / "secret.png")
    (root / "linked-job").symlink_to(outside)
    for relative in ("job-7/link.png", "linked-job/secret.png"):
        with pytest.raises(InvalidArgumentError, match=r"^source_output: must name a file inside"):
            read_output_image(root, relative, LIMIT)


def test_missing_source_output_is_not_found(tmp_path: Path) -> None:
    write_png(tmp_path, "job-8", "image-0.png", sample(), {})
    with pytest.raises(NotFoundError, match=r"^source_output: no output named 'job-8/image-9.png'$"):
        read_output_image(tmp_path, "job-8/image-9.png", LIMIT)
    with pytest.raises(InvalidArgumentError, match=r"^source_output: names a folder"):
        read_output_image(tmp_path, "job-8", LIMIT)


def test_check_helpers_validate_without_side_effects(tmp_path: Path) -> None:
    from device_ops_worker.imaging import check_adjustments, check_scale
    from device_ops_worker.outputs import check_job_id

    check_scale(4)
    check_adjustments({"color": 0.5})
    check_job_id("job-9")
    with pytest.raises(InvalidArgumentError, match=r"^job_id: "):
        check_job_id("../x")
    assert list(tmp_path.iterdir()) == []


def test_removing_a_job_directory_deletes_its_outputs_only(tmp_path: Path) -> None:
    from device_ops_worker.outputs import remove_job_directory

    root, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    write_png(root, "job-10", "image-0.png", sample(), {})
    write_png(root, "job-11", "image-0.png", sample(), {})
    (root / "job-12").symlink_to(outside)
    remove_job_directory(root, "job-10")
    remove_job_directory(root, "job-12")
    remove_job_directory(root, "never-existed")
    assert sorted(p.name for p in root.iterdir()) == ["job-11", "job-12"]
    assert (outside / "keep.txt").exists()
    with pytest.raises(InvalidArgumentError, match=r"^job_id: "):
        remove_job_directory(root, "..")


def test_a_job_has_outputs_when_anything_is_in_its_folder_or_in_its_place(tmp_path: Path) -> None:
    from device_ops_worker.outputs import has_job_outputs

    root, outside = tmp_path / "out", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_png(root, "written", "image-0.png", sample(), {})
    (root / "empty").mkdir()
    (root / "partial").mkdir()
    (root / "partial" / ".partial-abc.tmp").write_bytes(b"half")
    (root / "a-file").write_bytes(b"not a folder")
    (root / "a-link").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "gone")
    names = ("written", "empty", "partial", "a-file", "a-link", "dangling", "none")
    held = {name: has_job_outputs(root, name) for name in names}
    assert held == {
        "written": True,
        "empty": False,
        "partial": True,
        "a-file": True,
        "a-link": True,
        "dangling": True,
        "none": False,
    }
    with pytest.raises(InvalidArgumentError, match=r"^job_id: "):
        has_job_outputs(root, "../out")
