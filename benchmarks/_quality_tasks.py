"""The images and restoration tasks of ``quality.py``.

Every image is an ``H x W x 3`` uint8 array, as a restorer's saved output would be, with
``H`` and ``W`` multiples of 8 (TAEF2's factor: nothing is padded, and x4 super-resolution
divides evenly). Which images play which part:

- fit: CBSD68, cut by a seeded permutation into two disjoint halves: the images that are
  degraded and restored (the restored set) and other, clean ones (the natural set);
- test: Set14 and ``wikipedia-photos`` 036 to 049, which neither the fit nor the package's
  built-in prior (``wikipedia-photos`` 001 to 035 and CBSD68) has seen; center crops of at
  most ``size`` pixels a side.

The degradations are seeded per image (by the seed and the image's name), so an image gets
the same noise whichever other images a run includes.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from latent_ot.demo import non_local_means

FACTOR = 8  # TAEF2's downsampling factor
SIGMA = 50 / 255  # denoising: Gaussian noise std on pixels in [0, 1]
SCALE = 4  # super-resolution factor
JPEG_QUALITY = 10
TEST_WIKIPEDIA = tuple(f"{number:03d}" for number in range(36, 50))


@dataclass(frozen=True)
class Task:
    """A degradation and the classical restorer whose output is the ``alpha = 1`` point.

    Attributes
    ----------
    name : str
        Names the task's output folder and its rows of the summary.
    restorer : str
        What the restorer is, for tables and figures.
    degrade_and_restore : callable
        ``(clean uint8 image, numpy Generator) -> restored uint8 image`` of the same size.
    """

    name: str
    restorer: str
    degrade_and_restore: Callable[[np.ndarray, np.random.Generator], np.ndarray]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] (clipped) to uint8."""
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def denoise_nlm(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add unclipped Gaussian noise of std 50/255, remove it with non-local means."""
    noisy = clean / 255 + rng.normal(0.0, SIGMA, clean.shape)
    return to_uint8(non_local_means(noisy, SIGMA))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def bicubic_x4(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bicubic downscaling by 4, then bicubic upscaling back (Pillow; no randomness)."""
    height, width = clean.shape[:2]
    return _resize(_resize(clean, width // SCALE, height // SCALE), width, height)


def jpeg_q10(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Encode at JPEG quality 10 and decode (Pillow's libjpeg): the decoded JPEG is the
    restored image. A mild classical deblocking (total variation, skimage's Chambolle at
    weight 0.02) gained 0.5 dB on CBSD68 but left the blocks visible: not clearly better."""
    buffer = io.BytesIO()
    Image.fromarray(clean).save(buffer, "JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


TASKS = {
    task.name: task
    for task in (
        Task("denoising", "non-local means (sigma 50)", denoise_nlm),
        Task("super_resolution", "bicubic x4", bicubic_x4),
        Task("jpeg", "decoded JPEG (q 10)", jpeg_q10),
    )
}


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The degradation's generator for one image: fixed by the seed and the image's name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def read_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """An image file as RGB uint8, center-cropped to at most ``max_side`` a side and to
    multiples of `FACTOR`."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return center_crop(pixels, max_side)


def center_crop(image: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """The center of ``image``, at most ``max_side`` a side, sides rounded down to multiples
    of `FACTOR`.

    Examples
    --------
    >>> center_crop(np.zeros((21, 30, 3)), 16).shape
    (16, 16, 3)
    """
    height, width = image.shape[:2]
    if max_side is not None:
        height, width = min(height, max_side), min(width, max_side)
    height, width = height - height % FACTOR, width - width % FACTOR
    if height == 0 or width == 0:
        raise ValueError(f"an image of {image.shape[0]} x {image.shape[1]} px is under {FACTOR}")
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def fit_files(shared: Path, n_fit: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Two disjoint halves of CBSD68: ``n_fit`` images to restore and ``n_fit`` natural ones."""
    files = sorted((shared / "images" / "CBSD68").glob("*.png"))
    if not 1 <= n_fit <= len(files) // 2:
        raise ValueError(f"--n-fit must be between 1 and {len(files) // 2}, got {n_fit}")
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[:n_fit]], [files[i] for i in order[n_fit : 2 * n_fit]]


def held_out_names(shared: Path) -> list[str]:
    """The test images, as ``folder/stem`` under ``shared/images``."""
    set14 = sorted(path.stem for path in (shared / "images" / "Set14").glob("*.png"))
    return [f"Set14/{stem}" for stem in set14] + [
        f"wikipedia-photos/{stem}" for stem in TEST_WIKIPEDIA
    ]


def grid_crops(image: np.ndarray, size: int) -> list[np.ndarray]:
    """The non-overlapping ``size`` px squares of the grid centered on ``image`` (none when
    it is smaller): what the perceptual surrogates compare.

    Examples
    --------
    >>> [crop.shape for crop in grid_crops(np.zeros((600, 300, 3)), 256)]
    [(256, 256, 3), (256, 256, 3)]
    """
    rows, columns = image.shape[0] // size, image.shape[1] // size
    top = (image.shape[0] - rows * size) // 2
    left = (image.shape[1] - columns * size) // 2
    return [
        image[top + i * size : top + (i + 1) * size, left + j * size : left + (j + 1) * size]
        for i in range(rows)
        for j in range(columns)
    ]


def all_crops(images: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """`grid_crops` of every image, in order."""
    return [crop for image in images for crop in grid_crops(image, size)]


@dataclass
class TaskImages:
    """One task's images, degraded and restored once and shared by every variant."""

    fit_restored: list[np.ndarray]
    fit_natural: list[np.ndarray]
    names: list[str]
    clean: list[np.ndarray]
    restored: list[np.ndarray]


def prepare(task: Task, shared: Path, *, n_fit: int, size: int, seed: int) -> TaskImages:
    """Read, degrade and restore the fit and test images of ``task``."""
    to_restore, natural = fit_files(shared, n_fit, seed)
    names = held_out_names(shared)
    clean = [read_image(shared / "images" / f"{name}.png", size) for name in names]
    return TaskImages(
        fit_restored=[
            task.degrade_and_restore(read_image(path), image_rng(seed, f"CBSD68/{path.stem}"))
            for path in to_restore
        ],
        fit_natural=[read_image(path) for path in natural],
        names=names,
        clean=clean,
        restored=[
            task.degrade_and_restore(image, image_rng(seed, name))
            for image, name in zip(clean, names, strict=True)
        ],
    )
