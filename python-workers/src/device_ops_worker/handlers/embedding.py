"""Sentence embeddings from a transformers encoder (sentence-transformers folder layout)."""

from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ..errors import FailedPreconditionError
from ..types import ModelEntry
from .base import EmbeddingModel
from .loader import release_cached_memory, weight_file_preferences

logger = logging.getLogger(__name__)

# Texts per forward pass: bounds activation memory whatever batch arrives.
CHUNK_SIZE = 64
MAX_SEQUENCE_LENGTH = 512
_POOLING_FOLDER = "1_Pooling"
_POOLING_MODULE_TYPE = "sentence_transformers.models.Pooling"


class Pooling(enum.Enum):
    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


class TransformerEmbeddingModel(EmbeddingModel):
    """Not thread-safe: the fast tokenizer's padding and truncation settings are
    per instance and set on every call, so calls must be serialised."""

    def __init__(
        self,
        entry: ModelEntry,
        device: torch.device,
        dtype: torch.dtype,
        *,
        tokenizer: Any,
        model: torch.nn.Module,
        pooling: Pooling,
        max_length: int,
    ) -> None:
        super().__init__(entry, device, dtype)
        self._tokenizer = tokenizer
        self._model: torch.nn.Module | None = model
        self.pooling = pooling
        self.max_length = max_length

    @classmethod
    def load(
        cls, entry: ModelEntry, device: torch.device, dtype: torch.dtype, allow_pickle: bool
    ) -> TransformerEmbeddingModel:
        folder = entry.path
        pooling = read_pooling(folder)
        # The loading bar would interleave with the worker's JSON logs.
        transformers_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(
            str(folder),
            dtype=dtype,
            local_files_only=True,
            use_safetensors=weight_file_preferences(allow_pickle),
            weights_only=True,
        )
        model.to(device).eval()
        max_length = read_max_length(folder, tokenizer, model.config)
        return cls(entry, device, dtype, tokenizer=tokenizer, model=model, pooling=pooling, max_length=max_length)

    @property
    def dimension(self) -> int:
        return int(self._loaded_model().config.hidden_size)

    def modules(self) -> list[torch.nn.Module]:
        return [self._model] if self._model is not None else []

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        release_cached_memory(self.device)

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        result = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Similar lengths share a chunk so little compute is spent on padding;
        # rows are written back to their input positions.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        for start in range(0, len(order), CHUNK_SIZE):
            indices = order[start : start + CHUNK_SIZE]
            result[indices] = self._embed_chunk([texts[i] for i in indices], normalize)
        return result

    def _embed_chunk(self, texts: list[str], normalize: bool) -> np.ndarray:
        model = self._loaded_model()
        encoded = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = model(**encoded)[0]
            vectors = pool(hidden.float(), encoded["attention_mask"], self.pooling)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            return vectors.cpu().numpy()

    def _loaded_model(self) -> torch.nn.Module:
        if self._model is None:
            raise FailedPreconditionError(f"model '{self.entry.name}': unloaded")
        return self._model


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[batch, tokens, dim] → [batch, dim], ignoring padding."""
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling is Pooling.MAX:
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def read_pooling(folder: Path) -> Pooling:
    """Pooling from the sentence-transformers Pooling module's config; mean if there is none."""
    config_path = _pooling_folder(folder) / "config.json"
    if not config_path.is_file():
        return Pooling.MEAN
    config = json.loads(config_path.read_text(encoding="utf-8"))
    flags = {
        Pooling.CLS: config.get("pooling_mode_cls_token", False),
        Pooling.MEAN: config.get("pooling_mode_mean_tokens", False),
        Pooling.MAX: config.get("pooling_mode_max_tokens", False),
    }
    chosen = [mode for mode, enabled in flags.items() if enabled]
    others = [key for key, value in config.items() if key.startswith("pooling_mode_") and value]
    if len(chosen) != 1 or len(others) != 1:
        raise FailedPreconditionError(
            f"{config_path.parent.name}/config.json: exactly one of cls, mean or max pooling is supported, got {others}"
        )
    return chosen[0]


def _pooling_folder(folder: Path) -> Path:
    modules_path = folder / "modules.json"
    if modules_path.is_file():
        for module in json.loads(modules_path.read_text(encoding="utf-8")):
            if module.get("type") == _POOLING_MODULE_TYPE and module.get("path"):
                candidate = (folder / module["path"]).resolve()
                # modules.json is model data; never let it point outside the model.
                if candidate.is_relative_to(folder.resolve()):
                    return candidate
    return folder / _POOLING_FOLDER


def read_max_length(folder: Path, tokenizer: Any, config: Any) -> int:
    """Tokens per text: sentence-transformers' max_seq_length, else the
    tokenizer's limit, never more than the position embeddings allow."""
    limit = min(MAX_SEQUENCE_LENGTH, int(getattr(config, "max_position_embeddings", MAX_SEQUENCE_LENGTH)))
    settings_path = folder / "sentence_bert_config.json"
    if settings_path.is_file():
        configured = json.loads(settings_path.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(configured, int) and configured > 0:
            return min(configured, limit)
    # model_max_length is a huge sentinel when the tokenizer has no limit.
    return min(int(getattr(tokenizer, "model_max_length", limit)), limit)
