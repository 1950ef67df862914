"""From images to latents to patch statistics: the one path every fit and metric walks.

``images -> batches of equal size -> reflect-pad to the autoencoder's factor -> encode ->
check the latent holds a patch -> overlapping patch vectors, chunk by chunk -> GaussianStats``.

:func:`latent_patch_stats` walks it for a whole image set, one batch at a time;
``LatentOTTransformer.fit``/``partial_fit``, the distributed fit and
:func:`latent_ot.metrics.latent_w2` all use it, so the statistics they compute agree to the bit.
The tensor geometry that fits images to an autoencoder lives here too:
:func:`pad_to_multiple` and :func:`crop_to`, and :func:`batches_by_size`, which groups images
that can be stacked.

Examples
--------
>>> import torch
>>> from latent_ot.autoencoders import load_autoencoder
>>> images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
>>> [(stats.count, n) for stats, n in latent_patch_stats(images, load_autoencoder("pixel"), 3)]
[(72, 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..autoencoders import reporting_tiles
from ..images import ImageItem, ImageSource
from ..patches import iter_patch_chunks, patch_dim
from ..stats import GaussianStats

__all__ = [
    "DEFAULT_PATCH_CHUNK_SIZE",
    "batch_name",
    "batches_by_size",
    "check_latent_fits_patch",
    "crop_to",
    "encode_padded",
    "image_batches",
    "latent_patch_stats",
    "pad_to_multiple",
    "patch_stats",
]

T = TypeVar("T")

DEFAULT_PATCH_CHUNK_SIZE = 16384
"""Patch vectors processed at once: bounds memory whatever the image size."""

ImageBatch = list[tuple[int, ImageItem]]
"""Equal-size images, each with its position in the set it came from."""


def batches_by_size(
    entries: Iterable[T], batch_size: int, *, pixels: Callable[[T], torch.Tensor]
) -> Iterator[list[T]]:
    """Group entries whose images have equal size and device into batches of ``batch_size``.

    Images of different sizes cannot be stacked; this groups them as they stream by. At most
    ``2 * batch_size`` entries wait for companions of their size: when more do, the largest
    group leaves early, so memory stays bounded on folders of all-different sizes.

    Parameters
    ----------
    entries : iterable
        Anything that carries an image, e.g. ``(index, ImageItem)`` pairs.
    batch_size : int
    pixels : callable
        Gives the ``C x H x W`` tensor of an entry.

    Examples
    --------
    >>> images = [torch.zeros(3, 4, 4), torch.zeros(3, 2, 2), torch.zeros(3, 4, 4)]
    >>> [len(batch) for batch in batches_by_size(images, 2, pixels=lambda image: image)]
    [2, 1]
    """
    pending: dict[tuple, list[T]] = {}
    waiting = 0
    for entry in entries:
        image = pixels(entry)
        key = (tuple(image.shape), str(image.device))
        group = pending.setdefault(key, [])
        group.append(entry)
        waiting += 1
        if len(group) == batch_size:
            waiting -= len(group)
            yield pending.pop(key)
        elif waiting > 2 * batch_size:
            largest = max(pending, key=lambda k: len(pending[k]))
            waiting -= len(pending[largest])
            yield pending.pop(largest)
    yield from pending.values()


def batch_name(names: Sequence[str]) -> str:
    """How error messages call a batch: its first image's name, and how many more it holds.

    Examples
    --------
    >>> batch_name(["images[0]", "images[3]"])
    'images[0] (and 1 more of that size)'
    """
    return names[0] if len(names) == 1 else f"{names[0]} (and {len(names) - 1} more of that size)"


def pad_to_multiple(batch: torch.Tensor, factor: int, *, name: str = "images") -> torch.Tensor:
    """Reflect-pad a batch on the bottom and right so its height and width are multiples.

    Parameters
    ----------
    batch : torch.Tensor
        ``N x C x H x W`` floats.
    factor : int
        The multiple, such as an autoencoder's downsampling factor.
    name : str, default "images"
        What the error message calls the batch.

    Returns
    -------
    torch.Tensor
        ``N x C x H' x W'`` with ``H'`` and ``W'`` the next multiples of `factor`; the batch
        itself, not a copy, when no padding is needed. `crop_to` undoes it.

    Raises
    ------
    ValueError
        If the batch is not 4-D, or is smaller than `factor` in height or width.

    Examples
    --------
    >>> import torch
    >>> batch = torch.arange(6.0).reshape(1, 1, 2, 3)
    >>> pad_to_multiple(batch, 2)[0, 0]
    tensor([[0., 1., 2., 1.],
            [3., 4., 5., 4.]])
    """
    if batch.ndim != 4:
        raise ValueError(f"{name} must be an N x C x H x W batch; got shape {tuple(batch.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be a positive integer; got {factor}")
    height, width = batch.shape[-2:]
    # Reflection needs fewer padded rows than existing ones; a smaller image also leaves the
    # autoencoder less than one latent pixel.
    if height < factor or width < factor:
        raise ValueError(
            f"{name} is {height} x {width} px; the autoencoder needs at least "
            f"{factor} x {factor} (its downsampling factor)"
        )
    pad_bottom, pad_right = -height % factor, -width % factor
    if pad_bottom == pad_right == 0:
        return batch
    return F.pad(batch, (0, pad_right, 0, pad_bottom), mode="reflect")


def crop_to(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Keep the top-left ``height x width`` pixels of a batch, undoing `pad_to_multiple`.

    Parameters
    ----------
    batch : torch.Tensor
        ``... x H x W``.
    height, width : int
        The size to keep, at most ``H`` and ``W``.

    Returns
    -------
    torch.Tensor
        A view of `batch`.

    Examples
    --------
    >>> import torch
    >>> batch = torch.rand(2, 3, 5, 7)
    >>> torch.equal(crop_to(pad_to_multiple(batch, 4), 5, 7), batch)
    True
    """
    have_height, have_width = batch.shape[-2:]
    if not (0 < height <= have_height and 0 < width <= have_width):
        raise ValueError(
            f"cannot crop a batch of {have_height} x {have_width} px to {height} x {width} px"
        )
    return batch[..., :height, :width]


