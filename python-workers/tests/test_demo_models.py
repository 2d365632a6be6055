"""The demo models: built offline, reproducibly, once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from device_ops_worker_tools.demo_models import (
    DEMO_MODELS,
    build_clip_tokenizer,
    is_valid_model_folder,
    main,
    prepare_demo_model,
    prepare_demo_models,
)

NAMES = ["tiny-sd", "minilm", "tiny-upscaler", "tiny-mlp"]
MANIFEST_KEYS = {"name", "task", "format", "dtype", "files", "inputs", "outputs", "batch_dim", "scale"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    assert prepare_demo_models(directory) == NAMES
    return directory


def snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}


def test_second_preparation_changes_nothing(demo_dir: Path) -> None:
    before = snapshot(demo_dir)
    assert prepare_demo_models(demo_dir) == NAMES
    assert [prepare_demo_model(demo_dir, name) for name in NAMES] == [False] * 4
    assert snapshot(demo_dir) == before
    assert sorted(p.name for p in demo_dir.iterdir()) == sorted(NAMES)  # no staging folders left


def test_manifests_list_every_file_with_its_sha256(demo_dir: Path) -> None:
    for name in NAMES:
        folder = demo_dir / name
        manifest = json.loads((folder / "manifest.json").read_text())
        assert set(manifest) == MANIFEST_KEYS
        assert manifest["name"] == name
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
        assert set(manifest["files"]) == on_disk
        for relative, digest in manifest["files"].items():
            assert hashlib.sha256((folder / relative).read_bytes()).hexdigest() == digest


def test_manifest_contents(demo_dir: Path) -> None:
    manifests = {name: json.loads((demo_dir / name / "manifest.json").read_text()) for name in NAMES}
    assert {name: (m["task"], m["format"], m["dtype"]) for name, m in manifests.items()} == {
        "tiny-sd": ("text-to-image", "diffusers", "float32"),
        "minilm": ("text-embedding", "transformers", "float32"),
        "tiny-upscaler": ("upscale", "torchscript", "float32"),
        "tiny-mlp": ("tensor", "torchscript", "float32"),
    }
    mlp = manifests["tiny-mlp"]
    assert mlp["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    assert mlp["outputs"] == [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]
    assert mlp["batch_dim"] == 0
    assert manifests["tiny-upscaler"]["scale"] == 2
    assert "model.safetensors" in manifests["minilm"]["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in manifests["tiny-sd"]["files"]
    assert not any(f.endswith((".bin", ".pkl")) for m in manifests.values() for f in m["files"])


def test_a_damaged_model_is_rebuilt_and_force_rebuilds_identically(demo_dir: Path) -> None:
    weights = demo_dir / "tiny-mlp" / "model.pt"
    original = weights.read_bytes()
    weights.write_bytes(b"damaged")
    assert not is_valid_model_folder(demo_dir / "tiny-mlp", "tiny-mlp")
    assert prepare_demo_model(demo_dir, "tiny-mlp") is True
    assert weights.read_bytes() == original  # fixed seeds: same bytes every time
    upscaler = (demo_dir / "tiny-upscaler" / "model.pt").read_bytes()
    assert prepare_demo_model(demo_dir, "tiny-upscaler", force=True) is True
    assert (demo_dir / "tiny-upscaler" / "model.pt").read_bytes() == upscaler


def test_unknown_demo_model_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no demo model named"):
        prepare_demo_model(tmp_path, "huge-llm")


def test_cli_prints_one_line_per_model(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model-directory", str(demo_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == NAMES
    assert all("already present" in line for line in lines)


def test_the_generated_tokenizer_handles_any_prompt() -> None:
    tokenizer = build_clip_tokenizer()
    vocabulary = len(tokenizer)
    assert 512 < vocabulary < 1200
    for prompt in [
        "a photo of a cat",
        "Ünïcödé façade — 東京の夜景 🐱🚀, (masterpiece:1.2) [[weird]] {tokens} 12345",
        "",
        "word " * 200,
    ]:
        encoded = tokenizer(prompt, padding="max_length", truncation=True, max_length=77).input_ids
        assert len(encoded) == 77
        assert all(0 <= token < vocabulary for token in encoded)
    # Learned merges: corpus words take fewer tokens than they have letters.
    assert len(tokenizer("photograph landscape").input_ids) < 2 + len("photographlandscape") // 2
    assert [m.name for m in DEMO_MODELS] == NAMES
