"""Image decoding and the torch-free postprocessing operations (PIL only)."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping

from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from .errors import InvalidArgumentError

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG")
UPSCALE_FACTORS = (2, 4)
MAX_ENHANCE_FACTOR = 4.0

# Applied in this fixed order whatever order the caller's map has, so that the
# same request always gives the same pixels (protobuf maps are unordered).
_ENHANCERS: dict[str, type[ImageEnhance._Enhance]] = {
    "exposure": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "color": ImageEnhance.Color,
    "sharpness": ImageEnhance.Sharpness,
}


def decode_image(data: bytes, field: str, max_pixels: int, mode: str = "RGB") -> Image.Image:
    """Decode PNG or JPEG bytes into a fully loaded image in `mode` ("RGB" or "L")."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"unsupported mode {mode!r}")
    image = _open_header(data, field)
    width, height = image.size
    # Checked on the header alone, before a single pixel is decompressed.
    if width * height > max_pixels:
        image.close()
        raise InvalidArgumentError(f"{field}: {width}x{height} exceeds the {max_pixels}-pixel limit")
    try:
        image.load()
        # Phones store JPEGs sideways plus an orientation tag; callers expect
        # the picture the way every viewer shows it.
        upright = ImageOps.exif_transpose(image)
        return upright.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        logger.debug("%s: decoding failed: %s", field, exc)
        raise InvalidArgumentError(f"{field}: image data is truncated or corrupt") from None


def _open_header(data: bytes, field: str) -> Image.Image:
    if not data:
        raise InvalidArgumentError(f"{field}: empty image")
    try:
        # `formats` limits which decoders even look at the bytes.
        image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        # PIL's process-wide guard fired before ours could (its limit is lower
        # than the caller's); report it the same way.
        raise InvalidArgumentError(f"{field}: image exceeds the pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidArgumentError(f"{field}: not a PNG or JPEG image") from None
    if image.format not in ACCEPTED_FORMATS:
        image.close()
        raise InvalidArgumentError(f"{field}: not a PNG or JPEG image")
    return image


def check_scale(scale: int) -> None:
    if scale not in UPSCALE_FACTORS:
        raise InvalidArgumentError("scale: must be 2 or 4")


def lanczos_upscale(image: Image.Image, scale: int) -> Image.Image:
    check_scale(scale)
    width, height = image.size
    return image.resize((width * scale, height * scale), Image.Resampling.LANCZOS)


def enhance(image: Image.Image, adjustments: Mapping[str, float]) -> Image.Image:
    """Apply brightness ("exposure"), contrast, color and sharpness factors (1.0 = unchanged)."""
    check_adjustments(adjustments)
    result = image.convert("RGB")
    for name, enhancer in _ENHANCERS.items():
        if name in adjustments:
            result = enhancer(result).enhance(float(adjustments[name]))
    return result


def check_adjustments(adjustments: Mapping[str, float]) -> None:
    if not adjustments:
        raise InvalidArgumentError("adjustments: at least one of contrast, color, sharpness, exposure")
    for name, factor in adjustments.items():
        if name not in _ENHANCERS:
            raise InvalidArgumentError(
                f"adjustments.{name}: unknown adjustment (use contrast, color, sharpness or exposure)"
            )
        value = float(factor)
        if not math.isfinite(value) or not 0.0 <= value <= MAX_ENHANCE_FACTOR:
            raise InvalidArgumentError(f"adjustments.{name}: factor must be between 0 and {MAX_ENHANCE_FACTOR:g}")
