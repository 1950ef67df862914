"""The W2 distance between the Gaussians of latent patches: what the transport minimises."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..autoencoders import Autoencoder, load_autoencoder
from ..devices import resolve_device
from ..gaussian import w2_distance
from ..pipeline.statistics import latent_patch_stats
from ..stats import GaussianStats
from ..validation import check_int

__all__ = ["DEFAULT_LATENT_PATCH_SIZE", "latent_w2", "latent_w2_label"]


DEFAULT_LATENT_PATCH_SIZE = 1
"""Latent patch side of `latent_w2` when none is given: what ``patch_size="auto"`` fits with
the default autoencoder, TAEF2, so that the distance is the one its operators close."""


def latent_w2_label(patch_size: int) -> str:
    """How tables name the latent W2 of patches of side ``patch_size``.

    Examples
    --------
    >>> latent_w2_label(1)
    'latent_w2 (p=1)'
    """
    return f"latent_w2 (p={patch_size})"


def resolve_autoencoder(autoencoder: Any, device: torch.device) -> Autoencoder:
    """An `Autoencoder` used where it is, or anything `load_autoencoder` accepts, loaded."""
    if isinstance(autoencoder, Autoencoder):
        return autoencoder
    return load_autoencoder(autoencoder, device=device)


def _enough(stats: GaussianStats, name: str) -> GaussianStats:
    if stats.count < 2:
        raise ValueError(f"{name} gives {stats.count} latent patch; latent_w2 needs at least 2")
    return stats


def _set_stats(
    images: Any,
    name: str,
    autoencoder: Autoencoder,
    patch_size: int,
    batch_size: int = 1,
) -> GaussianStats:
    """The statistics of every latent patch of a set, merged over its batches."""
    merged = None
    for stats, _ in latent_patch_stats(
        images, autoencoder, patch_size, batch_size=batch_size, name=name
    ):
        merged = stats if merged is None else merged.merge(stats)
    if merged is None:
        raise ValueError(f"{name} is empty: expected at least one image")
    return _enough(merged, name)


def _image_stats(
    image: Tensor, name: str, autoencoder: Autoencoder, patch_size: int
) -> GaussianStats:
    """The statistics of the latent patches of one ``3 x H x W`` image."""
    ((stats, _),) = latent_patch_stats(image[None], autoencoder, patch_size, name=name)
    return stats


def _distance(stats: GaussianStats, reference: GaussianStats) -> float:
    """W2 between the Gaussians of two statistics, on the device of the first."""
    mean, covariance = (value.to(stats.device) for value in (reference.mean, reference.covariance))
    return float(w2_distance(stats.mean, stats.covariance, mean, covariance))


def latent_w2(
    images: Any,
    reference: Any,
    autoencoder: Any,
    *,
    patch_size: int = DEFAULT_LATENT_PATCH_SIZE,
    batch_size: int = 1,
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
    patch_size : int, default DEFAULT_LATENT_PATCH_SIZE (1)
        Side ``p`` of the latent patches. Every command of the CLI uses the operator's
        (``patch_size_``) when it has one, and says which in the column's name
        (`latent_w2_label`).
    batch_size : int, default 1
        Images per encoder pass (same-size images only): one keeps the memory to one
        image's encoding.
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
    autoencoder = resolve_autoencoder(autoencoder, resolve_device(device))
    stats = _set_stats(images, "images", autoencoder, patch_size, batch_size)
    return _distance(stats, _set_stats(reference, "reference", autoencoder, patch_size, batch_size))