# --------------------------------------------------------------------------------------------
# The path


def image_batches(
    images: Any, batch_size: int, *, name: str = "images", verbose: bool = False, desc: str = ""
) -> Iterator[ImageBatch]:
    """Batches of equal-size images from anything :class:`~latent_ot.images.ImageSource` accepts.

    Parameters
    ----------
    images : images or ImageSource
        Any accepted kind (see :mod:`latent_ot.images`), or a source already built.
    batch_size : int
        Images per batch at most.
    name : str, default "images"
        What error messages call the set.
    verbose : bool, default False
        Show a progress bar (tqdm), described by ``desc``, that counts the images of a batch
        once the caller is done with it (asks for the next one), and one over the tiles of
        an image the autoencoder runs in tiles.

    Yields
    ------
    list of (int, ImageItem)
        Each image with its index in the set.
    """
    source = images if isinstance(images, ImageSource) else ImageSource(images, name=name)
    batches = batches_by_size(enumerate(source), batch_size, pixels=lambda entry: entry[1].pixels)
    if not verbose:
        return batches
    return _counted_when_done(batches, tqdm(desc=desc or name, unit="img"))


def _counted_when_done(batches: Iterator[ImageBatch], bar: tqdm) -> Iterator[ImageBatch]:
    """Yield ``batches``, counting each on ``bar`` when the caller has worked through it."""
    tiles = _TileBar()
    with bar:
        for batch in batches:
            with reporting_tiles(tiles):
                yield batch
            bar.update(len(batch))


