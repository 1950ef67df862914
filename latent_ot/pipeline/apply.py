"""From restored pixels to transported pixels: the path every ``transform`` walks.

``pixels -> reflect-pad -> encode -> every overlapping latent patch through the map -> fold
(average the overlaps) -> decode -> crop back to the input's size``, then the
perception-distortion interpolation with the input. The map is any callable on ``n x d``
float64 patch vectors, such as a fitted
:meth:`~latent_ot.GaussianOTTransformer.transport_tensor`.

Two variations of the paper's recipe (Adrai et al., 2023) are options here:

- *latent interpolation*: ``D((1 - alpha) T(z) + alpha z)`` instead of
  ``(1 - alpha) D(T(z)) + alpha x``, one decode per ``alpha``;
- *the input's low frequencies kept*: ``y + G_sigma * (x - y)`` for a decoded output ``y``,
  whose band below a Gaussian low-pass of ``sigma`` pixels is replaced by the input's
  (:func:`gaussian_low_pass`). A restorer gets an image's coarse content (its colours, its
  shading) right far more often than its fine detail, which is what the transport should add;
  the transport's own changes to the coarse content (colour and contrast pulled toward the
  average photo's) cost fidelity for little realism.

Examples
--------
>>> import torch
>>> from latent_ot.autoencoders import load_autoencoder
>>> pixels = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
>>> out = transport_images(pixels, load_autoencoder("pixel"), lambda v: v, patch_size=3)
>>> torch.allclose(out, pixels, atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..patches import map_patches
from ..validation import check_choice
from .statistics import DEFAULT_PATCH_CHUNK_SIZE, crop_to, encode_padded

__all__ = [
    "INTERPOLATIONS",
    "blend",
    "gaussian_low_pass",
    "sweep_images",
    "transport_images",
    "transport_latents",
]

INTERPOLATIONS = ("pixel", "latent")
"""Where ``alpha`` interpolates between the transported image and the input."""

PatchMap = Callable[[torch.Tensor], torch.Tensor]


def blend(transported: torch.Tensor, original: torch.Tensor, alpha: float) -> torch.Tensor:
    """Perception-distortion interpolation ``(1 - alpha) * transported + alpha * original``."""
    if alpha == 0.0:
        return transported
    return torch.lerp(transported, original.to(transported.dtype), alpha)


def gaussian_low_pass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""Gaussian blur of each channel of ``N x C x H x W`` images, the edges extended.

    .. math::

        (G_\sigma * x)[i, j] = \sum_{|u|, |v| \le r} g[u]\, g[v]\, x[i + u, j + v],
        \qquad g[u] \propto e^{-u^2 / 2\sigma^2}

    with ``r = round(4 sigma)`` and pixels beyond an edge equal to the edge pixel: the same
    as ``scipy.ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode="nearest")``, at any
    image size.

    Examples
    --------
    >>> flat = torch.full((1, 3, 5, 7), 0.25)
    >>> torch.allclose(gaussian_low_pass(flat, 3.0), flat)
    True
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), "replicate"), rows, groups=channels)
    columns = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.pad(blurred, (0, 0, radius, radius), "replicate"), columns, groups=channels)


def transport_latents(
    latents: torch.Tensor,
    patch_map: PatchMap,
    *,
    patch_size: int,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
) -> torch.Tensor:
    """Apply ``patch_map`` to every overlapping ``C x p x p`` patch of ``N x C x h x w`` latents.

    Patches are mapped ``chunk_size`` at a time and folded back by averaging the overlaps
    with equal weights, as the paper does.
    """
    return map_patches(latents, patch_size, patch_map, max_patches=chunk_size)


def transport_images(
    pixels: torch.Tensor, autoencoder: Any, patch_map: PatchMap, **options: Any
) -> torch.Tensor:
    """Encode, transport every latent patch, fold, decode, crop: the ``alpha = 0`` images.

    The keyword ``options`` are those of :func:`sweep_images`.
    """
    return sweep_images(pixels, autoencoder, patch_map, [0.0], **options)[0]


def sweep_images(
    pixels: torch.Tensor,
    autoencoder: Any,
    patch_map: PatchMap,
    alphas: list[float],
    *,
    patch_size: int,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    interpolation: str = "pixel",
    low_frequency_sigma: float | None = None,
    name: str = "images",
    generator: torch.Generator | None = None,
) -> list[torch.Tensor | None]:
    """Transported images interpolated with the input for each ``alpha``; one encoding.

    Parameters
    ----------
    pixels : torch.Tensor
        ``N x 3 x H x W`` in ``[0, 1]``, on the autoencoder's device; any ``H``, ``W`` of at
        least the autoencoder's factor.
    autoencoder : Autoencoder
    patch_map : callable
        From ``n x d`` float64 patch vectors to ``n x d``.
    alphas : list of float
        ``0`` is the transported image, ``1`` the input.
    patch_size, chunk_size
        See :func:`transport_latents`.
    interpolation : {"pixel", "latent"}, default "pixel"
        Interpolate ``alpha`` between the images (the paper) or between the latents.
    low_frequency_sigma : float, optional
        Replace the band of every output below a Gaussian low-pass of this many pixels by
        the input's: ``y + G * (x - y)`` (:func:`gaussian_low_pass`); None keeps ``y``.
    name : str
        What error messages call the batch.
    generator : torch.Generator, optional
        For an autoencoder that samples its latent.

    Returns
    -------
    list
        Per alpha, ``N x 3 x H x W`` float32 of the input's size, unclipped; None for
        ``alpha == 1`` (the input itself, which callers return bit for bit).
    """
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    latents = encode_padded(pixels, autoencoder, name=name, generator=generator)
    moved = transport_latents(latents, patch_map, patch_size=patch_size, chunk_size=chunk_size)
    height, width = pixels.shape[-2:]

    def image(z: torch.Tensor) -> torch.Tensor:
        decoded = crop_to(autoencoder.decode(z), height, width)
        if low_frequency_sigma is None:
            return decoded
        return decoded + gaussian_low_pass(pixels.to(decoded.dtype) - decoded, low_frequency_sigma)

    if interpolation == "latent":
        return [None if a == 1.0 else image(blend(moved, latents, a)) for a in alphas]
    transported = image(moved)
    return [None if a == 1.0 else blend(transported, pixels, a) for a in alphas]
