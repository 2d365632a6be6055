"""CUDA graphs of an encoder's forward pass and pooling, for small batches.

Eagerly, a MiniLM-sized encoder spends a small batch's time launching
kernels from Python: 2.4–4 ms on an H200 whatever the batch up to ~32, while
the GPU works a fraction of that, and the launching thread holds the GIL the
event loop needs to serve other requests. Replaying a captured graph launches
them all at once (≈ 0.3 ms at batch 1 on that GPU). One graph per (rows,
tokens) bucket, captured the first time a pass falls in it; passes beyond the
largest bucket run eagerly, where the GPU's work dominates anyway.

A captured graph is checked against the eager result of the batch that
triggered it, and any failure (capture, mismatch) turns graphs off for the
model: the eager path is always the fallback. Graph memory is taken after
the model's footprint was measured; the buckets bound it to small batches.
Torch only: no gRPC here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
# rows × tokens of the largest graph.
MAX_GRAPH_TOKENS = 16_384
# Largest |replay - eager| accepted, relative to the largest |eager| value (fp16 noise is ~1e-3).
_TOLERANCE = 2e-2

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


# One warm-up stream per device for every capture: cuBLAS keeps a workspace
# per stream it has run on (32 MiB on Hopper) for the life of the process, so
# a fresh stream per capture leaked one each (seen on an H200: +165 MiB).
_warmup_streams: dict[int, torch.cuda.Stream] = {}


def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = _warmup_streams.get(index)
    if stream is None:
        stream = _warmup_streams[index] = torch.cuda.Stream(device)
    return stream


def bucket(value: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket holding `value`; None beyond the largest."""
    return next((size for size in buckets if size >= value), None)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # static [rows bucket, tokens bucket]
    output: torch.Tensor  # static [rows bucket, dim]


class GraphedForward:
    """`forward(inputs) → [rows, dim]` replayed from CUDA graphs where a
    bucket fits. Call from one thread (the device's)."""

    def __init__(self, forward: Forward, device: torch.device, pad_values: dict[str, int], pad_left: bool) -> None:
        self._forward = forward
        self._device = device
        self._pad_values = pad_values
        self._pad_left = pad_left
        self._graphs: dict[tuple[int, int], _Graph] = {}
        # One memory pool for all of them: they never run at once, and each
        # replay's output is copied out before the next replay.
        self._pool: tuple[int, int] | None = None
        self.disabled_reason: str | None = None

    @property
    def captured(self) -> list[tuple[int, int]]:
        return sorted(self._graphs)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The pooled output of `inputs` (on the device) from a graph; None
        when no graph serves them (the caller runs eagerly)."""
        if self.disabled_reason is not None:
            return None
        rows, length = next(iter(inputs.values())).shape
        key = self.key(rows, length)
        if key is None:
            return None
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(key, inputs)
            if graph is None:
                return None
            self._graphs[key] = graph
        self.fill(graph.inputs, inputs)
        graph.graph.replay()
        # A later pass of the same call may replay this graph again.
        return graph.output[:rows].clone()

    @staticmethod
    def key(rows: int, length: int) -> tuple[int, int] | None:
        row_bucket, length_bucket = bucket(rows, ROW_BUCKETS), bucket(length, LENGTH_BUCKETS)
        if row_bucket is None or length_bucket is None or row_bucket * length_bucket > MAX_GRAPH_TOKENS:
            return None
        return row_bucket, length_bucket

    def fill(self, static: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> None:
        """Copy `inputs` into the static tensors, padding on the tokenizer's
        side; rows beyond the batch attend to one token, so no row is all padding."""
        rows = next(iter(inputs.values())).shape[0]
        for name, target in static.items():
            source = inputs[name]
            length = source.shape[1]
            target.fill_(self._pad_values[name])
            columns = slice(target.shape[1] - length, None) if self._pad_left else slice(0, length)
            target[:rows, columns].copy_(source)
        static["attention_mask"][rows:, -1 if self._pad_left else 0] = 1

    def _capture(self, key: tuple[int, int], example: dict[str, torch.Tensor]) -> _Graph | None:
        rows_bucket, length_bucket = key
        static = {
            name: torch.empty((rows_bucket, length_bucket), dtype=tensor.dtype, device=self._device)
            for name, tensor in example.items()
        }
        self.fill(static, example)
        try:
            # Warm-up on a side stream (cuBLAS handles, allocator), as capture requires.
            side = _warmup_stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._forward(static)
            torch.cuda.current_stream(self._device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread_local: the event loop's own CUDA queries (memory status)
            # may go on while the device thread captures.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                output = self._forward(static)
            captured = _Graph(graph, static, output)
            self.fill(static, example)
            graph.replay()
            rows = next(iter(example.values())).shape[0]
            expected = self._forward(example)
            error = float((output[:rows].float() - expected.float()).abs().max())
            scale = max(1.0, float(expected.float().abs().max()))
            if not error <= _TOLERANCE * scale:
                raise RuntimeError(f"replay differs from the eager pass by {error:.3g} (scale {scale:.3g})")
        except Exception as exc:  # noqa: BLE001 - any failure means eager from now on, never a failed job
            self.disabled_reason = f"{type(exc).__name__}: {exc}"[:300]
            self._graphs.clear()
            log.warning(
                "CUDA graph capture failed; this model runs eagerly from now on",
                extra={"rows": rows_bucket, "tokens": length_bucket, "reason": self.disabled_reason},
            )
            return None
        log.info("captured a CUDA graph", extra={"rows": rows_bucket, "tokens": length_bucket})
        return captured
