"""The torch model layer against the real demo models (tiny random SD, the
real all-MiniLM-L6-v2, TorchScript), on CPU, offline."""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from device_ops_worker.errors import CancelledError, FailedPreconditionError, InvalidArgumentError
from device_ops_worker.handlers import (
    LoadOptions,
    check_scheduler,
    load_model,
    parse_dtype,
    scheduler_names,
    supported_dtypes,
)
from device_ops_worker.handlers import embedding as embedding_handler
from device_ops_worker.handlers.base import DiffusionModel, EmbeddingModel, TensorModel, UpscalerModel
from device_ops_worker.handlers.loader import short_reason
from device_ops_worker.model_entry import DIFFUSION_TASKS, ModelEntry, ModelFormat, ModelManifest, Task, TensorSpec
from device_ops_worker.models.sizing import estimate_load_bytes
from device_ops_worker.task_params import ImageGenerationParams
from device_ops_worker_tools.demo_models import prepare_demo_models

CPU = torch.device("cpu")
# The worker's defaults: safetensors only, CUDA graphs on (moot on the CPU).
SAFETENSORS_ONLY = LoadOptions(allow_pickle=False, cuda_graphs=True)
PICKLE_ALLOWED = LoadOptions(allow_pickle=True, cuda_graphs=True)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    prepare_demo_models(directory)
    return directory


def entry_for(folder: Path, name: str | None = None, **changes: object) -> ModelEntry:
    """The ModelEntry the repository would produce for a demo model folder."""
    raw = json.loads((folder / "manifest.json").read_text())
    specs = lambda items: tuple(TensorSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in items)  # noqa: E731
    manifest = ModelManifest(
        name=raw["name"],
        task=Task(raw["task"]),
        format=ModelFormat(raw["format"]),
        dtype=raw["dtype"],
        files=raw["files"],
        inputs=specs(raw["inputs"]),
        outputs=specs(raw["outputs"]),
        batch_dim=raw["batch_dim"],
        scale=raw["scale"],
    )
    model_format = ModelFormat(raw["format"])
    files = [p for p in folder.rglob("*") if p.is_file()]
    entry = ModelEntry(
        name=name or raw["name"],
        path=folder,
        format=model_format,
        tasks=DIFFUSION_TASKS if model_format is ModelFormat.DIFFUSERS else frozenset({Task(raw["task"])}),
        size_bytes=sum(p.stat().st_size for p in files),
        manifest=manifest,
        weight_files=tuple(sorted(p for p in files if p.suffix in WEIGHT_SUFFIXES)),
    )
    return dataclasses.replace(entry, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sd(demo_dir: Path) -> Iterator[DiffusionModel]:
    model = load_model(entry_for(demo_dir / "tiny-sd"), CPU, torch.float32, SAFETENSORS_ONLY)
    assert isinstance(model, DiffusionModel)
    yield model
    model.close()


@pytest.fixture(scope="module")
def minilm(demo_dir: Path) -> Iterator[EmbeddingModel]:
    model = load_model(entry_for(demo_dir / "minilm"), CPU, torch.float32, SAFETENSORS_ONLY)
    assert isinstance(model, EmbeddingModel)
    yield model
    model.close()


def params(**changes: object) -> ImageGenerationParams:
    base = ImageGenerationParams(
        prompt="a lighthouse on a cliff at sunset, oil painting ✨",
        negative_prompt="blurry",
        steps=4,
        guidance_scale=7.5,
        seed=1234,
        width=64,
        height=64,
        images_per_prompt=1,
        scheduler=None,
        strength=0.75,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


class Recorder:
    def __init__(self, fail_at: int | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_at = fail_at
        self.error = error

    def __call__(self, current: int, total: int) -> None:
        self.calls.append((current, total))
        if current == self.fail_at and self.error is not None:
            raise self.error


def gradient_image(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, axis=0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, axis=1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


# ---------------------------------------------------------------- dtypes


def test_parse_dtype_accepts_the_three_names_and_names_the_field() -> None:
    assert parse_dtype("float16") is torch.float16
    assert parse_dtype("bfloat16") is torch.bfloat16
    assert parse_dtype("float32") is torch.float32
    with pytest.raises(InvalidArgumentError, match=r"^dtype: "):
        parse_dtype("int8")


def test_cpu_supports_float32_and_bfloat16() -> None:
    assert supported_dtypes(CPU) == [torch.float32, torch.bfloat16]


# ---------------------------------------------------------------- diffusion


def test_text_to_image_gives_the_requested_images_and_reports_every_step(sd: DiffusionModel) -> None:
    progress = Recorder()
    images = sd.generate(Task.TEXT_TO_IMAGE, params(width=64, height=48, images_per_prompt=2), progress)
    assert len(images) == 2
    assert all(isinstance(image, Image.Image) and image.size == (64, 48) and image.mode == "RGB" for image in images)
    assert progress.calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.asarray(images[0]).std() > 0  # real pixels, not a blank canvas


def test_same_seed_same_pixels_and_another_seed_other_pixels(sd: DiffusionModel) -> None:
    first = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=7), Recorder()))
    again = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=7), Recorder()))
    other = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=8), Recorder()))
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_image_to_image_runs_steps_times_strength_at_the_requested_size(sd: DiffusionModel) -> None:
    progress = Recorder()
    init = gradient_image(80, 40)  # resized to the requested size
    images = sd.generate(
        Task.IMAGE_TO_IMAGE, params(steps=4, strength=0.5, images_per_prompt=2, init_image=init), progress
    )
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    assert progress.calls == [(1, 2), (2, 2)]


