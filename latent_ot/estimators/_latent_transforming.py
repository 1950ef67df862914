"""How a LatentOTTransformer transforms: batches of images through the fitted patch map.

Every ``sweep`` (and so every ``transform``) encodes a batch once, maps its latent patches,
folds and decodes once per ``alpha`` (:func:`latent_ot.transport.sweep_images`), all in one
memory-reuse block. With ``zero_shot`` the map is refitted per image from its own patches to
the fitted natural statistics, on a copy: the fitted operator never changes.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from sklearn.base import clone

from ..encoding import image_batches, name_of, patch_stats, stack_pixels
from ..io import ImageSource
from ..memory import reusing_freed_memory
from ..transport import sweep_images
from ._common import make_generator
from ._latent_checks import check_compatible


class LatentTransformMixin:
    """The transforming half of :class:`~latent_ot.LatentOTTransformer` (private methods)."""

    def _transport_all(
        self, source: ImageSource, alphas: list[float], outputs: list[dict[int, Any]]
    ) -> None:
        """Fill ``outputs[i][index]`` with the output of image ``index`` at ``alphas[i]``."""
        autoencoder = self._autoencoder()
        check_compatible(self, autoencoder)
        map_for = self._map_for(make_generator(self.random_state, autoencoder.device))
        options = {
            "patch_size": self.patch_size_,
            "fold_window": self.fold_window,
            "chunk_size": self.patch_chunk_size,
            "residual": self.residual,
            "interpolation": self.interpolation,
            "low_frequency_sigma": self.low_frequency_sigma,
            "per_image": self.zero_shot,
            "generator": self._latent_generator(autoencoder),
        }
        batches = image_batches(source, self.batch_size, verbose=self.verbose, desc="transporting")
        with reusing_freed_memory(autoencoder):
            for group in batches:
                originals = stack_pixels(group, autoencoder.device)
                images = sweep_images(
                    originals, autoencoder, map_for, alphas, name=name_of(group), **options
                )
                for per_alpha, batch in zip(outputs, images, strict=True):
                    for k, (index, item) in enumerate(group):
                        # alpha = 1 gives the inputs themselves, bit for bit
                        per_alpha[index] = (
                            item.original() if batch is None else item.to_output(batch[k])
                        )

    def _map_for(self, generator: torch.Generator):
        """The patch map for given latents: the fitted one, or with ``zero_shot`` one fitted
        from the image's own patches to the fitted natural statistics (the fit is not
        changed)."""
        if not self.zero_shot:
            return lambda latents: partial(self.gaussian_ot_.transport_tensor, generator=generator)

        def fitted_on(latents: torch.Tensor):
            source = patch_stats(latents, self.patch_size_, chunk_size=self.patch_chunk_size)
            own = clone(self.gaussian_ot_).fit_stats(source, self.gaussian_ot_.target_stats_)
            return partial(own.transport_tensor, generator=generator)

        return fitted_on
