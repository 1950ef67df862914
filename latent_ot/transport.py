"""From restored pixels to transported pixels: the path every ``transform`` walks.

``pixels -> reflect-pad -> encode -> every overlapping latent patch through the map -> fold
(average the overlaps) -> decode -> crop back to the input's size``, then the
perception-distortion interpolation with the input. The map is any callable on ``n x d``
float64 patch vectors, such as a fitted
:meth:`~latent_ot.GaussianOTTransformer.transport_tensor`.

Two variations of the paper's recipe (Adrai et al., 2023) are options here:

- *residual decoding*: ``x + D(T(E(x))) - D(E(x))`` instead of ``D(T(E(x)))``, so that what
  the autoencoder cannot reconstruct (fine detail of the input, its colours) stays out of the
  change; it costs a second decode;
- *latent interpolation*: ``D((1 - alpha) T(z) + alpha z)`` instead of
  ``(1 - alpha) D(T(z)) + alpha x``, one decode per ``alpha``.

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

__all__ = [
    "FOLD_WINDOWS",
    "INTERPOLATIONS",
    "blend",
    "sweep_images",
    "transport_images",
    "transport_latents",
]

FOLD_WINDOWS = ("uniform", "gaussian")
"""How the pixels of overlapping patches are weighted when folded back (``fold_window``)."""
INTERPOLATIONS = ("pixel", "latent")
"""Where ``alpha`` interpolates between the transported image and the input."""

PatchMap = Callable[[torch.Tensor], torch.Tensor]
MapFor = Callable[[torch.Tensor], PatchMap]


def blend(transported: torch.Tensor, original: torch.Tensor, alpha: float) -> torch.Tensor:
    """Perception-distortion interpolation ``(1 - alpha) * transported + alpha * original``."""
    if alpha == 0.0:
        return transported
    return torch.lerp(transported, original.to(transported.dtype), alpha)


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
    pixels: torch.Tensor, autoencoder: Any, patch_map: PatchMap, **options: Any
) -> torch.Tensor:
    """Encode, transport every latent patch, fold, decode, crop: the ``alpha = 0`` images.

    The keyword ``options`` are those of :func:`sweep_images`.
    """
    return sweep_images(pixels, autoencoder, lambda _: patch_map, [0.0], **options)[0]


def sweep_images(
    pixels: torch.Tensor,
    autoencoder: Any,
    map_for: MapFor,
    alphas: list[float],
    *,
    patch_size: int,
    fold_window: str = "uniform",
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    residual: bool = False,
    interpolation: str = "pixel",
    per_image: bool = False,
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
    map_for : callable
        Given latents (``N x C x h x w``, or one image's with ``per_image``), the patch map:
        a callable from ``n x d`` patch vectors to ``n x d``.
    alphas : list of float
        ``0`` is the transported image, ``1`` the input.
    patch_size, fold_window, chunk_size
        See :func:`transport_latents`.
    residual : bool, default False
        Decode the change only: ``x + D(T(z)) - D(z)``.
    interpolation : {"pixel", "latent"}, default "pixel"
        Interpolate ``alpha`` between the images (the paper) or between the latents.
    per_image : bool, default False
        Ask ``map_for`` for a map per image (maps fitted on the image itself).
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
    options = {"patch_size": patch_size, "fold_window": fold_window, "chunk_size": chunk_size}
    pieces = [latents[i : i + 1] for i in range(len(latents))] if per_image else [latents]
    moved = torch.cat([transport_latents(z, map_for(z), **options) for z in pieces])
    height, width = pixels.shape[-2:]

    def decode(z: torch.Tensor) -> torch.Tensor:
        return crop_to(autoencoder.decode(z), height, width)

    change_from = decode(latents) if residual else None

    def image(z: torch.Tensor) -> torch.Tensor:
        decoded = decode(z)
        return decoded if change_from is None else pixels + (decoded - change_from)

    if interpolation == "latent":
        return [None if a == 1.0 else image(blend(moved, latents, a)) for a in alphas]
    transported = image(moved)
    return [None if a == 1.0 else blend(transported, pixels, a) for a in alphas]
