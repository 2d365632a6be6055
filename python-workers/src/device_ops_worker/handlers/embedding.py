"""Sentence embeddings from a transformers encoder (sentence-transformers folder layout)."""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ..errors import FailedPreconditionError, InvalidArgumentError
from ..model_entry import ModelEntry
from .base import EmbeddingModel, LoadOptions
from .cuda_graphs import GraphedForward
from .torch_support import release_cached_memory, weight_file_preferences

logger = logging.getLogger(__name__)

# Tokens (rows × padded length) per forward pass: bounds activation memory
# whatever batch arrives. On a GPU a pass is launch-bound up to hundreds of
# rows, so the budget is large (512 texts of 128 tokens); on the CPU larger
# passes gain nothing and only cost memory.
TOKENS_PER_PASS = {"cuda": 65_536}
DEFAULT_TOKENS_PER_PASS = 8_192
# The model inputs a prepared batch carries; tokenizers asking for others
# are tokenized on the device thread by the transformers tokenizer itself.
_PREPARED_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
MAX_SEQUENCE_LENGTH = 512
_POOLING_FOLDER = "1_Pooling"
_POOLING_MODULE_TYPE = "sentence_transformers.models.Pooling"


class Pooling(enum.Enum):
    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of some texts, padded to the longest of them on the
    tokenizer's padding side: model input name → int64 [rows, width]."""

    arrays: dict[str, np.ndarray]
    lengths: np.ndarray  # int64 [rows]: tokens of each text, padding excluded
    pad_left: bool
    pad_values: dict[str, int]  # what padding positions hold, per input

    @property
    def rows(self) -> int:
        return len(self.lengths)


def merge_tokenized(parts: list[TokenizedTexts]) -> TokenizedTexts:
    """One padded batch of several: each part's rows re-padded to the widest."""
    if len(parts) == 1:
        return parts[0]
    width = max(next(iter(part.arrays.values())).shape[1] for part in parts)
    rows = sum(part.rows for part in parts)
    pad_left = parts[0].pad_left
    arrays: dict[str, np.ndarray] = {}
    for name, first in parts[0].arrays.items():
        merged = np.empty((rows, width), dtype=first.dtype)
        offset = 0
        for part in parts:
            block = part.arrays[name]
            n, w = block.shape
            pad = part.pad_values[name]
            if pad_left:
                merged[offset : offset + n, : width - w] = pad
                merged[offset : offset + n, width - w :] = block
            else:
                merged[offset : offset + n, :w] = block
                merged[offset : offset + n, w:] = pad
            offset += n
        arrays[name] = merged
    return TokenizedTexts(
        arrays=arrays,
        lengths=np.concatenate([part.lengths for part in parts]),
        pad_left=pad_left,
        pad_values=parts[0].pad_values,
    )


