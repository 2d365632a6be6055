"""Embeddings are written into InferResult as protobuf wire bytes built with
numpy (servicer._embeddings_wire); they must parse to exactly the message the
generated classes build, for every size of varint involved."""

from __future__ import annotations

import numpy as np
import pytest

from device_ops.v1 import inference_pb2
from device_ops_worker.engine.jobs import InferenceResult
from device_ops_worker.servicer import _result_to_pb


def _slow(vectors: np.ndarray) -> inference_pb2.InferResult:
    message = inference_pb2.InferResult(device_id="cpu-0", run_ms=1.5, model="m", dtype="float32", batch_size=2)
    message.embeddings.extend(inference_pb2.Embedding(values=row.tolist()) for row in vectors)
    return message


@pytest.mark.parametrize("shape", [(1, 1), (3, 384), (2, 31), (2, 32), (5, 1024), (1, 40_000)])
def test_embeddings_wire_matches_generated_messages(shape: tuple[int, int]) -> None:
    vectors = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    result = InferenceResult(device_id="cpu-0", run_ms=1.5, model="m", dtype="float32", batch_size=2, embeddings=vectors)
    built = _result_to_pb(result)
    assert built == _slow(vectors)
    assert [len(e.values) for e in built.embeddings] == [shape[1]] * shape[0]
    # And through serialization, as the client receives it.
    parsed = inference_pb2.InferResult.FromString(built.SerializeToString())
    np.testing.assert_array_equal(np.array([list(e.values) for e in parsed.embeddings], dtype=np.float32), vectors)


def test_special_values_and_byte_order_survive() -> None:
    vectors = np.array([[np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38]], dtype=">f4")  # big-endian input
    built = _result_to_pb(InferenceResult(device_id="d", run_ms=0, model="m", dtype="float32", embeddings=vectors))
    values = np.array(built.embeddings[0].values, dtype=np.float32)
    np.testing.assert_array_equal(values.view(np.uint32), vectors.astype("<f4").view(np.uint32)[0])


def test_no_embeddings_and_empty_embeddings() -> None:
    none = _result_to_pb(InferenceResult(device_id="d", run_ms=0, model="m", dtype=""))
    empty = _result_to_pb(InferenceResult(device_id="d", run_ms=0, model="m", dtype="", embeddings=np.zeros((0, 384), np.float32)))
    assert len(none.embeddings) == len(empty.embeddings) == 0
