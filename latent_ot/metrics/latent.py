"""The W2 distance between the Gaussians of latent patches: what the transport minimises."""

from __future__ import annotations

from typing import Any

import torch

from ..autoencoders import Autoencoder, load_autoencoder
from ..devices import resolve_device
from ..encoding import latent_patch_stats
from ..gaussian import w2_distance
from ..stats import GaussianStats
from ..validation import check_int

__all__ = ["latent_w2"]


def _set_stats(
    images: Any, name: str, autoencoder: Autoencoder, patch_size: int, batch_size: int
) -> GaussianStats:
    """The statistics of every latent patch of a set, merged over its batches."""
    merged = None
    for stats, _ in latent_patch_stats(
        images, autoencoder, patch_size, batch_size=batch_size, name=name
    ):
        merged = stats if merged is None else merged.merge(stats)
    if merged is None:
        raise ValueError(f"{name} is empty: expected at least one image")
    if merged.count < 2:
        raise ValueError(f"{name} gives {merged.count} latent patch; latent_w2 needs at least 2")
    return merged


def latent_w2(
    images: Any,
    reference: Any,
    autoencoder: Any,
    *,
    patch_size: int = 3,
    batch_size: int = 4,
    device: str | torch.device = "auto",
) -> float:
    """W2 distance between the Gaussians of the latent patches of two image sets.

    Both sets are encoded (padded by reflection to the autoencoder's factor), every
    overlapping ``C x p x p`` latent patch is a sample, and the Gaussians fitted to the two
    sets' patches are compared in closed form. This is the distance that
    `latent_ot.LatentOTTransformer` closes (its ``w2_`` after fitting on the same sets), so
    it measures how far restored images still are from natural ones where the transport
    acts. Not squared, unlike FID.

    Parameters
    ----------
    images, reference : images
        Unpaired sets.
    autoencoder : Autoencoder, str, os.PathLike or diffusers model
        An `latent_ot.autoencoders.Autoencoder`, used where it is, or anything
        `latent_ot.autoencoders.load_autoencoder` accepts ("pixel", a preset name, a
        directory, a diffusers model), loaded on ``device``.
    patch_size : int, default 3
        Side ``p`` of the latent patches.
    batch_size : int, default 4
        Images per encoder pass (same-size images only).
    device : str or torch.device, default "auto"
        Where an autoencoder given by name runs ("auto": CUDA when available).

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> latent_w2(images, images, "pixel") < 1e-6
    True
    """
    patch_size = check_int(patch_size, "patch_size")
    batch_size = check_int(batch_size, "batch_size")
    if not isinstance(autoencoder, Autoencoder):
        autoencoder = load_autoencoder(autoencoder, device=resolve_device(device))
    stats = _set_stats(images, "images", autoencoder, patch_size, batch_size)
    reference_stats = _set_stats(reference, "reference", autoencoder, patch_size, batch_size)
    reference_stats.to(stats.device)
    distance = w2_distance(
        stats.mean, stats.covariance, reference_stats.mean, reference_stats.covariance
    )
    return float(distance)
