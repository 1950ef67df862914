"""Clean photos degraded and restored classically: the tasks of the demo, examples, benchmarks.

latent-ot improves the outputs of a restoration model; to show and measure that without one,
the demo (``latent-ot demo``), the examples (``examples/``) and the quality benchmark
(``benchmarks/quality.py``) make their own restored images from clean photos, with the three
tasks of the paper's classical baselines:

- ``"denoising"``: Gaussian noise of standard deviation 50/255, removed by non-local means;
- ``"super_resolution"``: bicubic downscaling by 4, undone by bicubic upscaling;
- ``"jpeg"``: JPEG at quality 10; the decoded JPEG is itself the restored image.

A `RestorationTask` holds a degradation and its restorer; `degrade_and_restore` applies one to
named photos. Images go in as ``H x W x 3`` arrays, uint8 or floats in [0, 1], and come out as
float32: the restored images in [0, 1], the degraded ones as measured (noise is not clipped,
a downscaled image is smaller). Every random draw comes from a generator seeded by the seed
*and* the image's name (`image_rng`), so an image gets the same degradation whichever other
images a run includes, and the same arguments give the same images.

Examples
--------
>>> import numpy as np
>>> clean = {"grey": np.full((32, 32, 3), 128, dtype=np.uint8)}
>>> degraded, restored = degrade_and_restore(TASKS["super_resolution"], clean, seed=0)
>>> degraded["grey"].shape, restored["grey"].shape, restored["grey"].dtype
((8, 8, 3), (32, 32, 3), dtype('float32'))
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .._optional import require

__all__ = [
    "TASKS",
    "RestorationTask",
    "add_noise",
    "bicubic_resize",
    "degrade_and_restore",
    "denoising",
    "image_rng",
    "jpeg",
    "jpeg_round_trip",
    "non_local_means",
    "super_resolution",
    "to_uint8",
]

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class RestorationTask:
    """A degradation and the classical method that undoes it.

    Attributes
    ----------
    name : str
        A short identifier (``"denoising"``), for file and folder names.
    title : str
        One line saying what the task is, for figures and reports.
    degraded_label, restored_label : str
        What the degraded and the restored images are, for tables and collage rows.
    degrade : callable
        ``(clean float32 image in [0, 1], numpy Generator) -> measurement``, a float32 array
        (smaller than the image for a downscaling, outside [0, 1] for unclipped noise).
    restore : callable or None
        ``(measurement, (height, width)) -> restored float32 image in [0, 1]`` of that size,
        the clean image's. None when the measurement is already the restored image (a
        decoded JPEG).
    """

    name: str
    title: str
    degraded_label: str
    restored_label: str
    degrade: Degrade
    restore: Callable[[np.ndarray, tuple[int, int]], np.ndarray] | None = None

    def degrade_and_restore(
        self, clean: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The measurement of ``clean`` and its restoration, both float32.

        Examples
        --------
        >>> clean = np.full((16, 16, 3), 0.5, dtype=np.float32)
        >>> noisy, denoised = denoising(sigma=0.1).degrade_and_restore(clean, image_rng(0, "a"))
        >>> bool(np.abs(denoised - 0.5).mean() < np.abs(noisy - 0.5).mean())
        True
        """
        clean = _unit_float(clean)
        measurement = self.degrade(clean, rng)
        if self.restore is None:
            restored = measurement
        else:
            restored = self.restore(measurement, clean.shape[:2])
        return measurement, np.clip(restored, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- degradations


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma``, left unclipped.

    Unclipped, as the denoiser's noise model assumes; ``sigma`` is on the [0, 1] scale of the
    pixels (50/255 for the paper's noise level 50).

    Examples
    --------
    >>> noisy = add_noise(np.full((64, 64, 3), 0.5), 0.2, np.random.default_rng(0))
    >>> noisy.dtype, round(float(noisy.std()), 1)
    (dtype('float32'), 0.2)
    """
    clean = _unit_float(clean)
    return clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32)


def bicubic_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize through 8-bit pixels (Pillow), as an image file would be resized.

    Examples
    --------
    >>> bicubic_resize(np.zeros((8, 12, 3)), width=3, height=2).shape
    (2, 3, 3)
    """
    pixels = Image.fromarray(to_uint8(_unit_float(image)))
    resized = pixels.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32) / 255


def jpeg_round_trip(clean: np.ndarray, quality: int) -> np.ndarray:
    """Encode at JPEG ``quality`` in memory and decode (Pillow's libjpeg; deterministic).

    Examples
    --------
    >>> image = np.random.default_rng(0).random((16, 16, 3))
    >>> decoded = jpeg_round_trip(image, quality=10)
    >>> decoded.shape, bool(np.abs(decoded - image).mean() > 0.01)
    ((16, 16, 3), True)
    """
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(_unit_float(clean))).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255


# --------------------------------------------------------------------------- restorers