def test_inpainting_runs_with_a_mask(sd: DiffusionModel) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    progress = Recorder()
    images = sd.generate(
        Task.INPAINTING, params(strength=1.0, init_image=gradient_image(64, 64), mask_image=mask), progress
    )
    assert [image.size for image in images] == [(64, 64)]
    assert progress.calls[-1] == (4, 4)


def test_a_raising_progress_callback_stops_generation_and_leaves_the_model_usable(sd: DiffusionModel) -> None:
    reference = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=99), Recorder()))
    progress = Recorder(fail_at=2, error=CancelledError("job cancelled"))
    with pytest.raises(CancelledError, match="job cancelled") as raised:
        sd.generate(Task.TEXT_TO_IMAGE, params(seed=99, scheduler="DDIMScheduler"), progress)
    assert progress.calls == [(1, 4), (2, 4)]
    # The denoising frames (and the latents they hold) are gone from the traceback.
    assert not [name for name in _traceback_files(raised.value) if "diffusers" in name]
    class JobCancelled(Exception):  # the engine's own, not a WorkerError
        pass

    plain = Recorder(fail_at=1, error=JobCancelled())
    with pytest.raises(JobCancelled) as raised_plain:
        sd.generate(Task.TEXT_TO_IMAGE, params(seed=99), plain)
    assert plain.calls == [(1, 4)]
    assert not [name for name in _traceback_files(raised_plain.value) if "diffusers" in name]
    # The default scheduler is back: the same seed reproduces the earlier pixels.
    after = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=99), Recorder()))
    assert np.array_equal(reference[0], after[0])


def _traceback_files(error: BaseException) -> list[str]:
    files, tb = [], error.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return files


def test_schedulers_swap_by_name_for_one_call(sd: DiffusionModel) -> None:
    default = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=5), Recorder()))
    progress = Recorder()
    ddim = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=5, scheduler="DDIMScheduler"), progress))
    assert progress.calls[-1] == (4, 4)
    assert not np.array_equal(default[0], ddim[0])
    again = pixels(sd.generate(Task.TEXT_TO_IMAGE, params(seed=5), Recorder()))
    assert np.array_equal(default[0], again[0])


def test_every_allowed_scheduler_runs(sd: DiffusionModel) -> None:
    assert "LMSDiscreteScheduler" in scheduler_names()  # scipy is installed here
    for name in scheduler_names():
        progress = Recorder()
        images = sd.generate(Task.TEXT_TO_IMAGE, params(steps=2, guidance_scale=1.0, scheduler=name), progress)
        assert len(images) == 1, name
        current, total = progress.calls[-1]
        assert current == total >= 2, name


