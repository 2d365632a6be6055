"""gRPC servicer: converts wire messages to domain calls and back, nothing else.

Errors are raised as domain exceptions and turned into statuses by
``interceptors.ErrorMappingInterceptor``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import numpy as np

from device_ops.v1 import (
    devices_pb2,
    inference_pb2,
    memory_pb2,
    models_pb2,
    worker_info_pb2,
    worker_service_pb2_grpc,
)

from .devices import Device, DeviceKind
from .engine import jobs
from .engine.inference_service import InferenceService
from .engine.memory_service import MemoryService
from .engine.model_manager import PlacementInfo
from .engine.model_service import ModelService, ModelStatus
from .engine.requests import (
    ImageGenerationInput,
    InferenceRequest,
    Input,
    PostprocessInput,
    TensorInput,
    TextEmbeddingInput,
    WireTensor,
)
from .model_entry import ModelFormat, Task, ValidationState
from .worker_info_service import DeviceLoad, WorkerInfoService

_KIND = {DeviceKind.CPU: devices_pb2.DEVICE_KIND_CPU, DeviceKind.CUDA: devices_pb2.DEVICE_KIND_CUDA}
_TASK_TO_PB = {
    Task.TEXT_TO_IMAGE: models_pb2.MODEL_TASK_TEXT_TO_IMAGE,
    Task.IMAGE_TO_IMAGE: models_pb2.MODEL_TASK_IMAGE_TO_IMAGE,
    Task.INPAINTING: models_pb2.MODEL_TASK_INPAINTING,
    Task.TEXT_EMBEDDING: models_pb2.MODEL_TASK_TEXT_EMBEDDING,
    Task.TENSOR: models_pb2.MODEL_TASK_TENSOR,
    Task.UPSCALE: models_pb2.MODEL_TASK_UPSCALE,
    Task.ENHANCE: models_pb2.MODEL_TASK_ENHANCE,
}
_PB_TO_TASK = {value: key for key, value in _TASK_TO_PB.items()}
_FORMAT_TO_PB = {
    ModelFormat.DIFFUSERS: models_pb2.MODEL_FORMAT_DIFFUSERS,
    ModelFormat.TRANSFORMERS: models_pb2.MODEL_FORMAT_TRANSFORMERS,
    ModelFormat.TORCHSCRIPT: models_pb2.MODEL_FORMAT_TORCHSCRIPT,
}
_VALIDATION_TO_PB = {
    ValidationState.UNKNOWN: models_pb2.VALIDATION_STATE_UNKNOWN,
    ValidationState.VALID: models_pb2.VALIDATION_STATE_VALID,
    ValidationState.INVALID: models_pb2.VALIDATION_STATE_INVALID,
}


def _present(**fields: object) -> dict[str, object]:
    # Keyword construction skips None, so an unreported value stays absent on
    # the wire (proto3 `optional`) instead of turning into 0.
    return {key: value for key, value in fields.items() if value is not None}


# ---------------------------------------------------------------- devices


def device_to_pb(device: Device, dtypes: list[str], load: DeviceLoad) -> devices_pb2.Device:
    message = devices_pb2.Device(
        id=device.id,
        kind=_KIND[device.kind],
        name=device.name,
        memory=devices_pb2.DeviceMemory(
            **_present(total_bytes=device.memory.total_bytes, free_bytes=device.memory.free_bytes)
        ),
        supported_dtypes=dtypes,
        running_jobs=load.running,
        queued_jobs=load.queued,
        queue_capacity=load.capacity,
    )
    if device.cuda is not None:
        c = device.cuda
        message.cuda.CopyFrom(
            devices_pb2.CudaDeviceDetails(
                index=c.index,
                compute_capability=c.compute_capability,
                **_present(
                    uuid=c.uuid,
                    multiprocessor_count=c.multiprocessor_count,
                    utilization_percent=c.nvml.utilization_percent,
                    memory_utilization_percent=c.nvml.memory_utilization_percent,
                    temperature_celsius=c.nvml.temperature_celsius,
                    power_watts=c.nvml.power_watts,
                    power_limit_watts=c.nvml.power_limit_watts,
                    driver_version=c.nvml.driver_version,
                    cuda_runtime_version=c.cuda_runtime_version,
                ),
            )
        )
    if device.cpu is not None:
        p = device.cpu
        message.cpu.CopyFrom(
            devices_pb2.CpuDeviceDetails(
                architecture=p.architecture,
                torch_threads=p.torch_threads,
                **_present(model_name=p.model_name, logical_cores=p.logical_cores, physical_cores=p.physical_cores),
            )
        )
    return message


# ---------------------------------------------------------------- models


def _placement_to_pb(placement: PlacementInfo) -> models_pb2.ModelPlacement:
    return models_pb2.ModelPlacement(
        device_id=placement.device_id,
        dtype=placement.dtype,
        footprint_bytes=placement.footprint_bytes,
        last_used_unix_ms=placement.last_used_ms,
        in_flight_jobs=placement.in_flight,
    )


def _model_to_pb(status: ModelStatus) -> models_pb2.ModelDescriptor:
    entry = status.entry
    return models_pb2.ModelDescriptor(
        name=entry.name,
        task=_TASK_TO_PB[entry.primary_task],
        format=_FORMAT_TO_PB[entry.format],
        size_bytes=entry.size_bytes,
        validation=_VALIDATION_TO_PB[status.validation],
        placements=[_placement_to_pb(p) for p in status.placements],
        tasks=sorted(_TASK_TO_PB[task] for task in entry.tasks),
        preferred_dtype=status.preferred_dtype,
    )


# ---------------------------------------------------------------- inference


def _input_from_pb(request: inference_pb2.InferRequest) -> Input | None:
    kind = request.WhichOneof("input")
    if kind == "image_generation":
        g = request.image_generation

        def opt(name: str) -> object:
            return getattr(g, name) if g.HasField(name) else None

        return ImageGenerationInput(
            prompt=g.prompt,
            negative_prompt=g.negative_prompt,
            steps=opt("steps"),  # type: ignore[arg-type]
            guidance_scale=opt("guidance_scale"),  # type: ignore[arg-type]
            seed=opt("seed"),  # type: ignore[arg-type]
            width=opt("width"),  # type: ignore[arg-type]
            height=opt("height"),  # type: ignore[arg-type]
            images_per_prompt=opt("images_per_prompt"),  # type: ignore[arg-type]
            scheduler=g.scheduler,
            strength=opt("strength"),  # type: ignore[arg-type]
            init_image=g.init_image,
            mask_image=g.mask_image,
        )
    if kind == "text_embedding":
        embedding = request.text_embedding
        return TextEmbeddingInput(
            texts=tuple(embedding.texts),
            normalize=embedding.normalize,
            token_ids=tuple(tuple(entry.ids) for entry in embedding.token_ids),
            dimensions=embedding.dimensions if embedding.HasField("dimensions") else None,
        )
    if kind == "tensor":
        return TensorInput(
            inputs={
                name: WireTensor(dtype=t.dtype, shape=tuple(t.shape), data=t.data)
                for name, t in request.tensor.inputs.items()
            }
        )
    if kind == "postprocess":
        p = request.postprocess
        return PostprocessInput(
            image=p.image,
            source_output=p.source_output,
            scale=p.scale if p.HasField("scale") else None,
            adjustments=dict(p.adjustments),
        )
    return None


def request_from_pb(request: inference_pb2.InferRequest) -> InferenceRequest:
    return InferenceRequest(
        job_id=request.job_id,
        model=request.model,
        task=_PB_TO_TASK.get(request.task),
        device_id=request.device_id,
        dtype=request.dtype,
        input=_input_from_pb(request),
        keep_running_on_disconnect=request.keep_running_on_disconnect,
    )


def _tensor_to_pb(array: np.ndarray) -> inference_pb2.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = "bool" if array.dtype == np.bool_ else array.dtype.name
    return inference_pb2.Tensor(dtype=name, shape=list(array.shape), data=array.tobytes())


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Wire tags: InferResult.embeddings (field 2) and Embedding.values (field 1), both length-delimited.
_EMBEDDINGS_TAG = b"\x12"
_VALUES_TAG = b"\x0a"


def _embeddings_wire(vectors: np.ndarray) -> bytes:
    """InferResult.embeddings in protobuf wire format, one Embedding per row
    with its values packed, built with numpy in one pass: parsing it back
    (MergeFromString) copies each row at once, where building the messages
    from Python floats cost ~10 ms for 512 rows of 384 — more than the GPU
    spends computing them."""
    rows, dimension = vectors.shape
    payload = dimension * 4
    inner = _VALUES_TAG + _varint(payload)
    head = np.frombuffer(_EMBEDDINGS_TAG + _varint(len(inner) + payload) + inner, dtype=np.uint8)
    wire = np.empty((rows, len(head) + payload), dtype=np.uint8)
    wire[:, : len(head)] = head
    wire[:, len(head) :] = np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(rows, payload)
    return wire.tobytes()


def _result_to_pb(result: jobs.InferenceResult) -> inference_pb2.InferResult:
    message = inference_pb2.InferResult(
        files=[
            inference_pb2.OutputFile(
                path=f.path, media_type=f.media_type, size_bytes=f.size_bytes, sha256=f.sha256, width=f.width, height=f.height
            )
            for f in result.files
        ],
        device_id=result.device_id,
        run_ms=result.run_ms,
        model=result.model,
        dtype=result.dtype,
        batch_size=result.batch_size,
        prompt_tokens=result.prompt_tokens,
        **_present(seed=result.seed),
    )
    if result.embeddings is not None and len(result.embeddings):
        message.MergeFromString(_embeddings_wire(result.embeddings))
    for name, array in result.tensors.items():
        message.tensors[name].CopyFrom(_tensor_to_pb(array))
    return message


def event_to_pb(stamped: jobs.StampedEvent) -> inference_pb2.InferEvent:
    message = inference_pb2.InferEvent(sequence=stamped.sequence, timestamp_unix_ms=stamped.timestamp_ms)
    event = stamped.event
    if isinstance(event, jobs.Accepted):
        message.accepted.job_id = event.job_id
    elif isinstance(event, jobs.Queued):
        message.queued.CopyFrom(inference_pb2.JobQueued(position=event.position, device_id=event.device_id))
    elif isinstance(event, jobs.Started):
        message.started.device_id = event.device_id
    elif isinstance(event, jobs.Progress):
        message.progress.CopyFrom(inference_pb2.JobProgress(current=event.current, total=event.total))
    elif isinstance(event, jobs.Completed):
        message.result.CopyFrom(_result_to_pb(event.result))
    elif isinstance(event, jobs.Failed):
        message.error.CopyFrom(inference_pb2.JobError(code=event.status.value, message=event.message))
    elif isinstance(event, jobs.Cancelled):
        message.cancelled.reason = event.reason.value
    return message


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        worker: WorkerInfoService,
        models: ModelService,
        inference: InferenceService,
        memory: MemoryService,
    ) -> None:
        self._worker = worker
        self._models = models
        self._inference = inference
        self._memory = memory

    async def GetWorkerInfo(
        self, request: worker_info_pb2.GetWorkerInfoRequest, context: grpc.aio.ServicerContext
    ) -> worker_info_pb2.WorkerInfo:
        info = await self._worker.worker_info()
        return worker_info_pb2.WorkerInfo(
            worker_id=info.worker_id,
            version=info.version,
            pid=info.pid,
            hostname=info.hostname,
            started_at_unix_ms=info.started_at_unix_ms,
            uptime_seconds=info.uptime_seconds,
            python_version=info.python_version,
            torch_version=info.torch_version,
            cuda_available=info.cuda_available,
            device_count=info.device_count,
            nvml_available=info.nvml_available,
            metrics_port=info.metrics_port,
        )

    async def ListDevices(
        self, request: devices_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> devices_pb2.ListDevicesResponse:
        devices = await self._worker.list_devices()
        return devices_pb2.ListDevicesResponse(
            devices=[device_to_pb(d, self._worker.supported_dtypes(d.id), self._worker.load(d.id)) for d in devices]
        )

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(models=[_model_to_pb(m) for m in await self._models.list_models()])

    async def ValidateModel(
        self, request: models_pb2.ValidateModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ValidateModelResponse:
        status, report = await self._models.validate(request.model)
        return models_pb2.ValidateModelResponse(model=_model_to_pb(status), valid=report.valid, problems=list(report.problems))

    async def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.LoadModelResponse:
        placement, already = await self._models.load(request.model, request.device_id, request.dtype)
        return models_pb2.LoadModelResponse(placement=_placement_to_pb(placement), already_loaded=already)

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        return models_pb2.UnloadModelResponse(freed_bytes=await self._models.unload(request.model, request.device_id))

    async def Infer(
        self, request: inference_pb2.InferRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.InferEvent]:
        # aclosing: when the caller goes away, the service's generator is
        # closed at once, which cancels the job (unless it is kept running).
        async with contextlib.aclosing(self._inference.infer(request_from_pb(request))) as events:
            async for stamped in events:
                yield event_to_pb(stamped)

    async def AttachJob(
        self, request: inference_pb2.AttachJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.InferEvent]:
        async with contextlib.aclosing(self._inference.attach(request.job_id, request.after_sequence)) as events:
            async for stamped in events:
                yield event_to_pb(stamped)

    async def CancelJob(
        self, request: inference_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.CancelJobResponse:
        return inference_pb2.CancelJobResponse(cancelled=self._inference.cancel(request.job_id))

    async def GetMemoryStatus(
        self, request: memory_pb2.GetMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.MemoryStatus:
        reports = await self._memory.status(request.device_id)
        return memory_pb2.MemoryStatus(
            devices=[
                memory_pb2.DeviceMemoryStatus(
                    device_id=r.device_id,
                    models=[memory_pb2.ModelMemory(model=name, footprint_bytes=size) for name, size in r.models],
                    **_present(
                        allocated_bytes=r.allocated_bytes,
                        reserved_bytes=r.reserved_bytes,
                        used_bytes=r.used_bytes,
                        total_bytes=r.total_bytes,
                    ),
                )
                for r in reports
            ]
        )

    async def ClearMemory(
        self, request: memory_pb2.ClearMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.ClearMemoryResponse:
        report = await self._memory.clear(request.device_id, request.unload_idle)
        return memory_pb2.ClearMemoryResponse(freed_bytes=report.freed_bytes, unloaded_models=report.unloaded_models)
