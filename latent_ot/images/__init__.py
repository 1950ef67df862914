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
* 16-bit colour PNG files, which PIL would read as 8-bit, are read as uint16 ``H x W x 3``
  (or ``x 4``) arrays: their results are uint16 arrays, written back as 16-bit PNG files.

Photos are read as viewers show them (see :mod:`latent_ot.images._photo`): a PIL image or
file whose EXIF orientation tag says it is stored turned is turned upright, and its tag set
to 1 (``ImageSource(..., exif_orientation=False)`` reads the pixels as stored); results keep
the input's ICC profile and EXIF data, which writing stores in JPEG, PNG, WebP and TIFF files.
An animated or multi-page file (GIF, WebP, PNG, TIFF) is refused with an error naming its
number of frames; a camera's MPO file (a JPEG with previews) reads as its first image.

Directories contribute their image files (by extension: png, jpg, jpeg, bmp, tif, tiff, webp,
ppm, pgm, pnm; hidden files are skipped), sorted by name, without recursing into
subdirectories.

Folders of image files are transformed file by file by
:func:`~latent_ot.images.folders.transform_files` (see :mod:`latent_ot.images.folders`, whose
names are re-exported here): nothing lost, nothing half-written, inputs untouched.

The tensor geometry that fits images to an autoencoder (``pad_to_multiple``, ``crop_to``,
``batches_by_size``) lives beside the code that encodes, in :mod:`latent_ot.pipeline.statistics`.
"""

from ._files import IMAGE_EXTENSIONS
from ._source import ImageItem, ImageSource
from .folders import FolderReport, expand_inputs, save_image_atomically, shard, transform_files

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderReport",
    "ImageItem",
    "ImageSource",
    "expand_inputs",
    "save_image_atomically",
    "shard",
    "transform_files",
]
