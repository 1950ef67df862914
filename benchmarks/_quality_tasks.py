"""The images and restoration tasks of ``quality.py``.

Every image is an ``H x W x 3`` uint8 array, as a restorer's saved output would be, with
``H`` and ``W`` multiples of 8 (TAEF2's factor: nothing is padded, and x4 super-resolution
divides evenly). Which images play which part:

- fit: CBSD68, cut by a seeded permutation into two disjoint halves: the images that are
  degraded and restored (the restored set) and other, clean ones (the natural set);
- ``validation`` split, on which options and defaults are chosen: Set14 and
  ``wikipedia-photos`` 036 to 042;
- ``test`` split, reported and used for nothing else: ``wikipedia-photos`` 043 to 049, Set5
  and the CBSD68 images that neither fit set uses (the built-in prior's natural statistics
  did see CBSD68: a leak in the prior's favour on those images, none for the fit).

Test images are center crops of at most ``size`` pixels a side. The degradations are seeded
per image (by the seed and the image's name), so an image gets the same noise whichever other
images a run includes. The learned restorers (`LEARNED`: UpscalerJS networks, run by
``_learned_sr.py``) take a bicubic downscaling of the clean image; every restored image is
cached on disk (`cached_restore`), keyed by the task, the seed, the image's name and pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from latent_ot.apps import restoration
from latent_ot.apps.demo_data import SPLITS as SPLITS  # quality.py's --split choices
from latent_ot.apps.demo_data import split_names
from latent_ot.apps.restoration import (
    RestorationTask,
    bicubic_resize,
    image_rng,
    to_uint8,
)

FACTOR = 8  # TAEF2's downsampling factor


@dataclass(frozen=True)
class Task:
    """A classical task of `latent_ot.apps.restoration`, its restored image as uint8.

    Attributes
    ----------
    name : str
        Names the task's output folder and its rows of the summary.
    restoration : latent_ot.apps.restoration.RestorationTask
        The degradation and the classical restorer whose output is the ``alpha = 1`` point,
        at the paper's settings (`restoration.TASKS`): one definition for the demo, the
        examples and this benchmark.
    """

    name: str
    restoration: RestorationTask

    @property
    def restorer(self) -> str:
        """What the restorer is, for tables and figures."""
        return self.restoration.restored_label

    def degrade_and_restore(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(clean uint8 image, numpy Generator) -> restored uint8 image`` of the same size."""
        return to_uint8(self.restoration.degrade_and_restore(clean, rng)[1])


@dataclass(frozen=True)
class LearnedTask:
    """Bicubic downscaling by the network's scale, then an UpscalerJS network.

    Attributes
    ----------
    name, restorer : str
        As for `Task`.
    network : str
        A key of ``_learned_sr.MODELS``.
    """

    name: str
    restorer: str
    network: str

    def restorer_in(self, shared: Path) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """``(clean, rng) -> restored`` with the network of ``shared/models``."""
        upscaler = _upscaler(self.network, shared)

        def degrade_and_restore(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            height, width = clean.shape[:2]
            scale = upscaler.scale
            small = to_uint8(bicubic_resize(clean, width // scale, height // scale))
            return _fit_size(upscaler(small), height, width)

        return degrade_and_restore


@cache
def _upscaler(network: str, shared: Path):
    from _learned_sr import Upscaler  # torch and the model files only for these tasks

    return Upscaler(network, shared)


def _fit_size(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop an upscaled image, or pad it by edge replication, to ``height x width``: a side
    that is not a multiple of the scale loses its last pixels to the downscaling."""
    image = image[:height, :width]
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
    return np.pad(image, pad, mode="edge") if any(p[1] for p in pad) else image


LEARNED = (
    LearnedTask("learned_sr_x4", "learned SR x4 (esrgan-medium, RDN)", "esrgan-medium-x4"),
    LearnedTask("learned_sr_x2", "learned SR x2 (esrgan-thick, RRDN)", "esrgan-thick-x2"),
)
TASKS: dict[str, Task | LearnedTask] = {
    task.name: task
    for task in (
        *LEARNED,
        *(Task(name, task) for name, task in restoration.TASKS.items()),
    )
}


def restorer_of(task: Task | LearnedTask, shared: Path) -> Callable:
    """``(clean, rng) -> restored`` of a task."""
    if isinstance(task, LearnedTask):
        return task.restorer_in(shared)
    return task.degrade_and_restore


def cached_restore(
    restore: Callable, clean: np.ndarray, rng_key: tuple[int, str], cache: Path | None, task: str
) -> np.ndarray:
    """``restore(clean, image_rng(*rng_key))``, read from or written to ``cache`` (a PNG per
    task, seed, image name and hash of the clean pixels; no cache when None)."""
    seed, name = rng_key
    if cache is None:
        return restore(clean, image_rng(seed, name))
    digest = hashlib.blake2b(clean.tobytes() + bytes(str(clean.shape), "ascii"), digest_size=8)
    path = cache / task / f"seed{seed}" / f"{name.replace('/', '_')}-{digest.hexdigest()}.png"
    if path.is_file():
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    restored = restore(clean, image_rng(seed, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(restored).save(path)
    return restored


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


def held_out_names(shared: Path, split: str, fit_used: Sequence[Path] = ()) -> list[str]:
    """The images of a split (`latent_ot.apps.demo_data.split_names`), as ``folder/stem``
    under ``shared/images``; the test split adds the CBSD68 images not in ``fit_used``."""
    names = split_names(shared / "images", split)
    if split == "test":
        used = {Path(path).stem for path in fit_used}
        cbsd68 = sorted((shared / "images" / "CBSD68").glob("*.png"))
        names += [f"CBSD68/{path.stem}" for path in cbsd68 if path.stem not in used]
    return names


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


def prepare(
    task: Task | LearnedTask,
    shared: Path,
    *,
    n_fit: int,
    size: int,
    seed: int,
    split: str = "validation",
    cache: Path | None = None,
    limit: int | None = None,
) -> TaskImages:
    """Read, degrade and restore the fit images and the ``split``'s images of ``task`` (the
    first ``limit`` of them; all when None); restorations cached under ``cache``."""
    to_restore, natural = fit_files(shared, n_fit, seed)
    names = held_out_names(shared, split, [*to_restore, *natural])[:limit]
    clean = [read_image(shared / "images" / f"{name}.png", size) for name in names]
    restore = restorer_of(task, shared)

    def restored(image: np.ndarray, name: str) -> np.ndarray:
        return cached_restore(restore, image, (seed, name), cache, task.name)

    return TaskImages(
        fit_restored=[restored(read_image(path), f"CBSD68/{path.stem}") for path in to_restore],
        fit_natural=[read_image(path) for path in natural],
        names=names,
        clean=clean,
        restored=[restored(image, name) for image, name in zip(clean, names, strict=True)],
    )