def test_scheduler_names_are_checked_without_a_model() -> None:
    check_scheduler(None)
    check_scheduler("EulerDiscreteScheduler")
    with pytest.raises(InvalidArgumentError, match=r"^scheduler: 'FlowMatch' is not one of DDIMScheduler, "):
        check_scheduler("FlowMatch")


def test_unknown_scheduler_is_an_invalid_argument(sd: DiffusionModel) -> None:
    progress = Recorder()
    with pytest.raises(InvalidArgumentError, match=r"^scheduler: 'KarrasMagic' is not one of"):
        sd.generate(Task.TEXT_TO_IMAGE, params(scheduler="KarrasMagic"), progress)
    assert progress.calls == []


@pytest.mark.parametrize(
    ("task", "changes", "field"),
    [
        (Task.TEXT_TO_IMAGE, {"width": 60}, "width"),
        (Task.TEXT_TO_IMAGE, {"steps": 0}, "steps"),
        (Task.IMAGE_TO_IMAGE, {}, "init_image"),
        (Task.IMAGE_TO_IMAGE, {"init_image": Image.new("RGB", (64, 64)), "strength": 0.1}, "strength"),
        (Task.INPAINTING, {"init_image": Image.new("RGB", (64, 64))}, "mask_image"),
    ],
)
def test_generation_parameters_are_checked_before_any_step(
    sd: DiffusionModel, task: Task, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"^{field}: "):
        sd.generate(task, params(**changes), Recorder())


def test_diffusion_modules_are_unet_vae_and_text_encoder(sd: DiffusionModel) -> None:
    names = sorted(type(module).__name__ for module in sd.modules())
    assert names == ["AutoencoderKL", "CLIPTextModel", "UNet2DConditionModel"]


# ---------------------------------------------------------------- embeddings

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
STOCKS = "The stock market fell sharply today."


def test_embeddings_have_the_model_dimension_and_unit_norm(minilm: EmbeddingModel) -> None:
    vectors = minilm.embed([FOOD, BREAD, STOCKS], normalize=True)
    assert minilm.dimension == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = minilm.embed([FOOD], normalize=False)
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3


def test_embeddings_carry_real_meaning(minilm: EmbeddingModel) -> None:
    food, bread, stocks = minilm.embed([FOOD, BREAD, STOCKS], normalize=True)
    related, unrelated = float(food @ bread), float(food @ stocks)
    assert related > 0.5
    assert related - unrelated > 0.4


def test_embedding_rows_follow_input_order_across_passes(minilm: EmbeddingModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # A token budget of 64 puts a few texts in each forward pass.
    monkeypatch.setattr(minilm, "_tokens_per_pass", 64)
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(20)]
    texts[3], texts[17] = STOCKS, FOOD
    batch = minilm.embed(texts, normalize=True)
    for index in (0, 3, 11, 17, 19):
        single = minilm.embed([texts[index]], normalize=True)[0]
        np.testing.assert_allclose(batch[index], single, atol=1e-4)
    assert minilm.embed([], normalize=True).shape == (0, 384)


def test_cpu_models_use_no_cuda_graphs(minilm: EmbeddingModel) -> None:
    assert minilm.graphs is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("on", [True, False])
def test_the_setting_decides_whether_cuda_models_use_graphs(minilm: EmbeddingModel, on: bool) -> None:
    # Built for a CUDA device without touching it: graphs are captured on first use only.
    model = embedding_handler.TransformerEmbeddingModel(
        minilm.entry,
        torch.device("cuda", 0),
        torch.float32,
        tokenizer=minilm._tokenizer,  # type: ignore[attr-defined]
        model=minilm._model,  # type: ignore[attr-defined]
        pooling=minilm.pooling,  # type: ignore[attr-defined]
        max_length=minilm.max_length,  # type: ignore[attr-defined]
        cuda_graphs=on,
    )
    assert (model.graphs is not None) is on