class _TileBar:
    """A progress bar over the tiles of each tiled pass (a `TileCallback`)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=f"{what} tiles", unit="tile", leave=False)
        self.bar.update(1)
        if done == total:
            self.bar.close()
            self.bar = None


def stack_pixels(batch: ImageBatch, device: torch.device | str) -> torch.Tensor:
    """The ``N x 3 x H x W`` pixels of a batch, on ``device``.

    For a CUDA device, pixels on the CPU are stacked into page-locked (pinned) host memory and
    copied without blocking: the host goes on queuing the autoencoder's work while the copy
    runs, and torch keeps the pinned block alive until the copy is done.
    """
    pixels = [item.pixels for _, item in batch]
    device = torch.device(device)
    if device.type != "cuda" or any(image.device.type != "cpu" for image in pixels):
        return torch.stack(pixels).to(device)
    shape = (len(pixels), *pixels[0].shape)
    staging = torch.empty(shape, dtype=pixels[0].dtype, pin_memory=True)
    return torch.stack(pixels, out=staging).to(device, non_blocking=True)


def name_of(batch: ImageBatch) -> str:
    """How error messages call a batch (see :func:`batch_name`)."""
    return batch_name([item.name for _, item in batch])


def encode_padded(
    pixels: torch.Tensor,
    autoencoder: Any,
    *,
    name: str = "images",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reflect-pad ``N x 3 x H x W`` pixels to the autoencoder's factor and encode them.

    The autoencoder refuses to return NaN or inf (it retries half precision in float32).
    """
    padded = pad_to_multiple(pixels, autoencoder.factor, name=name)
    return autoencoder.encode(padded, generator)


def check_latent_fits_patch(latents: torch.Tensor, patch_size: int, factor: int, name: str):
    """Raise ``ValueError`` unless the latent holds at least one ``patch_size`` patch."""
    height, width = latents.shape[-2:]
    if min(height, width) < patch_size:
        least = patch_size * factor
        raise ValueError(
            f"{name}: its latent is {height} x {width}, smaller than patch_size={patch_size}; "
            f"images must be at least {least} x {least} px for this autoencoder (factor "
            f"{factor}) and patch size"
        )


def patch_stats(
    latents: torch.Tensor,
    patch_size: int,
    *,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    device: torch.device | str | None = None,
) -> GaussianStats:
    """Float64 statistics of every overlapping ``C x p x p`` patch of ``N x C x h x w`` latents.

    Examples
    --------
    >>> stats = patch_stats(torch.zeros(1, 2, 4, 5), 3)
    >>> stats.count, tuple(stats.mean.shape)
    (6, (18,))
    """
    dim = patch_dim(latents.shape[1], patch_size)
    stats = GaussianStats(dim, device=latents.device if device is None else device)
    for chunk in iter_patch_chunks(latents, patch_size, max_patches=chunk_size):
        stats.update(chunk)
    return stats


def latent_patch_stats(
    images: Any,
    autoencoder: Any,
    patch_size: int,
    *,
    batch_size: int = 4,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    name: str = "images",
    verbose: bool = False,
    desc: str = "",
) -> Iterator[tuple[GaussianStats, int]]:
    """Patch statistics of each batch of ``images``: the one path from images to statistics.

    Each batch of equal-size images is reflect-padded to the autoencoder's factor, encoded,
    checked to hold a patch, and its overlapping latent patches are accumulated ``chunk_size``
    at a time. Merging the yielded statistics (:meth:`GaussianStats.merge`) gives those of the
    whole set; yielding per batch lets a caller commit each batch atomically.

    Parameters
    ----------
    images : images or ImageSource
        Anything :class:`~latent_ot.images.ImageSource` accepts (arrays, tensors, PIL images,
        files, a directory, iterables of them), or a source already built.
    autoencoder : Autoencoder
        A loaded autoencoder (:func:`latent_ot.autoencoders.load_autoencoder`).
    patch_size : int
        Side ``p`` of the latent patches.
    batch_size : int, default 4
        Images encoded together (equal sizes only).
    chunk_size : int, default DEFAULT_PATCH_CHUNK_SIZE
        Patch vectors accumulated at once.
    device : torch.device or str, optional
        Where the statistics live; the autoencoder's device by default.
    generator : torch.Generator, optional
        For an autoencoder that samples its latent.
    name, verbose, desc
        What errors call the set; a progress bar and its description.

    Yields
    ------
    (GaussianStats, int)
        The statistics of one batch and its number of images.
    """
    for batch in image_batches(images, batch_size, name=name, verbose=verbose, desc=desc):
        label = name_of(batch)
        latents = encode_padded(
            stack_pixels(batch, autoencoder.device), autoencoder, name=label, generator=generator
        )
        check_latent_fits_patch(latents, patch_size, autoencoder.factor, label)
        yield patch_stats(latents, patch_size, chunk_size=chunk_size, device=device), len(batch)
