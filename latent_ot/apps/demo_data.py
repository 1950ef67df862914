"""The photos of ``latent-ot demo``: sample photos that ship with scikit-image, offline.

The demo needs clean photos without a download: `sample_photos` takes them from the
scikit-image package (the ``demo`` extra), centre-cropped square and resized. They are then
degraded and restored by `latent_ot.apps.restoration`. Images are ``H x W x 3`` uint8 arrays.

The larger photo sets of the examples and benchmarks are not shipped: they lie in a shared
``images`` folder, and `split_names` says which of them are held out for what, once for both.

Examples
--------
>>> photos = sample_photos(2, size=32)
>>> list(photos), photos["astronaut"].shape, photos["astronaut"].dtype
(['astronaut', 'coffee'], (32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .._optional import require

__all__ = ["DEMO_PHOTOS", "SPLITS", "sample_photos", "split_names"]

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


#: The held-out splits of `split_names`: ``validation`` for choosing options and defaults,
#: ``test`` for reporting and nothing else.
SPLITS = ("validation", "test")
# The numbers of each split's ``wikipedia-photos``: disjoint, so that no test image was seen
# while choosing.
_WIKIPEDIA = {"validation": range(36, 43), "test": range(43, 50)}
# Set5's head is Set14's face with 2 more pixels of border: a validation image, not a test one.
_SEEN_IN_VALIDATION = ("Set5/head",)


def split_names(images: str | Path, split: str) -> list[str]:
    """The held-out photos of a split, as ``folder/stem`` under a shared ``images`` folder.

    ``validation``: Set14, then ``wikipedia-photos`` 036 to 042; ``test``: ``wikipedia-photos``
    043 to 049, then Set5 but its head (the same photo as Set14's face). Set5 and Set14 are
    listed from ``images`` (sorted stems); the ``wikipedia-photos`` names are fixed. A fit may
    add images of its own to the test split (the quality benchmark adds the CBSD68 images it
    does not fit on).

    Parameters
    ----------
    images : str or pathlib.Path
        The folder that holds ``Set5/``, ``Set14/`` and ``wikipedia-photos/`` (PNG files).
    split : str
        One of `SPLITS`.

    Returns
    -------
    list of str
        The split's names, in the order above.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as images:
    ...     (Path(images) / "Set5").mkdir()
    ...     (Path(images) / "Set5" / "baby.png").touch()
    ...     split_names(images, "test")[-2:]
    ['wikipedia-photos/049', 'Set5/baby']
    """
    if split not in SPLITS:
        raise ValueError(f"split: one of {SPLITS}, got {split!r}")
    wikipedia = [f"wikipedia-photos/{number:03d}" for number in _WIKIPEDIA[split]]
    if split == "validation":
        return _stems(Path(images), "Set14") + wikipedia
    set5 = [name for name in _stems(Path(images), "Set5") if name not in _SEEN_IN_VALIDATION]
    return wikipedia + set5


def _stems(images: Path, folder: str) -> list[str]:
    return [f"{folder}/{path.stem}" for path in sorted((images / folder).glob("*.png"))]
