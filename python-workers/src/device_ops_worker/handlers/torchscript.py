"""TorchScript archives: generic tensor models and image upscalers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import FailedPreconditionError, InvalidArgumentError
from ..model_entry import ModelEntry, TensorSpec
from .base import LoadOptions, TensorModel, UpscalerModel
from .torch_support import release_cached_memory

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_NAME = "output"


def load_script_module(entry: ModelEntry, device: torch.device, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """torch.jit.load runs TorchScript's own restricted unpickler, never Python
    pickle, so it is allowed whatever LoadOptions.allow_pickle says."""
    module = torch.jit.load(str(_archive_path(entry)), map_location=device)
    module.eval()
    if dtype.is_floating_point and _floating_dtypes(module) - {dtype}:
        module.to(dtype)
    return module


def _archive_path(entry: ModelEntry) -> Path:
    if entry.path.is_file():
        return entry.path
    if len(entry.weight_files) != 1:
        raise FailedPreconditionError(
            f"model '{entry.name}': a TorchScript model folder must hold exactly one archive, "
            f"found {len(entry.weight_files)}"
        )
    return entry.weight_files[0]


def _floating_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    tensors = [*module.parameters(), *module.buffers()]
    return {t.dtype for t in tensors if t.is_floating_point()}


class _ScriptModel:
    """What both TorchScript handlers share: the module and its lifetime."""

    entry: ModelEntry
    device: torch.device

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self._module: torch.jit.ScriptModule | None = module

    def modules(self) -> list[torch.nn.Module]:
        return [self._module] if self._module is not None else []

    def close(self) -> None:
        self._module = None
        release_cached_memory(self.device)

    def _loaded(self) -> torch.jit.ScriptModule:
        if self._module is None:
            raise FailedPreconditionError(f"model '{self.entry.name}': unloaded")
        return self._module


class TorchScriptTensorModel(_ScriptModel, TensorModel):
    """Safe to call from several threads: forward keeps no state between calls."""

    def __init__(
        self, entry: ModelEntry, device: torch.device, dtype: torch.dtype, module: torch.jit.ScriptModule
    ) -> None:
        TensorModel.__init__(self, entry, device, dtype)
        _ScriptModel.__init__(self, module)
        manifest = entry.manifest
        self.inputs: tuple[TensorSpec, ...] = manifest.inputs if manifest else ()
        self.outputs: tuple[TensorSpec, ...] = manifest.outputs if manifest else ()

    @classmethod
    def load(
        cls, entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions
    ) -> TorchScriptTensorModel:
        return cls(entry, device, dtype, load_script_module(entry, device, dtype))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = self._loaded()
        with torch.inference_mode():
            result = self._call(module, inputs)
            return self._named_outputs(result)

    def _call(self, module: torch.jit.ScriptModule, inputs: Mapping[str, np.ndarray]) -> Any:
        if self.inputs:
            missing = [spec.name for spec in self.inputs if spec.name not in inputs]
            if missing:
                raise InvalidArgumentError(f"inputs.{missing[0]}: required by model '{self.entry.name}'")
            return module(*(self._tensor(inputs[spec.name]) for spec in self.inputs))
        if len(inputs) == 1:
            return module(self._tensor(next(iter(inputs.values()))))
        # No declared order: TorchScript matches keyword arguments by name.
        return module(**{name: self._tensor(array) for name, array in inputs.items()})

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:
            # Arrays decoded straight from request bytes are read-only; torch
            # cannot share read-only memory safely, so this one copy is needed.
            array = array.copy()
        tensor = torch.from_numpy(array).to(self.device)
        return tensor.to(self.dtype) if tensor.is_floating_point() and self.dtype.is_floating_point else tensor

    def _named_outputs(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, torch.Tensor):
            name = self.outputs[0].name if len(self.outputs) == 1 else DEFAULT_OUTPUT_NAME
            named = {name: result}
        elif isinstance(result, Mapping):
            named = dict(result)
        elif isinstance(result, Sequence):
            named = self._name_sequence(result)
        else:
            raise FailedPreconditionError(f"model '{self.entry.name}': returned {type(result).__name__}, not tensors")
        declared = {spec.name: spec.dtype for spec in self.outputs}
        return {name: to_numpy(tensor, declared.get(name)) for name, tensor in named.items()}

    def _name_sequence(self, result: Sequence[Any]) -> dict[str, Any]:
        if not self.outputs:
            return {f"output_{index}": tensor for index, tensor in enumerate(result)}
        if len(result) != len(self.outputs):
            raise FailedPreconditionError(
                f"model '{self.entry.name}': returned {len(result)} outputs "
                f"but its manifest declares {len(self.outputs)}"
            )
        return {spec.name: tensor for spec, tensor in zip(self.outputs, result)}


def to_numpy(tensor: Any, declared_dtype: str | None) -> np.ndarray:
    """A CPU numpy array; floats come back in the declared dtype (float32 if
    none), whatever precision the model computed in."""
    if not isinstance(tensor, torch.Tensor):
        raise FailedPreconditionError(f"model output is {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach()
    if tensor.is_floating_point():
        target = getattr(torch, declared_dtype, None) if declared_dtype else None
        if not isinstance(target, torch.dtype) or not target.is_floating_point or target == torch.bfloat16:
            target = torch.float32
        tensor = tensor.to(target)
    return tensor.cpu().numpy()


class TorchScriptUpscaler(_ScriptModel, UpscalerModel):
    """Maps [1, 3, H, W] in [0, 1] to [1, 3, H*scale, W*scale]. Safe to call from several threads."""

    def __init__(
        self, entry: ModelEntry, device: torch.device, dtype: torch.dtype, module: torch.jit.ScriptModule, scale: int
    ) -> None:
        UpscalerModel.__init__(self, entry, device, dtype)
        _ScriptModel.__init__(self, module)
        self._scale = scale

    @classmethod
    def load(
        cls, entry: ModelEntry, device: torch.device, dtype: torch.dtype, options: LoadOptions
    ) -> TorchScriptUpscaler:
        scale = entry.manifest.scale if entry.manifest else None
        if not scale or scale < 2:
            raise FailedPreconditionError(f"model '{entry.name}': manifest.scale is required for an upscaler")
        return cls(entry, device, dtype, load_script_module(entry, device, dtype), scale)

    @property
    def scale(self) -> int:
        return self._scale

    def upscale(self, image: Any) -> Any:
        module = self._loaded()
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(self.device, self.dtype)
        with torch.inference_mode():
            result = module(pixels)
        expected = (1, 3, rgb.shape[0] * self._scale, rgb.shape[1] * self._scale)
        if not isinstance(result, torch.Tensor) or tuple(result.shape) != expected:
            shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            raise FailedPreconditionError(f"model '{self.entry.name}': returned {shape}, expected {expected}")
        out = (result[0].float().clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(out.permute(1, 2, 0).contiguous().cpu().numpy())
