"""The torch model layer: loading models and running them. No grpc here.

The diffusers and transformers handlers are imported when a model of their
format is first loaded (see ``loader``), because importing those libraries
takes seconds; nothing here imports them.
"""

from .base import (
    DiffusionModel,
    EmbeddingModel,
    LoadedModel,
    LoadOptions,
    ProgressCallback,
    TensorModel,
    UpscalerModel,
)
from .loader import load_model
from .schedulers import check_scheduler, scheduler_names
from .torch_support import DTYPES_BY_NAME, dtype_name, parse_dtype, release_cached_memory, supported_dtypes

__all__ = [
    "DTYPES_BY_NAME",
    "DiffusionModel",
    "EmbeddingModel",
    "LoadOptions",
    "LoadedModel",
    "ProgressCallback",
    "TensorModel",
    "UpscalerModel",
    "check_scheduler",
    "dtype_name",
    "load_model",
    "parse_dtype",
    "release_cached_memory",
    "scheduler_names",
    "supported_dtypes",
]
