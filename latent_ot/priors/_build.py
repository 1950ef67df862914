"""Building a natural prior: photos in, at a few scales, a safe statistics file out."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from ..autoencoders import Autoencoder, load_autoencoder
from ..devices import resolve_device
from ..images import ImageSource
from ..memory import reusing_freed_memory
from ..pipeline.statistics import (
    check_latent_fits_patch,
    encode_padded,
    image_batches,
    name_of,
    patch_stats,
    stack_pixels,
)
from ..stats import GaussianStats
from ..validation import check_int
from ._prior import NaturalPrior

__all__ = ["build_prior", "resize_long_side"]


def resize_long_side(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``C x H x W`` pixels so that the long side is ``size``, keeping the aspect ratio.

    Bicubic with antialiasing (so that downscaling does not alias), clamped to ``[0, 1]``.

    Examples
    --------
    >>> resize_long_side(torch.rand(3, 60, 90), 30).shape
    torch.Size([3, 20, 30])
    """
    size = check_int(size, "size")
    height, width = pixels.shape[-2:]
    scale = size / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    if shape == (height, width):
        return pixels
    resized = F.interpolate(
        pixels[None].float(), size=shape, mode="bicubic", antialias=True, align_corners=False
    )
    return resized[0].clamp_(0, 1)


def _resized(images: Any, scale: int | None) -> Iterator[torch.Tensor]:
    for item in ImageSource(images, name="images"):
        yield item.pixels if scale is None else resize_long_side(item.pixels, scale)


def _scale_stats(
    images: Any, autoencoder: Autoencoder, scale: int | None, patch_sizes, options: dict
) -> tuple[dict[int, GaussianStats], int, float, int]:
    """Per patch size, the statistics of the photos at one scale; their count, mean area and
    largest side."""
    stats: dict[int, GaussianStats] = {}
    count, area, long_side = 0, 0.0, 0
    batches = image_batches(
        _resized(images, scale),
        options["batch_size"],
        verbose=options["verbose"],
        desc=f"prior at {scale} px" if scale else "prior",
    )
    for batch in batches:
        pixels = stack_pixels(batch, autoencoder.device)
        latents = encode_padded(pixels, autoencoder, name=name_of(batch))
        for patch_size in patch_sizes:  # one encoding serves every patch size
            check_latent_fits_patch(latents, patch_size, autoencoder.factor, name_of(batch))
            batch_stats = patch_stats(latents, patch_size, device=options["device"])
            if patch_size in stats:
                stats[patch_size].merge(batch_stats)
            else:
                stats[patch_size] = batch_stats
        count += len(batch)
        area += len(batch) * pixels.shape[-2] * pixels.shape[-1]
        long_side = max(long_side, *pixels.shape[-2:])
    if count == 0:
        raise ValueError("images is empty: expected at least one natural photo")
    return stats, count, area / count, long_side


def build_prior(
    images: Any,
    vae: Any = "taef2",
    *,
    scales: Sequence[int] | None = None,
    patch_sizes: Sequence[int] = (3,),
    batch_size: int = 4,
    device: str | torch.device = "auto",
    dtype: Any = "auto",
    verbose: bool = False,
    description: str = "",
) -> NaturalPrior:
    """Fit a natural prior: latent patch statistics of ``images`` at each of ``scales``.

    Parameters
    ----------
    images : images
        Natural photos, anything :class:`~latent_ot.images.ImageSource` accepts (a directory, a
        list of paths, arrays, ...). Their content matters little; their sharpness at the
        scale of use does. A list or a directory can be read once per scale; an iterator is
        read into memory first.
    vae : str, Autoencoder or diffusers model, default "taef2"
        The autoencoder the prior is for (see :func:`latent_ot.autoencoders.load_autoencoder`);
        a prior only serves operators that use the same one.
    scales : sequence of int, optional
        Long sides, in pixels, the photos are resized to (bicubic, antialiased), one set of
        statistics per scale; ``fit`` then picks the scale nearest to the size of the
        restored images. None keeps the photos' own sizes (one scale, named after their
        largest long side).
    patch_sizes : sequence of int, default (3,)
        The patch sizes that operators using the prior may have.
    batch_size : int, default 4
        Photos encoded together (equal sizes only).
    device, dtype : default "auto"
        Where and in what precision the autoencoder runs; statistics are float64.
    verbose : bool, default False
        Progress bars.
    description : str, default ""
        Where the photos came from, kept in the file.

    Returns
    -------
    NaturalPrior
        Write it with :meth:`NaturalPrior.save`; pass the file as ``prior=`` to
        :class:`~latent_ot.LatentOTTransformer`.

    Examples
    --------
    >>> import numpy as np
    >>> photos = [np.random.default_rng(i).random((24, 36, 3)) for i in range(2)]
    >>> prior = build_prior(photos, "pixel", scales=[12, 24], patch_sizes=[1, 3])
    >>> prior.scales, prior.patch_sizes, prior.stats[(24, 3)].count
    ((12, 24), (1, 3), 616)
    """
    patch_sizes = tuple(sorted({check_int(p, "patch_sizes[i]") for p in patch_sizes}))
    scales = [None] if scales is None else [check_int(s, "scales[i]") for s in scales]
    if not patch_sizes or not scales:
        raise ValueError("scales and patch_sizes must not be empty")
    if not isinstance(images, str | bytes | list | tuple) and iter(images) is images:
        images = list(images)  # read once per scale
    device = resolve_device(device)
    autoencoder = (
        vae if isinstance(vae, Autoencoder) else load_autoencoder(vae, device=device, dtype=dtype)
    )
    options = {"batch_size": check_int(batch_size, "batch_size"), "verbose": verbose}
    options["device"] = device
    stats, sides, counts = {}, {}, {}
    with reusing_freed_memory(autoencoder):
        for scale in scales:
            per_patch, count, area, long_side = _scale_stats(
                images, autoencoder, scale, patch_sizes, options
            )
            key = scale if scale is not None else long_side
            stats |= {(key, p): s.to("cpu") for p, s in per_patch.items()}
            sides[key], counts[key] = math.sqrt(area), count
    return NaturalPrior(
        autoencoder=autoencoder.name,
        latent_channels=autoencoder.latent_channels,
        factor=autoencoder.factor,
        stats=MappingProxyType(stats),
        sides=MappingProxyType(sides),
        n_images=MappingProxyType(counts),
        description=description,
        fingerprint=autoencoder.fingerprint(),
    )