def test_forward_passes_stay_within_the_token_budget() -> None:
    lengths = np.array([3, 3, 4, 8, 9, 30, 100])
    passes = embedding_handler._passes(lengths, 16)
    assert [(p.start, p.stop) for p in passes] == [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    for part in passes:  # rows × longest fits, or the pass is a single row
        rows = part.stop - part.start
        assert rows == 1 or rows * int(lengths[part.stop - 1]) <= 16
    assert embedding_handler._passes(np.array([], dtype=np.int64), 16) == []


def test_thread_safe_tokenizer_matches_the_transformers_tokenizer(minilm: EmbeddingModel) -> None:
    long_text = "tokens " * 600  # beyond the 256-token limit: truncated the same way
    texts = [FOOD, "", STOCKS + " " + BREAD, long_text, "naïve café — 東京"]
    prepared = minilm.tokenize(texts)
    assert prepared is not None
    reference = minilm._tokenizer(texts, padding=True, truncation=True, max_length=minilm.max_length, return_tensors="np")
    assert set(prepared.arrays) == set(reference)
    for name, array in prepared.arrays.items():
        np.testing.assert_array_equal(array, reference[name])
    np.testing.assert_array_equal(prepared.lengths, reference["attention_mask"].sum(axis=1))
    assert int(prepared.lengths.max()) == minilm.max_length


def test_merged_token_batches_embed_like_separate_ones(minilm: EmbeddingModel) -> None:
    short, long = [FOOD], [STOCKS + " " + BREAD, "one"]
    parts = [minilm.tokenize(short), minilm.tokenize(long)]
    assert parts[0].arrays["input_ids"].shape[1] != parts[1].arrays["input_ids"].shape[1]
    merged = minilm.embed_prepared(parts)
    separate = np.concatenate([minilm.embed_prepared([parts[0]]), minilm.embed_prepared([parts[1]])])
    np.testing.assert_allclose(merged, separate, atol=1e-5)
    # Left padding (some tokenizers use it): merged rows keep their tokens
    # right-aligned, with each input's pad value on the left.
    left = [dataclasses.replace(part, arrays=_pad_left(part), pad_left=True) for part in parts]
    batch = embedding_handler.merge_tokenized(left)
    width = batch.arrays["input_ids"].shape[1]
    pad_id = left[0].pad_values["input_ids"]
    for row, (part, index) in enumerate([(left[0], 0), (left[1], 0), (left[1], 1)]):
        length = int(part.lengths[index])
        np.testing.assert_array_equal(batch.arrays["input_ids"][row, width - length :], part.arrays["input_ids"][index, -length:])
        assert (batch.arrays["input_ids"][row, : width - length] == pad_id).all()
        assert batch.arrays["attention_mask"][row].sum() == length


def _pad_left(part: object) -> dict[str, np.ndarray]:
    """The same rows with their padding moved to the left."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in part.arrays.items():  # type: ignore[attr-defined]
        shifted = np.full_like(array, part.pad_values[name])  # type: ignore[attr-defined]
        for row, length in enumerate(part.lengths):  # type: ignore[attr-defined]
            shifted[row, array.shape[1] - length :] = array[row, :length]
        arrays[name] = shifted
    return arrays


def test_embedding_model_loads_in_bfloat16(demo_dir: Path) -> None:
    model = load_model(entry_for(demo_dir / "minilm"), CPU, torch.bfloat16, SAFETENSORS_ONLY)
    try:
        vectors = model.embed([FOOD, BREAD], normalize=True)  # type: ignore[attr-defined]
        assert vectors.dtype == np.float32
        assert float(vectors[0] @ vectors[1]) > 0.5
    finally:
        model.close()


def test_transformers_folder_without_embedding_task_is_refused(demo_dir: Path) -> None:
    entry = entry_for(demo_dir / "minilm", tasks=frozenset({Task.TENSOR}))
    with pytest.raises(FailedPreconditionError, match="text-embedding only"):
        load_model(entry, CPU, torch.float32, SAFETENSORS_ONLY)


# ---------------------------------------------------------------- torchscript


def test_tensor_model_matches_the_module_run_directly(demo_dir: Path) -> None:
    entry = entry_for(demo_dir / "tiny-mlp")
    model = load_model(entry, CPU, torch.float32, SAFETENSORS_ONLY)
    assert isinstance(model, TensorModel)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    x.flags.writeable = False  # as when decoded straight from request bytes
    outputs = model.run({"x": x})
    expected = torch.jit.load(str(demo_dir / "tiny-mlp" / "model.pt"))(torch.from_numpy(x.copy())).detach().numpy()
    assert list(outputs) == ["y"]
    assert outputs["y"].dtype == np.float32 and outputs["y"].shape == (5, 3)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6)
    with pytest.raises(InvalidArgumentError, match=r"^inputs\.x: "):
        model.run({"z": x})


def test_tensor_model_in_bfloat16_still_returns_float32(demo_dir: Path) -> None:
    model = load_model(entry_for(demo_dir / "tiny-mlp"), CPU, torch.bfloat16, SAFETENSORS_ONLY)
    assert isinstance(model, TensorModel)
    x = np.ones((2, 4), dtype=np.float32)
    reference = load_model(entry_for(demo_dir / "tiny-mlp"), CPU, torch.float32, SAFETENSORS_ONLY)
    result = model.run({"x": x})["y"]
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, reference.run({"x": x})["y"], atol=0.05)  # type: ignore[attr-defined]


def test_tensor_model_without_declared_names_uses_defaults(demo_dir: Path) -> None:
    entry = entry_for(demo_dir / "tiny-mlp", manifest=None)
    model = load_model(entry, CPU, torch.float32, SAFETENSORS_ONLY)
    outputs = model.run({"anything": np.zeros((1, 4), dtype=np.float32)})  # type: ignore[attr-defined]
    assert list(outputs) == ["output"]


def test_upscaler_doubles_the_size_and_keeps_the_picture(demo_dir: Path) -> None:
    model = load_model(entry_for(demo_dir / "tiny-upscaler"), CPU, torch.float32, SAFETENSORS_ONLY)
    assert isinstance(model, UpscalerModel) and model.scale == 2
    source = gradient_image(20, 12)
    result = model.upscale(source)
    assert result.size == (40, 24) and result.mode == "RGB"
    nearest = np.asarray(source.resize((40, 24), Image.Resampling.NEAREST), dtype=np.float32)
    assert np.abs(np.asarray(result, dtype=np.float32) - nearest).mean() < 20


def test_upscaler_without_manifest_scale_is_refused(demo_dir: Path) -> None:
    entry = entry_for(demo_dir / "tiny-upscaler")
    assert entry.manifest is not None
    entry = dataclasses.replace(entry, manifest=dataclasses.replace(entry.manifest, scale=None))
    with pytest.raises(FailedPreconditionError, match="manifest.scale"):
        load_model(entry, CPU, torch.float32, SAFETENSORS_ONLY)


# ---------------------------------------------------------------- sizing


@pytest.mark.parametrize("name", ["tiny-sd", "minilm", "tiny-upscaler", "tiny-mlp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_estimate_is_never_below_the_loaded_footprint(demo_dir: Path, name: str, dtype: torch.dtype) -> None:
    entry = entry_for(demo_dir / name)
    estimate = estimate_load_bytes(entry, dtype)
    model = load_model(entry, CPU, dtype, SAFETENSORS_ONLY)
    try:
        actual = model.parameter_bytes()
    finally:
        model.close()
    assert estimate >= actual
    if name in ("tiny-sd", "minilm"):  # safetensors: sized tensor by tensor
        assert estimate <= 2 * actual


def test_estimate_reads_pickled_storages_and_upcasts_half_precision(tmp_path: Path) -> None:
    weights = {"w": torch.zeros(1000, 1000, dtype=torch.float16), "steps": torch.zeros(10, dtype=torch.int64)}
    path = tmp_path / "pytorch_model.bin"
    torch.save(weights, path)
    entry = ModelEntry(
        name="pickled",
        path=tmp_path,
        format=ModelFormat.TRANSFORMERS,
        tasks=frozenset({Task.TEXT_EMBEDDING}),
        size_bytes=path.stat().st_size,
        manifest=None,
        weight_files=(path,),
    )
    float32_bytes = 1000 * 1000 * 4 + 10 * 8
    estimate = estimate_load_bytes(entry, torch.float32)
    assert float32_bytes <= estimate <= 1.1 * float32_bytes


def test_estimate_skips_weights_that_are_never_loaded(demo_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "sd-with-extras"
    shutil.copytree(demo_dir / "tiny-sd", folder)
    (folder / "safety_checker").mkdir()
    save_file({"w": torch.zeros(1000, 1000)}, str(folder / "safety_checker" / "model.safetensors"))
    variant = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"  # diffusers loads the plain file
    save_file({"w": torch.zeros(1000, 1000, dtype=torch.float16)}, str(variant))
    plain = estimate_load_bytes(entry_for(demo_dir / "tiny-sd"), torch.float32)
    assert estimate_load_bytes(entry_for(folder), torch.float32) == plain


# ---------------------------------------------------------------- failures


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def test_corrupted_weights_fail_cleanly_and_free_everything(demo_dir: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    broken = tmp_path / "broken-sd"
    shutil.copytree(demo_dir / "tiny-sd", broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = (_live(AutoencoderKL), _live(CLIPTextModel))
    with pytest.raises(FailedPreconditionError) as raised:
        load_model(entry_for(broken, name="broken-sd"), CPU, torch.float32, SAFETENSORS_ONLY)
    message = raised.value.message
    assert message.startswith("model 'broken-sd': weights could not be loaded: ")
    assert str(tmp_path) not in message and "\n" not in message
    assert raised.value.__context__ is None and raised.value.__cause__ is None
    del raised
    assert (_live(AutoencoderKL), _live(CLIPTextModel)) == before


def test_pickled_weights_load_only_when_allowed(demo_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "pickled-sd"
    shutil.copytree(demo_dir / "tiny-sd", folder)
    text_encoder = folder / "text_encoder"
    torch.save(load_file(text_encoder / "model.safetensors"), text_encoder / "pytorch_model.bin")
    (text_encoder / "model.safetensors").unlink()
    entry = entry_for(folder, name="pickled-sd")
    with pytest.raises(FailedPreconditionError, match="^model 'pickled-sd': weights could not be loaded"):
        load_model(entry, CPU, torch.float32, SAFETENSORS_ONLY)
    model = load_model(entry, CPU, torch.float32, PICKLE_ALLOWED)
    try:
        assert estimate_load_bytes(entry, torch.float32) >= model.parameter_bytes()
    finally:
        model.close()


def test_short_reason_hides_paths() -> None:
    error = OSError("Unable to load weights from /srv/models/secret/unet/x.safetensors: bad\nsecond line")
    reason = short_reason(error, Path("/srv/models/secret"))
    assert reason == "OSError: Unable to load weights from <model>/unet/x.safetensors: bad"
    assert short_reason(ValueError("open /etc/passwd failed"), Path("/m")) == "ValueError: open <path> failed"


def test_running_out_of_device_memory_while_loading_stays_an_oom_error(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from device_ops_worker.handlers.torchscript import TorchScriptTensorModel

    def out_of_memory(*_args: object) -> None:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        except torch.OutOfMemoryError as exc:
            raise OSError("Unable to load weights") from exc  # how libraries wrap it

    monkeypatch.setattr(TorchScriptTensorModel, "load", out_of_memory)
    expected = r"^model 'tiny-mlp': out of device memory while loading$"
    with pytest.raises(torch.OutOfMemoryError, match=expected) as raised:
        load_model(entry_for(demo_dir / "tiny-mlp"), CPU, torch.float32, SAFETENSORS_ONLY)
    assert raised.value.__context__ is None  # unwrapped, without the failed load's frames
