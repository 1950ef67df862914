"""`ImageSource`, images of any accepted kind read lazily, and the `ImageItem` each yields."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..validation import check_int
from ._convert import (
    array_pixels,
    array_scale,
    check_array_shape,
    check_tensor_shape,
    describe,
    pil_pixels,
    pixels_as,
    size_text,
    stacked,
    tensor_pixels,
    tensor_scale,
)
from ._files import file_label, file_not_found, image_files_in, read_image_file
from ._photo import check_single_frame, upright
from ._png16 import SixteenBitColour
from ._prefetch import PREFETCH_DEPTH, read_ahead, take_prefetched

__all__ = ["ImageItem", "ImageSource"]

_ACCEPTED_IMAGES = "a PIL image, a numpy array, a torch tensor or a path to an image file"
_ACCEPTED_ARGUMENTS = (
    "a PIL image, a numpy array, a torch tensor, a path to an image file or to a directory, "
    "or a list or other iterable of images"
)


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

    Notes
    -----
    With ``exif_orientation`` (the default), a PIL image or file whose EXIF orientation tag
    says it is stored turned is read upright: ``pixels``, outputs and :meth:`original` are
    upright, and their EXIF orientation is 1.

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
            path, with the file's ICC profile and EXIF data in its ``info``; a uint16 array
            for a 16-bit colour PNG), following the conversion rules of
            :mod:`latent_ot.images`.

        Examples
        --------
        >>> from PIL import Image
        >>> item = next(iter(ImageSource(Image.new("RGBA", (5, 3), (10, 20, 30, 40)))))
        >>> item.to_output(item.pixels.flip(0)).getpixel((0, 0))
        (30, 20, 10, 40)
        """
        return pixels_as(self._clipped_output_pixels(pixels), self._source)

    def original(self) -> Any:
        """Return a copy of the caller's image, bit for bit (a PIL image for a path; upright,
        as read, where its EXIF orientation was applied).

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
            found = f"dtype {pixels.dtype}" if is_tensor else f"type {describe(pixels)}"
            raise TypeError(f"{self.name}: output pixels must be a float torch tensor; got {found}")
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise ValueError(
                f"{self.name}: output pixels must be 3 x H x W; got shape {tuple(pixels.shape)}"
            )
        if pixels.shape[1:] != self.pixels.shape[1:]:
            # An alpha channel or a batch to stack back could not fit another size.
            raise ValueError(
                f"{self.name}: output pixels are {size_text(pixels.shape[1:])} px but the image"
                f" is {size_text(self.pixels.shape[1:])} px; crop them back first (crop_to)"
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
    prefetch : int, default 2
        For a directory or a list (or tuple): image files decoded ahead on a worker thread,
        at most, while the caller works on the current image; 0 reads each file when it is
        reached. Images, their order and errors are the same either way.
    exif_orientation : bool, default True
        Turn PIL images and files upright as their EXIF orientation tag says, as viewers
        show them (the tag is then 1). False reads the pixels as stored, so that results
        align pixel for pixel with them.
    on_unreadable : callable, optional
        Called with ``(path, error)`` for a file that cannot be read as an image, which is
        then left out and the others go on, as a folder run reports and skips such files.
        None (the default): the error is raised. Outputs of a source that left files out
        cannot be put back in its container by :meth:`collect`.

    Raises
    ------
    TypeError
        For an object of an unsupported kind or dtype.
    latent_ot.exceptions.ImageReadError
        While iterating, for a file or PIL image that is not one image: an animated or
        multi-page file is refused, naming its number of frames (a camera's MPO file reads
        as its photo, its first image).
    ValueError
        For an array or tensor of the wrong shape, or a directory without image files.
    FileNotFoundError
        For a path that does not exist.

    Notes
    -----
    An `ImageSource` given as ``images`` is used as it is, with its own name and options.
    Construction only inspects the container: images are decoded, and their values checked,
    while iterating. A one-shot iterator (a generator) can be iterated over only once, and is
    read one element at a time, never ahead.

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

    def __init__(
        self,
        images: Any,
        *,
        name: str = "images",
        prefetch: int = PREFETCH_DEPTH,
        exif_orientation: bool = True,
        on_unreadable: Callable[[Path, Exception], None] | None = None,
    ) -> None:
        if isinstance(images, ImageSource):  # read as its maker asked: a caller's options win
            self.__dict__.update(vars(images))
            return
        if not isinstance(exif_orientation, bool):
            raise TypeError(f"exif_orientation must be True or False, got {exif_orientation!r}")
        if on_unreadable is not None and not callable(on_unreadable):
            raise TypeError(f"on_unreadable must be callable or None, got {on_unreadable!r}")
        self.name = name
        self.prefetch = check_int(prefetch, "prefetch", minimum=0)
        self.exif_orientation = exif_orientation
        self.on_unreadable = on_unreadable
        self._images = images
        self._files: list[Path] | None = None
        self._count: int | None = None
        self._is_batch = False
        self._is_single = False
        self._iterated = False
        self._inspect()

    def __iter__(self) -> Iterator[ImageItem]:
        """Yield one `ImageItem` per image, decoding each only when it is reached (files of a
        directory or a list: up to ``prefetch`` ahead, on a worker thread)."""
        # Reading a list ahead costs no memory that it does not hold already; a generator's
        # elements could be large, or have side effects, and are taken one at a time.
        ahead = self._files is not None or isinstance(self._images, (list, tuple))
        if self.prefetch and ahead:
            items = read_ahead(self._named_elements(), self._item, self.prefetch)
        else:
            items = (self._item(element, name) for name, element in self._named_elements())
        for item in items:
            if item is not None:  # None: an unreadable file, reported and left out
                yield item

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
            return stacked(outputs, empty_like=self._images)
        return outputs

    def _item(self, element: Any, name: str, decoded: Any = None) -> ImageItem | None:
        """The item of one element; None for a file left out by ``on_unreadable``."""
        try:
            return _read_item(element, name, decoded, exif_orientation=self.exif_orientation)
        except (OSError, ValueError) as err:  # ImageReadError is a ValueError
            if self.on_unreadable is None or not isinstance(element, (str, os.PathLike)):
                raise
            self.on_unreadable(Path(element), err)
            return None

    def _inspect(self) -> None:
        images, name = self._images, self.name
        if isinstance(images, Image.Image):
            self._is_single = True
        elif isinstance(images, np.ndarray):
            check_array_shape(images, name, allow_batch=True)
            array_scale(images.dtype, name)
            self._is_batch = images.ndim == 4
            self._is_single = not self._is_batch
        elif isinstance(images, torch.Tensor):
            check_tensor_shape(images, name, allow_batch=True)
            tensor_scale(images.dtype, name)
            self._is_batch = images.ndim == 4
            self._is_single = not self._is_batch
        elif isinstance(images, (str, os.PathLike)):
            self._inspect_path(Path(images))
        elif isinstance(images, (bytes, bytearray, Mapping)):
            # Iterable, but their elements are not images: say so instead of failing on them.
            raise TypeError(f"{name} is of type {describe(images)}; expected {_ACCEPTED_ARGUMENTS}")
        else:
            try:
                iter(images)
            except TypeError:
                raise TypeError(
                    f"{name} is of type {describe(images)}; expected {_ACCEPTED_ARGUMENTS}"
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
            self._files = image_files_in(path, self.name)
        elif path.exists():
            self._is_single = True
        else:
            raise file_not_found(path, self.name)

    def _named_elements(self) -> Iterator[tuple[str, Any]]:
        images = self._images
        if self._is_single:
            yield file_label(self.name, images), images
        elif self._is_batch:
            for index in range(len(images)):
                yield f"{self.name}[{index}]", images[index]
        elif self._files is not None:
            for index, path in enumerate(self._files):
                yield file_label(f"{self.name}[{index}]", path), path
        else:
            if iter(images) is images:
                if self._iterated:
                    raise ValueError(
                        f"{self.name} is a one-shot iterator (such as a generator) that was "
                        "already consumed; pass a list to read the images more than once"
                    )
                self._iterated = True
            for index, element in enumerate(images):
                yield file_label(f"{self.name}[{index}]", element), element


def _read_item(
    element: Any,
    name: str,
    decoded: Image.Image | SixteenBitColour | None = None,
    *,
    exif_orientation: bool = True,
) -> ImageItem:
    """One element of a source as an `ImageItem`, its template the element (decoded if a path;
    ``decoded``: the path's image, decoded ahead), upright if ``exif_orientation``."""
    if isinstance(element, (str, os.PathLike)):
        image = decoded if decoded is not None else take_prefetched(element)
        if image is None:  # not decoded ahead, or could not be: read it now, errors and all
            image = read_image_file(Path(element), name)
        if isinstance(image, SixteenBitColour):  # PIL has no 16-bit colour mode: an array
            deep = image.upright() if exif_orientation else image
            element = deep.array()
        else:
            element = image
    if isinstance(element, Image.Image):
        check_single_frame(element, name)
        image = upright(element) if exif_orientation else element
        return ImageItem(pil_pixels(image, name), name, image)
    if isinstance(element, np.ndarray):
        return ImageItem(array_pixels(element, name), name, element)
    if isinstance(element, torch.Tensor):
        return ImageItem(tensor_pixels(element, name), name, element)
    raise TypeError(f"{name} is of type {describe(element)}; expected {_ACCEPTED_IMAGES}")
