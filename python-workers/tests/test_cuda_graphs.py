"""The CUDA-graph wrapper's bucketing, padding and fallback. Capture itself
needs a GPU (python-workers/bench/gpu_bench.py runs it there and compares
served rows with bare PyTorch); here a capture fails for real, with no CUDA,
and must leave the eager path working."""

from __future__ import annotations

import pytest
import torch

from device_ops_worker.handlers.cuda_graphs import GraphedForward

PAD = {"input_ids": 7, "attention_mask": 0, "token_type_ids": 0}


def _inputs(rows: int, length: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.arange(rows * length, dtype=torch.int64).reshape(rows, length) + 100,
        "attention_mask": torch.ones((rows, length), dtype=torch.int64),
        "token_type_ids": torch.zeros((rows, length), dtype=torch.int64),
    }


@pytest.mark.parametrize(
    ("rows", "length", "key"),
    [(1, 1, (1, 16)), (3, 17, (4, 32)), (64, 128, (64, 128)), (64, 256, (64, 256)), (64, 512, None), (65, 16, None), (1, 513, None)],
)
def test_passes_fall_in_the_smallest_bucket_that_holds_them(rows: int, length: int, key: tuple[int, int] | None) -> None:
    assert GraphedForward.key(rows, length) == key


@pytest.mark.parametrize("pad_left", [False, True])
def test_fill_pads_on_the_tokenizer_side_and_no_row_is_all_padding(pad_left: bool) -> None:
    graphed = GraphedForward(lambda inputs: inputs["input_ids"].float(), torch.device("cpu"), PAD, pad_left=pad_left)
    static = {name: torch.full((4, 16), -1, dtype=torch.int64) for name in PAD}
    source = _inputs(3, 5)
    graphed.fill(static, source)
    real = slice(11, 16) if pad_left else slice(0, 5)
    padding = slice(0, 11) if pad_left else slice(5, 16)
    assert torch.equal(static["input_ids"][:3, real], source["input_ids"])
    assert (static["input_ids"][:3, padding] == 7).all() and (static["input_ids"][3] == 7).all()
    assert (static["attention_mask"][:3, real] == 1).all() and (static["attention_mask"][:3, padding] == 0).all()
    # The row beyond the batch attends to exactly one token.
    assert int(static["attention_mask"][3].sum()) == 1
    # Filling again with fewer rows leaves nothing of the previous batch behind.
    graphed.fill(static, _inputs(1, 2))
    assert int(static["attention_mask"][:, :].sum()) == 2 + 3


def test_a_failed_capture_turns_graphs_off_and_the_caller_runs_eagerly() -> None:
    calls: list[int] = []

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        return inputs["attention_mask"].float().sum(dim=1, keepdim=True)

    graphed = GraphedForward(forward, torch.device("cpu"), PAD, pad_left=False)
    assert graphed(_inputs(2, 8)) is None  # no CUDA here: the capture fails
    assert graphed.disabled_reason is not None
    assert graphed(_inputs(2, 8)) is None and graphed.captured == []
    assert forward(_inputs(2, 8)).tolist() == [[8.0], [8.0]]

