"""The photos of ``latent-ot demo``: sample photos that ship with scikit-image, offline.

The demo needs clean photos without a download: `sample_photos` takes them from the
scikit-image package (the ``demo`` extra), centre-cropped square and resized. They are then
degraded and restored by `latent_ot.apps.restoration`. Images are ``H x W x 3`` uint8 arrays.

Examples
--------
>>> photos = sample_photos(2, size=32)
>>> list(photos), photos["astronaut"].shape, photos["astronaut"].dtype
(['astronaut', 'coffee'], (32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .._optional import require

__all__ = ["DEMO_PHOTOS", "sample_photos"]

#: The photos of `sample_photos`, in the order they are taken. They ship with scikit-image:
#: no download, so the demo runs offline.
DEMO_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "motorcycle",
    "hubble_deep_field",
    "retina",
)


def sample_photos(count: int, size: int) -> dict[str, np.ndarray]:
    """The first ``count`` photos of `DEMO_PHOTOS`, centre-cropped square, ``size`` pixels.

    Parameters
    ----------
    count : int
        How many photos, at most ``len(DEMO_PHOTOS)``.
    size : int
        The side of the square the crops are resized to (Lanczos).

    Returns
    -------
    dict of str to numpy.ndarray
        Photo name to ``size x size x 3`` uint8 array.

    Examples
    --------
    >>> photos = sample_photos(1, size=48)
    >>> {name: pixels.shape for name, pixels in photos.items()}
    {'astronaut': (48, 48, 3)}
    """
    if not 1 <= count <= len(DEMO_PHOTOS):
        raise ValueError(f"count must be in [1, {len(DEMO_PHOTOS)}]; got {count!r}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size!r}")
    data = require("skimage.data", extra="demo", purpose="the demo", package="scikit-image")
    photos = {}
    for name in DEMO_PHOTOS[:count]:
        if name == "motorcycle":
            pixels = data.stereo_motorcycle()[0]  # the left view of a stereo pair
        else:
            pixels = getattr(data, name)()
        photos[name] = _square(pixels, size)
    return photos


def _square(pixels: np.ndarray, size: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(pixels[top : top + side, left : left + side]).convert("RGB")
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))
