"""Model repository: finding, describing, validating and sizing models on disk."""

from .manifest import ManifestError, parse_manifest
from .repository import ModelRepository, check_model_name
from .safetensors_header import SafetensorsHeaderError
from .sizing import estimate_load_bytes, safetensors_dtypes, weights_bytes

__all__ = [
    "ManifestError",
    "ModelRepository",
    "SafetensorsHeaderError",
    "check_model_name",
    "estimate_load_bytes",
    "parse_manifest",
    "safetensors_dtypes",
    "weights_bytes",
]