class TransformerEmbeddingModel(EmbeddingModel):
    """``embed`` is not thread-safe (the transformers tokenizer's padding and
    truncation settings are per instance and set on every call); ``tokenize``
    is: it uses its own copy of the Rust tokenizer, configured once."""

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
        cuda_graphs: bool,
    ) -> None:
        super().__init__(entry, device, dtype)
        self._tokenizer = tokenizer
        self._model: torch.nn.Module | None = model
        self.pooling = pooling
        self.max_length = max_length
        self._encoder = _prepared_encoder(tokenizer, max_length)
        self._input_names = [name for name in tokenizer.model_input_names if name in _PREPARED_INPUTS]
        self._tokens_per_pass = TOKENS_PER_PASS.get(device.type, DEFAULT_TOKENS_PER_PASS)
        self._pad_left = getattr(tokenizer, "padding_side", "right") == "left"
        self.vocabulary_size = _vocabulary_size(model)
        self._pad_values = {
            "input_ids": int(tokenizer.pad_token_id or 0),
            "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "attention_mask": 0,
        }
        self._graphed = (
            GraphedForward(
                self._pooled_forward,
                device,
                self._pad_values,
                pad_left=getattr(tokenizer, "padding_side", "right") == "left",
            )
            if device.type == "cuda" and cuda_graphs
            else None
        )

    @property
    def graphs(self) -> GraphedForward | None:
        """The CUDA graphs of small passes (None on the CPU or when turned off)."""
        return self._graphed

    def _pooled_forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._loaded_model()(**inputs)[0]
        return pool(hidden.float(), inputs["attention_mask"], self.pooling)

    @classmethod
    def load(
        cls, entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions
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
            use_safetensors=weight_file_preferences(options.allow_pickle),
            weights_only=True,
        )
        model.to(device).eval()
        max_length = read_max_length(folder, tokenizer, model.config)
        return cls(
            entry,
            device,
            dtype,
            tokenizer=tokenizer,
            model=model,
            pooling=pooling,
            max_length=max_length,
            cuda_graphs=options.cuda_graphs,
        )

    @property
    def dimension(self) -> int:
        return int(self._loaded_model().config.hidden_size)

    def modules(self) -> list[torch.nn.Module]:
        return [self._model] if self._model is not None else []

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        self._encoder = None
        self._graphed = None
        release_cached_memory(self.device)

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prepared = self.tokenize(texts)
        if prepared is None:
            prepared = self._tokenize_with_transformers(texts)
        vectors = self.embed_prepared([prepared])
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def tokenize(self, texts: list[str]) -> TokenizedTexts | None:
        encoder = self._encoder
        if encoder is None or not texts:
            return None
        # Without character offsets (which embeddings never use): a quarter faster.
        encode = getattr(encoder, "encode_batch_fast", encoder.encode_batch)
        encodings = encode(texts)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        arrays = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            arrays["token_type_ids"] = np.array([encoding.type_ids for encoding in encodings], dtype=np.int64)
        return TokenizedTexts(
            arrays=arrays, lengths=mask.sum(axis=1), pad_left=encoder.padding["direction"] == "left", pad_values=self._pad_values
        )

    def prepare_ids(self, token_ids: list[tuple[int, ...]]) -> TokenizedTexts:
        """Token ids as given (special tokens included), padded like the
        tokenizer pads; never truncated: an entry longer than the model reads,
        or with an id outside its vocabulary, is refused."""
        for index, ids in enumerate(token_ids):
            if len(ids) > self.max_length:
                raise InvalidArgumentError(
                    f"text_embedding.token_ids[{index}]: {len(ids)} tokens exceed model '{self.entry.name}''s "
                    f"maximum length of {self.max_length}"
                )
            highest = max(ids)
            if highest >= self.vocabulary_size:
                raise InvalidArgumentError(
                    f"text_embedding.token_ids[{index}]: token id {highest} is outside model '{self.entry.name}''s "
                    f"vocabulary of {self.vocabulary_size}"
                )
        lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        width = int(lengths.max())
        input_ids = np.full((len(token_ids), width), self._pad_values["input_ids"], dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            columns = slice(width - len(ids), width) if self._pad_left else slice(0, len(ids))
            input_ids[row, columns] = ids
            mask[row, columns] = 1
        arrays = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            types = np.full_like(mask, self._pad_values["token_type_ids"])
            types[mask == 1] = 0
            arrays["token_type_ids"] = types
        return TokenizedTexts(arrays=arrays, lengths=lengths, pad_left=self._pad_left, pad_values=self._pad_values)

    def _tokenize_with_transformers(self, texts: list[str]) -> TokenizedTexts:
        """The slow path for tokenizers without a Rust backend: the
        transformers tokenizer itself (device thread only)."""
        encoded = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        arrays = {name: np.asarray(encoded[name], dtype=np.int64) for name in encoded}
        return TokenizedTexts(
            arrays=arrays,
            lengths=arrays["attention_mask"].sum(axis=1),
            pad_left=getattr(self._tokenizer, "padding_side", "right") == "left",
            pad_values=self._pad_values,
        )

    def embed_prepared(self, prepared: list[TokenizedTexts]) -> np.ndarray:
        """Rows of similar length share a forward pass of at most
        ``tokens_per_pass`` tokens (padding included), so little compute goes
        to padding; vectors come back in input order with one copy to the host."""
        self._loaded_model()
        batch = merge_tokenized(prepared)
        order = np.argsort(batch.lengths, kind="stable")
        width = next(iter(batch.arrays.values())).shape[1]
        pooled: list[torch.Tensor] = []
        with torch.inference_mode():
            for rows in _passes(batch.lengths[order], self._tokens_per_pass):
                indices = order[rows]
                longest = max(int(batch.lengths[indices[-1]]), 1)
                columns = slice(width - longest, width) if batch.pad_left else slice(0, longest)
                inputs = {
                    name: torch.from_numpy(np.ascontiguousarray(array[indices, columns])).to(self.device)
                    for name, array in batch.arrays.items()
                }
                vectors = self._graphed(inputs) if self._graphed is not None else None
                pooled.append(vectors if vectors is not None else self._pooled_forward(inputs))
            vectors = torch.cat(pooled).cpu().numpy()
        result = np.empty_like(vectors)
        result[order] = vectors
        return result

    def _loaded_model(self) -> torch.nn.Module:
        if self._model is None:
            raise FailedPreconditionError(f"model '{self.entry.name}': unloaded")
        return self._model


def _vocabulary_size(model: torch.nn.Module) -> int:
    """Rows of the input embedding table: every token id must be below it."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(embeddings, torch.nn.Embedding):
        return int(embeddings.num_embeddings)
    return int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)


def _passes(sorted_lengths: np.ndarray, budget: int) -> list[slice]:
    """Consecutive runs of rows (lengths ascending) whose count × longest
    stays within the token budget; at least one row each."""
    passes: list[slice] = []
    start = 0
    for index, length in enumerate(sorted_lengths.tolist()):
        if index > start and (index - start + 1) * max(length, 1) > budget:
            passes.append(slice(start, index))
            start = index
    if start < len(sorted_lengths):
        passes.append(slice(start, len(sorted_lengths)))
    return passes


def _prepared_encoder(tokenizer: Any, max_length: int) -> Any | None:
    """A private copy of the transformers tokenizer's Rust tokenizer with its
    truncation and padding fixed, so ``encode_batch`` needs no per-call
    configuration and can run on any thread (it releases the GIL). None for
    tokenizers without a Rust backend, without a pad token, or whose model
    needs inputs other than ids, mask and token types."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        return None
    if not set(tokenizer.model_input_names) <= _PREPARED_INPUTS or "attention_mask" not in tokenizer.model_input_names:
        return None
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(backend.to_str())
    encoder.enable_truncation(max_length, direction=getattr(tokenizer, "truncation_side", "right"))
    encoder.enable_padding(
        direction=getattr(tokenizer, "padding_side", "right"),
        pad_id=int(tokenizer.pad_token_id),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0)),
        pad_token=str(tokenizer.pad_token),
    )
    return encoder


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
