"""From restored pixels to transported pixels: the path every ``transform`` walks.

``pixels -> reflect-pad -> encode -> every overlapping latent patch through the map -> fold
(average the overlaps) -> decode -> crop back to the input's size``. The map is any callable on
``n x d`` float64 patch vectors, such as a fitted
:meth:`~latent_ot.GaussianOTTransformer.transport_tensor`.

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

from .encoding import DEFAULT_PATCH_CHUNK_SIZE, crop_to, encode_padded
from .patches import gaussian_window, transport_patches
from .validation import check_choice

__all__ = ["FOLD_WINDOWS", "transport_images", "transport_latents"]

FOLD_WINDOWS = ("uniform", "gaussian")
"""How the pixels of overlapping patches are weighted when folded back (``fold_window``)."""

PatchMap = Callable[[torch.Tensor], torch.Tensor]


def transport_latents(
    latents: torch.Tensor,
    patch_map: PatchMap,
    *,
    patch_size: int,
    fold_window: str = "uniform",
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
) -> torch.Tensor:
    """Apply ``patch_map`` to every overlapping ``C x p x p`` patch of ``N x C x h x w`` latents.

    Patches are mapped ``chunk_size`` at a time and folded back by a weighted average of the
    overlaps (``fold_window``: equal weights, or a Gaussian centred on each patch).
    """
    check_choice(fold_window, "fold_window", FOLD_WINDOWS)
    window = None
    if fold_window == "gaussian":
        window = gaussian_window(patch_size, device=latents.device)
    return transport_patches(latents, patch_size, patch_map, window=window, max_patches=chunk_size)


def transport_images(
    pixels: torch.Tensor,
    autoencoder: Any,
    patch_map: PatchMap,
    *,
    patch_size: int,
    fold_window: str = "uniform",
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    name: str = "images",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode, transport every latent patch, fold, decode, crop: the ``alpha = 0`` images.

    Parameters
    ----------
    pixels : torch.Tensor
        ``N x 3 x H x W`` in ``[0, 1]``, on the autoencoder's device; any ``H``, ``W`` of at
        least the autoencoder's factor.
    autoencoder : Autoencoder
    patch_map : callable
        Maps ``n x d`` patch vectors to ``n x d``.
    patch_size, fold_window, chunk_size
        See :func:`transport_latents`.
    name : str
        What error messages call the batch.
    generator : torch.Generator, optional
        For an autoencoder that samples its latent.

    Returns
    -------
    torch.Tensor
        ``N x 3 x H x W`` float32, the input's size.
    """
    latents = encode_padded(pixels, autoencoder, name=name, generator=generator)
    transported = transport_latents(
        latents, patch_map, patch_size=patch_size, fold_window=fold_window, chunk_size=chunk_size
    )
    height, width = pixels.shape[-2:]
    return crop_to(autoencoder.decode(transported), height, width)
