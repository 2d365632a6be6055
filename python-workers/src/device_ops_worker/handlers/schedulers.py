"""Diffusion scheduler names a request may ask for.

Free of diffusers (which takes seconds to import), so that requests are
checked before any model, or diffusers itself, is loaded.
"""

from __future__ import annotations

import importlib.util

from ..errors import InvalidArgumentError

_SCHEDULER_NAMES = (
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
)


def scheduler_names() -> tuple[str, ...]:
    """Diffusion schedulers a request may name."""
    # diffusers' LMSDiscreteScheduler is a placeholder that fails on use without scipy.
    if importlib.util.find_spec("scipy") is not None:
        return (*_SCHEDULER_NAMES, "LMSDiscreteScheduler")
    return _SCHEDULER_NAMES


def check_scheduler(name: str | None) -> None:
    if name is not None and name not in scheduler_names():
        raise InvalidArgumentError(f"scheduler: '{name}' is not one of {', '.join(sorted(scheduler_names()))}")