def non_local_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Denoise a float ``H x W x 3`` image with scikit-image's non-local means.

    The noise level ``sigma`` (on the [0, 1] scale) is known, so it is not estimated; the
    settings are the paper's classical baseline: 5 x 5 patches searched within 6 pixels, a
    filter strength of ``0.8 * sigma``. Needs scikit-image (the ``demo`` extra).

    Examples
    --------
    >>> noisy = np.random.default_rng(0).normal(0.5, 0.1, (16, 16, 3))
    >>> bool(non_local_means(noisy, 0.1).std() < noisy.std())
    True
    """
    restoration = require(
        "skimage.restoration",
        extra="demo",
        purpose="non-local means denoising",
        package="scikit-image",
    )
    denoised = restoration.denoise_nl_means(
        np.asarray(noisy, dtype=np.float32),
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1,
    )
    return np.clip(denoised, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- the three tasks


def denoising(sigma: float = 50 / 255) -> RestorationTask:
    """Gaussian noise of standard deviation ``sigma`` (pixels in [0, 1]), non-local means.

    Examples
    --------
    >>> denoising().title
    'Denoising (Gaussian noise of std 50/255) by non-local means'
    """
    level = round(sigma * 255, 1)
    return RestorationTask(
        name="denoising",
        title=f"Denoising (Gaussian noise of std {level:g}/255) by non-local means",
        degraded_label=f"noisy (sigma {level:g})",
        restored_label="non-local means",
        degrade=lambda clean, rng: add_noise(clean, sigma, rng),
        restore=lambda noisy, size: non_local_means(noisy, sigma),
    )


def super_resolution(scale: int = 4) -> RestorationTask:
    """Bicubic downscaling by ``scale``, undone by bicubic upscaling (no randomness).

    The upscaling goes back to the clean image's size, also when a side is not a multiple of
    ``scale`` (the downscaled side is rounded down).

    Examples
    --------
    >>> task = super_resolution(4)
    >>> low, restored = task.degrade_and_restore(np.zeros((10, 6, 3)), image_rng(0, "a"))
    >>> low.shape, restored.shape
    ((2, 1, 3), (10, 6, 3))
    """

    def downscale(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = clean.shape[:2]
        return bicubic_resize(clean, width // scale, height // scale)

    def upscale(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        height, width = size
        return bicubic_resize(low, width, height)

    return RestorationTask(
        name="super_resolution",
        title=f"{scale}x super-resolution by bicubic interpolation",
        degraded_label=f"low resolution (1/{scale})",
        restored_label=f"bicubic x{scale}",
        degrade=downscale,
        restore=upscale,
    )


def jpeg(quality: int = 10) -> RestorationTask:
    """JPEG at ``quality``; the decoded JPEG is the restored image (no randomness).

    A mild classical deblocking (total variation) was tried as the restorer and left the
    blocks visible, so the decoded JPEG stands for it.

    Examples
    --------
    >>> jpeg().restored_label
    'decoded JPEG (q 10)'
    """
    return RestorationTask(
        name="jpeg",
        title=f"JPEG decompression (quality {quality})",
        degraded_label=f"JPEG (q {quality})",
        restored_label=f"decoded JPEG (q {quality})",
        degrade=lambda clean, rng: jpeg_round_trip(clean, quality),
    )


#: The three tasks at the paper's settings, by name.
TASKS: dict[str, RestorationTask] = {
    task.name: task for task in (denoising(), super_resolution(), jpeg())
}


# --------------------------------------------------------------------------- photos


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one image's degradation: fixed by the seed and the image's name.

    Examples
    --------
    >>> a, b = image_rng(0, "Set14/baboon"), image_rng(0, "Set14/baboon")
    >>> float(a.random()) == float(b.random()), float(image_rng(1, "Set14/baboon").random()) == 0
    (True, False)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def degrade_and_restore(
    task: RestorationTask,
    clean: Mapping[str, np.ndarray],
    seed: int,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Degrade and restore named clean photos, each with its own seeded generator.

    Parameters
    ----------
    task : RestorationTask
        The degradation and its restorer, e.g. ``TASKS["denoising"]``.
    clean : dict of str to numpy.ndarray
        Name to ``H x W x 3`` photo, uint8 or float in [0, 1].
    seed : int
        With each name, seeds that image's degradation (`image_rng`).
    progress : callable, optional
        Wraps the iterable of ``(name, photo)`` pairs, e.g. to show a progress bar.

    Returns
    -------
    degraded, restored : dict of str to numpy.ndarray
        Name to the measurement, and name to its restoration in [0, 1]; float32, in the order
        of ``clean``.

    Examples
    --------
    >>> clean = {"grey": np.full((24, 24, 3), 128, dtype=np.uint8)}
    >>> degraded, restored = degrade_and_restore(denoising(0.2), clean, seed=0)
    >>> again, _ = degrade_and_restore(denoising(0.2), clean, seed=0)
    >>> bool(np.array_equal(degraded["grey"], again["grey"]))
    True
    """
    if not isinstance(task, RestorationTask):
        raise TypeError(f"task must be a RestorationTask, got {type(task).__name__}")
    degraded, restored = {}, {}
    pairs = clean.items() if progress is None else progress(clean.items())
    for name, pixels in pairs:
        degraded[name], restored[name] = task.degrade_and_restore(pixels, image_rng(seed, name))
    return degraded, restored


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1], clipped and rounded to uint8.

    Examples
    --------
    >>> to_uint8(np.array([-0.1, 0.5, 1.2]))
    array([  0, 128, 255], dtype=uint8)
    """
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1]; floats as float32, as they are."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
    return image.astype(np.float32, copy=False)
