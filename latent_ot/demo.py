"""The data of ``latent-ot demo``: sample photos, degraded, then restored.

The demo needs restored images and their clean versions, offline. It takes photos that
scikit-image ships inside its package (`sample_photos`), adds Gaussian noise and denoises
them with non-local means, a classical restoration method (`degrade_and_restore`). Images
are ``H x W x 3`` uint8 arrays throughout.

Examples
--------
>>> clean = sample_photos(2, size=32)
>>> degraded, restored = degrade_and_restore(clean, sigma=0.1, seed=0)
>>> list(restored), restored["astronaut"].shape, restored["astronaut"].dtype
(['astronaut', 'coffee'], (32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

__all__ = ["DEMO_PHOTOS", "degrade_and_restore", "non_local_means", "sample_photos"]

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
    import skimage.data  # imported here: only the demo needs scikit-image

    photos = {}
    for name in DEMO_PHOTOS[:count]:
        if name == "motorcycle":
            pixels = skimage.data.stereo_motorcycle()[0]  # the left view of a stereo pair
        else:
            pixels = getattr(skimage.data, name)()
        photos[name] = _square(pixels, size)
    return photos


def degrade_and_restore(
    clean: Mapping[str, np.ndarray],
    sigma: float,
    seed: int,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Noisy versions of ``clean`` and their non-local means denoising.

    Parameters
    ----------
    clean : dict of str to numpy.ndarray
        Name to ``H x W x 3`` uint8 photo.
    sigma : float
        Standard deviation of the Gaussian noise, on the [0, 1] scale of the pixels.
    seed : int
        Seed of the noise: the same seed gives the same images.
    progress : callable, optional
        Wraps the iterable of ``(name, photo)`` pairs, e.g. to show a progress bar.

    Returns
    -------
    degraded, restored : dict of str to numpy.ndarray
        Name to the noisy photo, and name to its denoising; uint8 arrays like ``clean``.

    Examples
    --------
    >>> import numpy as np
    >>> clean = {"grey": np.full((24, 24, 3), 128, dtype=np.uint8)}
    >>> degraded, restored = degrade_and_restore(clean, sigma=0.2, seed=0)
    >>> bool(np.abs(restored["grey"] - 128.0).mean() < np.abs(degraded["grey"] - 128.0).mean())
    True
    """
    rng = np.random.default_rng(seed)
    degraded, restored = {}, {}
    pairs = clean.items() if progress is None else progress(clean.items())
    for name, pixels in pairs:
        noisy = np.clip(pixels / 255 + rng.normal(0.0, sigma, pixels.shape), 0.0, 1.0)
        degraded[name] = _to_uint8(noisy)
        restored[name] = _to_uint8(non_local_means(degraded[name] / 255, sigma))
    return degraded, restored


def non_local_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Denoise an ``H x W x 3`` float image in [0, 1] with scikit-image's non-local means.

    The noise level ``sigma`` is known (on the [0, 1] scale), so it is not estimated; the
    settings are the paper's classical NLM baseline: 5 x 5 patches searched within 6 px.

    Examples
    --------
    >>> noisy = np.random.default_rng(0).normal(0.5, 0.1, (16, 16, 3)).clip(0, 1)
    >>> bool(non_local_means(noisy, 0.1).std() < noisy.std())
    True
    """
    from skimage.restoration import denoise_nl_means

    denoised = denoise_nl_means(
        noisy,
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1,
    )
    return np.clip(denoised, 0.0, 1.0)


def _square(pixels: np.ndarray, size: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(pixels[top : top + side, left : left + side]).convert("RGB")
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)
