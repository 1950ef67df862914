"""Pixels of one image, whatever its kind, as ``3 x H x W`` float32 in [0, 1], and back.

Reading checks the shape, dtype and value range of an array, tensor or PIL image and scales
its pixels to [0, 1]; writing turns clipped float pixels into the caller's kind, dtype, layout
and mode, reattaching an alpha channel that reading set aside. The rules are those of
:mod:`latent_ot.images`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..exceptions import ImageReadError
from ._photo import carry_metadata

_ACCEPTED_DTYPES = "uint8, uint16, float16, float32 or float64"
_CHANNELS_EXPECTED = "expected 1, 3 or 4 (channels last for numpy, first for tensors)"

# PIL modes read through numpy, with the dtype PIL stores their pixels in.
_NUMERIC_MODE_DTYPES = {
    "I;16": "<u2",
    "I;16L": "<u2",
    "I;16B": ">u2",
    "I;16N": "=u2",
    "I": "=i4",
    "F": "=f4",
}
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")
_GRAY_EIGHT_BIT_MODES = ("1", "L", "LA")

_TENSOR_SCALES = {
    torch.uint8: 255.0,
    torch.float16: 1.0,
    torch.bfloat16: 1.0,
    torch.float32: 1.0,
    torch.float64: 1.0,
}
if hasattr(torch, "uint16"):  # torch >= 2.3
    _TENSOR_SCALES[torch.uint16] = 65535.0


# Reading: one image -> 3 x H x W float32 pixels.


def array_pixels(array: np.ndarray, name: str) -> torch.Tensor:
    """``3 x H x W`` float32 pixels in [0, 1] of an ``H x W`` or ``H x W x C`` array."""
    check_array_shape(array, name, allow_batch=False)
    scale = array_scale(array.dtype, name)
    if scale == 1.0:
        _check_unit_range(array.min(), array.max(), name)
    channels_last = array if array.ndim == 3 else array[..., None]
    if channels_last.shape[-1] == 1:
        colour = np.broadcast_to(channels_last, (*channels_last.shape[:2], 3))
    else:
        colour = channels_last[..., :3]  # alpha is reattached from the source on output
    unit = colour.astype(np.float32) / np.float32(scale)
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))


def tensor_pixels(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``3 x H x W`` float32 pixels in [0, 1] of a ``C x H x W`` tensor, on its device."""
    check_tensor_shape(tensor, name, allow_batch=False)
    scale = tensor_scale(tensor.dtype, name)
    if scale == 1.0:
        _check_unit_range(*torch.aminmax(tensor.detach()), name)
    colour = tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor[:3]
    return colour.detach().to(torch.float32) / scale  # a new tensor, even for float32 input


def pil_pixels(image: Image.Image, name: str) -> torch.Tensor:
    """``3 x H x W`` float32 pixels in [0, 1] of a PIL image of an accepted mode."""
    if image.width == 0 or image.height == 0:
        raise ValueError(
            f"{name} is empty ({image.width} x {image.height} px); expected at least 1 x 1"
        )
    return array_pixels(_pil_as_array(image, name), name)


def _pil_as_array(image: Image.Image, name: str) -> np.ndarray:
    """Pixels of a PIL image as an H x W, H x W x 3 or H x W x 4 array of an accepted dtype."""
    mode = image.mode
    if mode == "I":
        return _sixteen_bit_values(np.asarray(image), name)
    if mode in _NUMERIC_MODE_DTYPES:
        return np.asarray(image)
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"))
    if mode == "LA":
        return np.asarray(image)[..., 0]
    if mode in ("RGB", "RGBA"):
        return np.asarray(image)
    if mode in ("P", "PA"):
        return np.asarray(image.convert("RGBA" if _has_alpha(image) else "RGB"))
    if mode in ("CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"))
    accepted = ", ".join((*_EIGHT_BIT_MODES, *_NUMERIC_MODE_DTYPES))
    raise ImageReadError(f"{name} is a PIL image in mode {mode!r}; expected one of {accepted}")


