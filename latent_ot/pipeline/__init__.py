"""The two halves of the path from images to transported images.

- :mod:`latent_ot.pipeline.statistics`: images -> batches of equal size -> reflect-pad to the
  autoencoder's factor -> encode -> overlapping latent patches -> :class:`~latent_ot.GaussianStats`
  (what ``fit`` walks, and the latent metrics with it).
- :mod:`latent_ot.pipeline.apply`: restored pixels -> encode -> every patch through the map ->
  fold -> decode -> crop, then the interpolation with the input (what ``transform`` walks).

Examples
--------
>>> import torch
>>> from latent_ot.autoencoders import load_autoencoder
>>> from latent_ot.pipeline import latent_patch_stats, transport_images
>>> pixels = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
>>> [stats.count for stats, _ in latent_patch_stats(pixels, load_autoencoder("pixel"), 3)]
[20]
>>> out = transport_images(pixels, load_autoencoder("pixel"), lambda v: v, patch_size=3)
>>> torch.allclose(out, pixels, atol=1e-6)
True
"""

from .apply import (
    INTERPOLATIONS,
    SHIFT_COUNTS,
    blend,
    gaussian_low_pass,
    grid_shifts,
    sweep_images,
    transport_images,
    transport_latents,
)
from .statistics import (
    DEFAULT_PATCH_CHUNK_SIZE,
    batch_name,
    batches_by_size,
    check_latent_fits_patch,
    crop_to,
    encode_padded,
    image_batches,
    latent_patch_stats,
    pad_to_multiple,
    patch_stats,
)

__all__ = [
    "DEFAULT_PATCH_CHUNK_SIZE",
    "INTERPOLATIONS",
    "SHIFT_COUNTS",
    "batch_name",
    "batches_by_size",
    "blend",
    "check_latent_fits_patch",
    "crop_to",
    "encode_padded",
    "gaussian_low_pass",
    "grid_shifts",
    "image_batches",
    "latent_patch_stats",
    "pad_to_multiple",
    "patch_stats",
    "sweep_images",
    "transport_images",
    "transport_latents",
]
