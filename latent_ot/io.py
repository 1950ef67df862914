"""Turn anything image-like into float tensors, and results back into the caller's own kind.

`ImageSource` accepts a PIL image, a numpy array, a torch tensor, a path to an image file or to
a directory of them, a 4-D batch, or a list (or any iterable, generators included) of single
images. Iterating over it decodes one image at a time and yields an `ImageItem`, whose
``pixels`` are a ``3 x H x W`` float32 tensor in [0, 1] and whose ``to_output`` turns result
pixels back into the kind, dtype, layout and mode of that input. `ImageSource.collect` puts the
results back in the input's container: one image for one image, a stacked batch for a batch, a
list otherwise.

Conversion rules
----------------
* Integer pixels are divided by their largest value: 255 for uint8 and 65535 for uint16, and
  for the 16-bit grayscale PIL modes ``I;16`` and ``I`` (PIL opens 16-bit PNGs in one of them).
  Float pixels (float16, float32, float64, PIL mode ``F``) must already lie in [0, 1]; float64
  goes through float32, so it comes back to within about 6e-8. Outputs are clipped to [0, 1]
  and integer outputs are rounded.
* Grayscale images (modes ``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``; ``H x W`` and
  ``H x W x 1`` arrays; ``1 x H x W`` tensors) are replicated to three channels, and returned as
  grayscale through the ITU-R 601-2 luminance ``0.299 R + 0.587 G + 0.114 B``, which gives a
  gray result back exactly.
* An alpha channel (modes ``LA``, ``RGBA``, ``PA``, a palette with transparency, the fourth
  channel of an array or a tensor) is set aside and reattached unchanged to the output.
* Palette images (``P``, ``PA``) are returned as ``RGB``, or as ``RGBA`` when they have
  transparency. Bilevel images (``1``) are returned as ``L``: thresholding the result back to
  two levels would discard the restoration. ``CMYK`` and ``YCbCr`` images go through PIL's
  conversions to RGB and back, which are not exact inverses of each other.
* EXIF orientation is not applied: outputs must align pixel for pixel with the stored inputs.
  Call ``PIL.ImageOps.exif_transpose`` first if you want upright images.

Directories contribute their image files (by extension: png, jpg, jpeg, bmp, tif, tiff, webp,
ppm, pgm, pnm; hidden files are skipped), sorted by name, without recursing into
subdirectories. Multi-frame files contribute their first frame.

Also here: `pad_to_multiple` and `crop_to`, which fit image batches to an autoencoder's
downsampling factor and back.
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from .exceptions import ImageReadError

__all__ = [
    "ImageItem",
    "ImageSource",
    "batch_name",
    "batches_by_size",
    "crop_to",
    "pad_to_multiple",
]

T = TypeVar("T")

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)

_ACCEPTED_IMAGES = "a PIL image, a numpy array, a torch tensor or a path to an image file"
_ACCEPTED_ARGUMENTS = (
    "a PIL image, a numpy array, a torch tensor, a path to an image file or to a directory, "
    "or a list or other iterable of images"
)
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


@dataclass(eq=False)
class ImageItem:
    """One image as float pixels, with what it takes to return a result in the caller's kind.

    Items come from iterating over an `ImageSource`; they are not meant to be built directly.

    Attributes
    ----------
    pixels : torch.Tensor
        ``3 x H x W`` float32 values in [0, 1]; on the CPU, or on the device of an input tensor.
    name : str
        ``"images[3]"``, or the file path: used in every error message about this image.

    Examples
    --------
    >>> import numpy as np
    >>> item = next(iter(ImageSource(np.full((4, 6), 255, dtype=np.uint8))))
    >>> item.name, tuple(item.pixels.shape), item.pixels.max().item()
    ('images', (3, 4, 6), 1.0)
    >>> item.to_output(item.pixels / 2)[0]
    array([128, 128, 128, 128, 128, 128], dtype=uint8)
    """

    pixels: torch.Tensor
    name: str
    # The caller's single image (the decoded PIL image for a path): the template for outputs.
    _source: Any = field(repr=False)

    def to_output(self, pixels: torch.Tensor) -> Any:
        """Return result pixels as the caller's kind of image.

        Parameters
        ----------
        pixels : torch.Tensor
            ``3 x H x W`` floats of the input's size; values outside [0, 1] are clipped.

        Returns
        -------
        PIL.Image.Image or numpy.ndarray or torch.Tensor
            The same kind, dtype, device, layout and mode as the input (a PIL image for a
            path), following the conversion rules of this module.

        Examples
        --------
        >>> from PIL import Image
        >>> item = next(iter(ImageSource(Image.new("RGBA", (5, 3), (10, 20, 30, 40)))))
        >>> item.to_output(item.pixels.flip(0)).getpixel((0, 0))
        (30, 20, 10, 40)
        """
        unit = self._clipped_output_pixels(pixels)
        source = self._source
        if isinstance(source, Image.Image):
            return _pil_from_pixels(unit, source)
        if isinstance(source, np.ndarray):
            return _array_from_pixels(unit, source)
        return _tensor_from_pixels(unit, source)

    def original(self) -> Any:
        """Return a copy of the caller's image, bit for bit (a PIL image for a path).

        Examples
        --------
        >>> import torch
        >>> batch = torch.rand(2, 3, 4, 4)
        >>> items = list(ImageSource(batch))
        >>> torch.equal(items[1].original(), batch[1])
        True
        """
        if isinstance(self._source, torch.Tensor):
            return self._source.detach().clone()
        return self._source.copy()

    def _clipped_output_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor) or not pixels.is_floating_point():
            is_tensor = isinstance(pixels, torch.Tensor)
            found = f"dtype {pixels.dtype}" if is_tensor else f"type {_describe(pixels)}"
            raise TypeError(f"{self.name}: output pixels must be a float torch tensor; got {found}")
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise ValueError(
                f"{self.name}: output pixels must be 3 x H x W; got shape {tuple(pixels.shape)}"
            )
        if pixels.shape[1:] != self.pixels.shape[1:]:
            # An alpha channel or a batch to stack back could not fit another size.
            raise ValueError(
                f"{self.name}: output pixels are {_size_text(pixels.shape[1:])} px but the image"
                f" is {_size_text(self.pixels.shape[1:])} px; crop them back first (crop_to)"
            )
        unit = pixels.detach().to(torch.float32)
        if torch.isnan(unit).any():
            raise ValueError(f"{self.name}: output pixels contain NaN")
        return unit.clamp(0.0, 1.0)


class ImageSource:
    """Images of any accepted kind, decoded lazily one at a time.

    Parameters
    ----------
    images : PIL.Image.Image, numpy.ndarray, torch.Tensor, str, os.PathLike or iterable
        One image (a PIL image; an ``H x W`` or ``H x W x C`` array; a ``C x H x W`` tensor;
        a path to an image file), a batch (an ``N x H x W x C`` array or an ``N x C x H x W``
        tensor), a path to a directory of image files, or a list, tuple or other iterable of
        single images, which may differ in size. ``C`` is 1, 3 or 4. Dtypes: uint8, uint16,
        float16, float32 or float64 (bfloat16 too for tensors), floats in [0, 1].
    name : str, default "images"
        What error messages call the argument; elements are called ``name[i]``, files by
        their path.

    Raises
    ------
    TypeError
        For an object of an unsupported kind or dtype.
    ValueError
        For an array or tensor of the wrong shape, or a directory without image files.
    FileNotFoundError
        For a path that does not exist.

    Notes
    -----
    Construction only inspects the container: images are decoded, and their values checked,
    while iterating. A one-shot iterator (a generator) can be iterated over only once.

    Examples
    --------
    >>> import numpy as np
    >>> source = ImageSource([np.zeros((4, 6, 3), np.uint8), np.ones((5, 5), np.float32)])
    >>> [(item.name, tuple(item.pixels.shape)) for item in source]
    [('images[0]', (3, 4, 6)), ('images[1]', (3, 5, 5))]
    >>> outputs = source.collect([item.to_output(item.pixels) for item in source])
    >>> [output.shape for output in outputs]
    [(4, 6, 3), (5, 5)]
    """

    def __init__(self, images: Any, *, name: str = "images") -> None:
        self.name = name
        self._images = images
        self._files: list[Path] | None = None
        self._count: int | None = None
        self._is_batch = False
        self._is_single = False
        self._iterated = False
        self._inspect()

    def __iter__(self) -> Iterator[ImageItem]:
        """Yield one `ImageItem` per image, decoding each only when it is reached."""
        for name, element in self._named_elements():
            yield _read_item(element, name)

    def collect(self, outputs: list) -> Any:
        """Assemble per-image outputs in the input's container kind.

        Parameters
        ----------
        outputs : list
            One output per image, in order, from `ImageItem.to_output` or
            `ImageItem.original`.

        Returns
        -------
        object
            The single output for a single image; a stacked array or tensor (same dtype,
            device and layout) for a batch; a list for anything else.

        Examples
        --------
        >>> import torch
        >>> source = ImageSource(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
        >>> source.collect([item.to_output(1 - item.pixels) for item in source]).unique()
        tensor([255], dtype=torch.uint8)
        """
        outputs = list(outputs)
        if self._count is not None and len(outputs) != self._count:
            raise ValueError(
                f"{self.name} holds {self._count} image(s) but {len(outputs)} output(s) were given"
            )
        if self._is_single:
            return outputs[0]
        if self._is_batch:
            return _stacked(outputs, empty_like=self._images)
        return outputs

    def _inspect(self) -> None:
        images, name = self._images, self.name
        if isinstance(images, Image.Image):
            self._is_single = True
        elif isinstance(images, np.ndarray):
            _check_array_shape(images, name, allow_batch=True)
            _array_scale(images.dtype, name)
            self._is_batch = images.ndim == 4
            self._is_single = not self._is_batch
        elif isinstance(images, torch.Tensor):
            _check_tensor_shape(images, name, allow_batch=True)
            _tensor_scale(images.dtype, name)
            self._is_batch = images.ndim == 4
            self._is_single = not self._is_batch
        elif isinstance(images, (str, os.PathLike)):
            self._inspect_path(Path(images))
        elif isinstance(images, (bytes, bytearray, Mapping)):
            # Iterable, but their elements are not images: say so instead of failing on them.
            raise TypeError(
                f"{name} is of type {_describe(images)}; expected {_ACCEPTED_ARGUMENTS}"
            )
        else:
            try:
                iter(images)
            except TypeError:
                raise TypeError(
                    f"{name} is of type {_describe(images)}; expected {_ACCEPTED_ARGUMENTS}"
                ) from None
        if self._is_single:
            self._count = 1
        elif self._is_batch:
            self._count = len(images)
        elif self._files is not None:
            self._count = len(self._files)
        elif isinstance(images, Sized) and not isinstance(images, Iterator):
            self._count = len(images)

    def _inspect_path(self, path: Path) -> None:
        if not str(self._images):
            raise ValueError(f"{self.name} is an empty string; expected {_ACCEPTED_ARGUMENTS}")
        if path.is_dir():
            self._files = _image_files_in(path, self.name)
        elif path.exists():
            self._is_single = True
        else:
            raise _file_not_found(path, self.name)

    def _named_elements(self) -> Iterator[tuple[str, Any]]:
        images = self._images
        if self._is_single:
            yield _file_label(self.name, images), images
        elif self._is_batch:
            for index in range(len(images)):
                yield f"{self.name}[{index}]", images[index]
        elif self._files is not None:
            for index, path in enumerate(self._files):
                yield _file_label(f"{self.name}[{index}]", path), path
        else:
            if iter(images) is images:
                if self._iterated:
                    raise ValueError(
                        f"{self.name} is a one-shot iterator (such as a generator) that was "
                        "already consumed; pass a list to read the images more than once"
                    )
                self._iterated = True
            for index, element in enumerate(images):
                yield _file_label(f"{self.name}[{index}]", element), element


# Reading: one element -> ImageItem.


def _read_item(element: Any, name: str) -> ImageItem:
    if isinstance(element, Image.Image):
        return _item_from_pil(element, name)
    if isinstance(element, np.ndarray):
        return _item_from_array(element, name)
    if isinstance(element, torch.Tensor):
        return _item_from_tensor(element, name)
    if isinstance(element, (str, os.PathLike)):
        return _item_from_pil(_read_image_file(Path(element), name), name)
    raise TypeError(f"{name} is of type {_describe(element)}; expected {_ACCEPTED_IMAGES}")


def _item_from_array(array: np.ndarray, name: str, source: Any = None) -> ImageItem:
    _check_array_shape(array, name, allow_batch=False)
    scale = _array_scale(array.dtype, name)
    if scale == 1.0:
        _check_unit_range(array.min(), array.max(), name)
    channels_last = array if array.ndim == 3 else array[..., None]
    if channels_last.shape[-1] == 1:
        colour = np.broadcast_to(channels_last, (*channels_last.shape[:2], 3))
    else:
        colour = channels_last[..., :3]  # alpha is reattached from the source on output
    unit = colour.astype(np.float32) / np.float32(scale)
    pixels = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))
    return ImageItem(pixels, name, array if source is None else source)


def _item_from_tensor(tensor: torch.Tensor, name: str) -> ImageItem:
    _check_tensor_shape(tensor, name, allow_batch=False)
    scale = _tensor_scale(tensor.dtype, name)
    if scale == 1.0:
        _check_unit_range(*torch.aminmax(tensor.detach()), name)
    colour = tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor[:3]
    pixels = colour.detach().to(torch.float32) / scale  # a new tensor, even for float32 input
    return ImageItem(pixels, name, tensor)


def _item_from_pil(image: Image.Image, name: str) -> ImageItem:
    if image.width == 0 or image.height == 0:
        raise ValueError(
            f"{name} is empty ({image.width} x {image.height} px); expected at least 1 x 1"
        )
    return _item_from_array(_pil_as_array(image, name), name, source=image)


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


def _file_label(name: str, element: Any) -> str:
    """``images[2] (photo.png)``: the argument and, for a file, its path."""
    if isinstance(element, (str, os.PathLike)):
        return f"{name} ({os.fspath(element)})"
    return name


def _read_image_file(path: Path, name: str) -> Image.Image:
    if path.is_dir():
        raise ImageReadError(
            f"{name} is a directory; a directory is accepted only as the whole argument"
        )
    if not path.exists():
        raise _file_not_found(path, name)
    try:
        with warnings.catch_warnings():
            # PIL only warns below twice its limit; refuse those files as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()  # survives closing the file, which multi-frame formats need
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(
            f"{name} has more pixels than PIL.Image.MAX_IMAGE_PIXELS "
            f"({Image.MAX_IMAGE_PIXELS}), PIL's guard against decompression bombs; if you trust "
            "this file, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"{name} could not be read as an image: {err}") from err


def _image_files_in(directory: Path, name: str) -> list[Path]:
    files = sorted(
        (
            path
            for path in directory.iterdir()
            if path.suffix.lower() in IMAGE_EXTENSIONS
            and not path.name.startswith(".")  # such as macOS's "._photo.png" metadata files
            and path.is_file()
        ),
        key=lambda path: path.name,
    )
    if not files:
        extensions = ", ".join(sorted(extension[1:] for extension in IMAGE_EXTENSIONS))
        raise ValueError(
            f"{name}: {directory} contains no image files (by extension: {extensions})"
        )
    return files


def _file_not_found(path: Path, name: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"{name}: no such image file or directory", str(path))


# Checks shared by reading and writing.


def _check_array_shape(array: np.ndarray, name: str, *, allow_batch: bool) -> None:
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


def _check_tensor_shape(tensor: torch.Tensor, name: str, *, allow_batch: bool) -> None:
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


def _array_scale(dtype: np.dtype, name: str) -> float:
    """The value that stands for white: 255 or 65535 for integers, 1 for floats."""
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return 255.0 if dtype.itemsize == 1 else 65535.0
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return 1.0
    raise TypeError(f"{name} has dtype {dtype}; expected {_ACCEPTED_DTYPES}")


def _tensor_scale(dtype: torch.dtype, name: str) -> float:
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
    scale = _array_scale(template.dtype, "output")
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
        return Image.frombytes(mode, template.size, data)
    values = _quantized(unit, gray=mode in _GRAY_EIGHT_BIT_MODES, scale=255.0)
    values = values.cpu().numpy().transpose(1, 2, 0).astype(np.uint8)
    if _has_alpha(template):
        alpha = template if mode in ("LA", "RGBA") else template.convert("RGBA")
        values = np.concatenate([values, np.asarray(alpha.getchannel("A"))[..., None]], axis=-1)
    if values.shape[-1] == 1:
        values = values[..., 0]
    # Image.fromarray reads H x W, and 2, 3 or 4 channels, as L, LA, RGB or RGBA.
    image = Image.fromarray(np.ascontiguousarray(values))
    return image.convert(mode) if mode in ("CMYK", "YCbCr") else image


def _stacked(outputs: list, *, empty_like: np.ndarray | torch.Tensor) -> Any:
    if isinstance(empty_like, np.ndarray):
        return np.stack(outputs) if outputs else empty_like[:0].copy()
    return torch.stack(outputs) if outputs else empty_like[:0].detach().clone()


def _size_text(size: tuple[int, ...] | torch.Size) -> str:
    return " x ".join(str(length) for length in size)


def _describe(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


_MOVED_TO_ENCODING = ("batch_name", "batches_by_size", "crop_to", "pad_to_multiple")


def __getattr__(name: str) -> Any:
    # Transitional: the tensor geometry now lives in latent_ot.encoding.
    if name in _MOVED_TO_ENCODING:
        from . import encoding

        return getattr(encoding, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
