"""The identity autoencoder, for transport in pixel space and for tests."""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import Autoencoder


class PixelAutoencoder(Autoencoder):
    """The identity autoencoder: latents are the pixels (factor 1, 3 channels).

    Use it to run the transport in pixel space. :meth:`decode` clamps to ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> ae = PixelAutoencoder()
    >>> ae.factor, ae.latent_channels
    (1, 3)
    >>> ae.decode(torch.full((1, 3, 2, 2), 1.5)).max().item()
    1.0
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(factor=1, latent_channels=3, name="pixel", device=device, dtype=dtype)

    def _default_tile_overlap(self, tile_size: int) -> int:
        return 0  # each output pixel is its input pixel: no context needed

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return images

    def _decode(self, latents: Tensor) -> Tensor:
        return latents
