"""Images in and out, under the import path this module has always had.

Everything here lives elsewhere and is re-exported unchanged, so that
``from latent_ot.io import ...`` keeps working:

* :class:`~latent_ot.images.ImageSource`, :class:`~latent_ot.images.ImageItem` and
  :data:`~latent_ot.images.IMAGE_EXTENSIONS` -- reading images of any kind as float pixels and
  writing results back in the caller's kind -- from :mod:`latent_ot.images`, which also states
  the conversion rules;
* :func:`~latent_ot.encoding.pad_to_multiple`, :func:`~latent_ot.encoding.crop_to`,
  :func:`~latent_ot.encoding.batches_by_size` and :func:`~latent_ot.encoding.batch_name` --
  fitting image batches to an autoencoder's downsampling factor and back -- from
  :mod:`latent_ot.encoding`.

Examples
--------
>>> import latent_ot.encoding
>>> import latent_ot.images
>>> ImageSource is latent_ot.images.ImageSource, crop_to is latent_ot.encoding.crop_to
(True, True)
"""

from __future__ import annotations

from .encoding import batch_name, batches_by_size, crop_to, pad_to_multiple
from .images import IMAGE_EXTENSIONS, ImageItem, ImageSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageItem",
    "ImageSource",
    "batch_name",
    "batches_by_size",
    "crop_to",
    "pad_to_multiple",
]
