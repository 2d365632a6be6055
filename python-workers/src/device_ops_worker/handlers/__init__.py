"""The torch model layer: loading models and running them. No grpc here.

Only the loader is imported eagerly; the diffusers and transformers handlers
are imported when a model of their format is first loaded, because importing
those libraries takes seconds.
"""

from .base import (
    DiffusionModel,
    EmbeddingModel,
    LoadedModel,
    ProgressCallback,
    TensorModel,
    UpscalerModel,
)
from .loader import (
    DTYPES_BY_NAME,
    check_scheduler,
    dtype_name,
    estimate_load_bytes,
    load_model,
    parse_dtype,
    release_cached_memory,
    scheduler_names,
    supported_dtypes,
)

__all__ = [
    "DTYPES_BY_NAME",
    "DiffusionModel",
    "EmbeddingModel",
    "LoadedModel",
    "ProgressCallback",
    "TensorModel",
    "UpscalerModel",
    "check_scheduler",
    "dtype_name",
    "estimate_load_bytes",
    "load_model",
    "parse_dtype",
    "release_cached_memory",
    "scheduler_names",
    "supported_dtypes",
]