def _sixteen_bit_values(values: np.ndarray, name: str) -> np.ndarray:
    lowest, highest = int(values.min()), int(values.max())
    if lowest < 0 or highest > 65535:
        raise ValueError(
            f"{name} is a 32-bit integer PIL image (mode 'I') with values in "
            f"[{lowest}, {highest}]; expected 16-bit values in [0, 65535]"
        )
    return values.astype(np.uint16)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("LA", "RGBA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


# Checks shared by reading and writing.


def check_array_shape(array: np.ndarray, name: str, *, allow_batch: bool) -> None:
    """Refuse arrays that are not ``H x W [x C]`` (or a batch of them), ``C`` in 1, 3, 4."""
    if array.ndim not in ((2, 3, 4) if allow_batch else (2, 3)):
        expected = "H x W or H x W x C" + (", or a batch N x H x W x C" if allow_batch else "")
        if array.ndim == 4:
            expected += " (a batch is accepted only as the whole argument)"
        raise ValueError(
            f"{name} is a {array.ndim}-D array of shape {array.shape}; expected {expected}"
        )
    if array.ndim >= 3 and array.shape[-1] not in (1, 3, 4):
        hint = ""
        if array.shape[-3] in (1, 3, 4):
            axes = "1, 2, 0" if array.ndim == 3 else "0, 2, 3, 1"
            hint = f"; shape {array.shape} looks channels-first: use array.transpose({axes})"
        raise ValueError(f"{name} has {array.shape[-1]} channels; {_CHANNELS_EXPECTED}{hint}")
    size = array.shape[:2] if array.ndim in (2, 3) else array.shape[1:3]
    _check_not_empty(size, array.shape, name)


def check_tensor_shape(tensor: torch.Tensor, name: str, *, allow_batch: bool) -> None:
    """Refuse tensors that are not ``C x H x W`` (or a batch of them), ``C`` in 1, 3, 4."""
    shape = tuple(tensor.shape)
    if tensor.ndim not in ((3, 4) if allow_batch else (3,)):
        expected = "C x H x W" + (" or a batch N x C x H x W" if allow_batch else "")
        if tensor.ndim == 2:
            expected += " (use tensor[None] for a grayscale image)"
        elif tensor.ndim == 4:
            expected += " (a batch is accepted only as the whole argument)"
        raise ValueError(
            f"{name} is a {tensor.ndim}-D tensor of shape {shape}; expected {expected}"
        )
    if shape[-3] not in (1, 3, 4):
        hint = ""
        if shape[-1] in (1, 3, 4):
            axes = "2, 0, 1" if tensor.ndim == 3 else "0, 3, 1, 2"
            hint = f"; shape {shape} looks channels-last: use tensor.permute({axes})"
        raise ValueError(f"{name} has {shape[-3]} channels; {_CHANNELS_EXPECTED}{hint}")
    _check_not_empty(shape[-2:], shape, name)


def _check_not_empty(size: tuple[int, ...], shape: tuple[int, ...], name: str) -> None:
    if 0 in size:
        raise ValueError(
            f"{name} is empty (shape {tuple(shape)}); expected images of at least 1 x 1 pixels"
        )


def array_scale(dtype: np.dtype, name: str) -> float:
    """The value that stands for white: 255 or 65535 for integers, 1 for floats."""
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return 255.0 if dtype.itemsize == 1 else 65535.0
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return 1.0
    raise TypeError(f"{name} has dtype {dtype}; expected {_ACCEPTED_DTYPES}")


def tensor_scale(dtype: torch.dtype, name: str) -> float:
    """As :func:`array_scale`, for a tensor dtype (bfloat16 and, on torch >= 2.3, uint16)."""
    if dtype not in _TENSOR_SCALES:
        raise TypeError(f"{name} has dtype {dtype}; expected {_ACCEPTED_DTYPES} (or bfloat16)")
    return _TENSOR_SCALES[dtype]


def _check_unit_range(lowest: float, highest: float, name: str) -> None:
    # min and max propagate NaN and reach inf: two reductions check everything.
    lowest, highest = float(lowest), float(highest)
    if math.isnan(lowest) or math.isnan(highest):
        raise ValueError(f"{name} contains NaN; expected float values in [0, 1]")
    if math.isinf(lowest) or math.isinf(highest):
        raise ValueError(f"{name} contains infinite values; expected float values in [0, 1]")
    if lowest < 0.0 or highest > 1.0:
        raise ValueError(
            f"{name} has float values in [{lowest:.4g}, {highest:.4g}]; expected [0, 1] "
            "(scale floats to [0, 1], or pass uint8 or uint16 pixels)"
        )


# Writing: clipped 3 x H x W float pixels -> the caller's kind.


def pixels_as(unit: torch.Tensor, template: Any) -> Any:
    """Clipped ``3 x H x W`` float32 pixels as the kind, dtype and mode of ``template``."""
    if isinstance(template, Image.Image):
        return _pil_from_pixels(unit, template)
    if isinstance(template, np.ndarray):
        return _array_from_pixels(unit, template)
    return _tensor_from_pixels(unit, template)


def _quantized(unit: torch.Tensor, *, gray: bool, scale: float) -> torch.Tensor:
    """``C x H x W`` float values on the output's scale, rounded for integer outputs."""
    values = _luminance(unit)[None] if gray else unit
    return values if scale == 1.0 else torch.round(values * scale)


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    red, green, blue = rgb
    # 0.299 R + 0.587 G + 0.114 B, written so that R = G = B gives G back exactly.
    return green + 0.299 * (red - green) + 0.114 * (blue - green)


def _array_from_pixels(unit: torch.Tensor, template: np.ndarray) -> np.ndarray:
    channels = template.shape[-1] if template.ndim == 3 else 1
    scale = array_scale(template.dtype, "output")
    values = _quantized(unit, gray=channels == 1, scale=scale).cpu().numpy()
    values = values.transpose(1, 2, 0).astype(template.dtype, order="C")
    if channels == 4:
        values = np.concatenate([values, template[..., 3:]], axis=-1)
    return values.reshape(template.shape)


def _tensor_from_pixels(unit: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    channels = template.shape[0]
    scale = _TENSOR_SCALES[template.dtype]
    values = _quantized(unit.to(template.device), gray=channels == 1, scale=scale)
    values = values.to(template.dtype)
    if channels == 4:
        values = torch.cat([values, template[3:].detach()])
    return values


def _pil_from_pixels(unit: torch.Tensor, template: Image.Image) -> Image.Image:
    mode = template.mode
    if mode in _NUMERIC_MODE_DTYPES:
        scale = 1.0 if mode == "F" else 65535.0
        values = _quantized(unit, gray=True, scale=scale)[0].cpu().numpy()
        data = values.astype(_NUMERIC_MODE_DTYPES[mode]).tobytes()
        return carry_metadata(Image.frombytes(mode, template.size, data), template)
    values = _quantized(unit, gray=mode in _GRAY_EIGHT_BIT_MODES, scale=255.0)
    values = values.cpu().numpy().transpose(1, 2, 0).astype(np.uint8)
    if _has_alpha(template):
        alpha = template if mode in ("LA", "RGBA") else template.convert("RGBA")
        values = np.concatenate([values, np.asarray(alpha.getchannel("A"))[..., None]], axis=-1)
    if values.shape[-1] == 1:
        values = values[..., 0]
    # Image.fromarray reads H x W, and 2, 3 or 4 channels, as L, LA, RGB or RGBA.
    image = Image.fromarray(np.ascontiguousarray(values))
    image = image.convert(mode) if mode in ("CMYK", "YCbCr") else image
    return carry_metadata(image, template)


def stacked(outputs: list, *, empty_like: np.ndarray | torch.Tensor) -> Any:
    """Per-image outputs stacked into a batch like ``empty_like`` (a copy of it when empty)."""
    if isinstance(empty_like, np.ndarray):
        return np.stack(outputs) if outputs else empty_like[:0].copy()
    return torch.stack(outputs) if outputs else empty_like[:0].detach().clone()


def size_text(size: tuple[int, ...] | torch.Size) -> str:
    """``"4 x 6"``: a size as error messages write it."""
    return " x ".join(str(length) for length in size)


def describe(value: Any) -> str:
    """The qualified name of ``value``'s type, without ``builtins.``."""
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
