"""Text-embedding inputs beyond plain texts, through a real grpc.aio worker
with the real MiniLM: pre-tokenized ids (checked against the model),
token counts in the result, and truncation to fewer dimensions only where
the model's manifest allows it."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from transformers import AutoTokenizer

from device_ops.v1 import inference_pb2, models_pb2

from .engine_support import EngineWorker, collect, copy_models, demo_models, expect_status, start_engine, stop_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXTS = ["A man is eating food.", "The stock market fell sharply today, said analysts."]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("embedding-inputs")
    models = copy_models(demo_models(tmp_path_factory.getbasetemp()), base / "models", ["minilm"])
    # The same weights, declared as trained for truncation (Matryoshka).
    copy_models(models, base / "mrl", ["minilm"])
    (base / "mrl" / "minilm").rename(models / "minilm-mrl")
    manifest_path = models / "minilm-mrl" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.pop("name", None)
    manifest["dimensions"] = [128, 256]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    engine = await start_engine(base, models)
    yield engine
    await stop_engine(engine)


@pytest.fixture(scope="module")
def tokenizer(worker: EngineWorker):
    return AutoTokenizer.from_pretrained(str(worker.models / "minilm"), local_files_only=True)


def request(job_id: str, *, texts=(), token_ids=(), normalize=True, dimensions=None, model="minilm"):
    embedding = inference_pb2.TextEmbeddingInput(
        texts=list(texts), token_ids=[inference_pb2.TokenIds(ids=list(ids)) for ids in token_ids], normalize=normalize
    )
    if dimensions is not None:
        embedding.dimensions = dimensions
    return inference_pb2.InferRequest(
        job_id=job_id, model=model, task=models_pb2.MODEL_TASK_TEXT_EMBEDDING, text_embedding=embedding
    )


async def result_of(worker: EngineWorker, message: inference_pb2.InferRequest) -> inference_pb2.InferResult:
    events = await collect(worker.stub.Infer(message, timeout=120))
    assert events[-1].WhichOneof("event") == "result", events[-1]
    return events[-1].result


async def job_error(worker: EngineWorker, message: inference_pb2.InferRequest, fragment: str) -> str:
    """Refusals that need the loaded model end the job with an error event (the stream itself is OK)."""
    events = await collect(worker.stub.Infer(message, timeout=120))
    assert events[-1].WhichOneof("event") == "error", events[-1]
    error = events[-1].error
    assert error.code == "INVALID_ARGUMENT" and fragment in error.message, error
    return error.message


def vectors(result: inference_pb2.InferResult) -> np.ndarray:
    return np.array([list(e.values) for e in result.embeddings], dtype=np.float32)


async def test_token_ids_give_the_vectors_of_the_texts_they_encode(worker: EngineWorker, tokenizer) -> None:
    ids = [tokenizer(text)["input_ids"] for text in TEXTS]
    from_texts = await result_of(worker, request("texts-1", texts=TEXTS))
    from_ids = await result_of(worker, request("ids-1", token_ids=ids))
    np.testing.assert_allclose(vectors(from_ids), vectors(from_texts), atol=1e-5)
    # Tokens read, padding excluded: the same count either way.
    assert from_texts.prompt_tokens == from_ids.prompt_tokens == sum(map(len, ids))


async def test_token_counts_are_per_job_when_jobs_share_a_batch(worker: EngineWorker, tokenizer) -> None:
    texts = [f"sentence {i} " + "word " * i for i in range(8)]
    calls = [worker.stub.Infer(request(f"count-{i}", texts=[text]), timeout=120) for i, text in enumerate(texts)]
    calls.append(worker.stub.Infer(request("count-ids", token_ids=[tokenizer(texts[3])["input_ids"]]), timeout=120))
    results = [(await collect(call))[-1].result for call in calls]
    assert max(r.batch_size for r in results) > 1
    expected = [len(tokenizer(text)["input_ids"]) for text in texts] + [len(tokenizer(texts[3])["input_ids"])]
    assert [r.prompt_tokens for r in results] == expected
    np.testing.assert_allclose(vectors(results[-1]), vectors(results[3]), atol=1e-5)


async def test_token_ids_outside_the_model_are_refused_alone(worker: EngineWorker, tokenizer) -> None:
    vocabulary = tokenizer.vocab_size
    good = worker.stub.Infer(request("good-beside-bad", texts=["fine"]), timeout=120)
    message = await job_error(
        worker, request("bad-id", token_ids=[[101, 2000, 102], [101, vocabulary, 102]]), "text_embedding.token_ids[1]"
    )
    assert f"token id {vocabulary}" in message and f"vocabulary of {vocabulary}" in message
    await job_error(worker, request("too-long", token_ids=[[101] * 600]), "600 tokens exceed model 'minilm''s maximum length")
    # A job batched with a refused one still gets its vectors.
    assert len((await collect(good))[-1].result.embeddings) == 1


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"texts": ["a"], "token_ids": [[101, 102]]}, "either texts or token_ids"),
        ({"token_ids": [[]]}, "text_embedding.token_ids[0]: must hold at least one token id"),
        ({"token_ids": [[1] * 9000]}, "9000 tokens exceed the limit of 8192"),
        ({"texts": ["a"], "dimensions": 0}, "text_embedding.dimensions: must be at least 1"),
    ],
)
async def test_bad_embedding_inputs_are_refused_before_running(worker: EngineWorker, change: dict, fragment: str) -> None:
    await expect_status(
        lambda: worker.stub.Infer(request(f"bad-{abs(hash(fragment))}", **change), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        fragment,
    )


async def test_dimensions_truncate_only_where_the_manifest_allows(worker: EngineWorker) -> None:
    full = vectors(await result_of(worker, request("mrl-full", texts=TEXTS, normalize=False, model="minilm-mrl")))
    cut = await result_of(worker, request("mrl-128", texts=TEXTS, dimensions=128, model="minilm-mrl"))
    got = vectors(cut)
    assert got.shape == (2, 128)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The model's own dimension is always allowed.
    assert vectors(await result_of(worker, request("own-384", texts=TEXTS, dimensions=384))).shape == (2, 384)
    message = await job_error(worker, request("no-mrl", texts=TEXTS, dimensions=128), "text_embedding.dimensions")
    assert "384 dimensions" in message and "not trained for truncation" in message
    await job_error(
        worker, request("mrl-200", texts=TEXTS, dimensions=200, model="minilm-mrl"), "may be truncated to 128, 256, 384"
    )
    # A model with declared truncations still gives its own dimension; more than it has is refused.
    assert vectors(await result_of(worker, request("mrl-384", texts=TEXTS, dimensions=384, model="minilm-mrl"))).shape == (2, 384)
    await job_error(worker, request("mrl-999", texts=TEXTS, dimensions=999, model="minilm-mrl"), "not 999")


def test_manifest_dimensions_must_be_positive_integers(tmp_path: Path) -> None:
    from device_ops_worker.models.manifest import ManifestError, parse_manifest

    assert parse_manifest(b'{"dimensions": [256, 128, 256]}', "m.json").manifest.dimensions == (128, 256)
    with pytest.raises(ManifestError, match="m.json: dimensions must be a non-empty list of integers >= 1"):
        parse_manifest(b'{"dimensions": [0]}', "m.json")
