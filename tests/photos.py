"""Real photographs for tests: the colour sample images scikit-image ships (no download)."""

import numpy as np

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")
"""Colour photographs bundled with scikit-image, 300 to 1411 px."""


def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph, ``H x W x 3`` uint8."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)())


def photo_crops(size: int, count: int, names: tuple[str, ...] = PHOTO_NAMES[:5]) -> list:
    """``count`` non-overlapping ``size x size`` crops of the photos, float64 in ``[0, 1]``.

    Crops are taken in raster order within each photo and interleaved across photos, so any
    slice of the list mixes content (a portrait, a still life, a cat, a landscape, a slide).
    """
    per_photo = []
    for name in names:
        pixels = load_photo(name).astype(np.float64) / 255
        rows, cols = pixels.shape[0] // size, pixels.shape[1] // size
        per_photo.append(
            [
                pixels[r * size : (r + 1) * size, c * size : (c + 1) * size]
                for r in range(rows)
                for c in range(cols)
            ]
        )
    interleaved = [crop for group in zip(*_padded(per_photo), strict=True) for crop in group]
    crops = [crop for crop in interleaved if crop is not None]
    if len(crops) < count:
        raise ValueError(f"only {len(crops)} crops of {size} px in {names}, asked for {count}")
    return crops[:count]


def _padded(groups: list[list]) -> list[list]:
    longest = max(len(group) for group in groups)
    return [group + [None] * (longest - len(group)) for group in groups]
