"""Model repository: finding, describing and validating models on disk."""

from .manifest import ManifestError, parse_manifest
from .repository import ModelRepository, check_model_name, safetensors_dtypes, weights_bytes
from .safetensors_header import SafetensorsHeaderError

__all__ = [
    "ManifestError",
    "ModelRepository",
    "SafetensorsHeaderError",
    "check_model_name",
    "parse_manifest",
    "safetensors_dtypes",
    "weights_bytes",
]
