"""How a LatentOTTransformer fits: patch statistics of each side, streamed and merged.

The restored images' and the natural images' latent patches are accumulated batch by batch
(:func:`latent_ot.encoding.latent_patch_stats`), across ranks under
:func:`latent_ot.distributed.synchronize_fit`; without natural images the natural side is the
prior's statistics at the scale of the restored images. The Gaussian map is refitted from the
statistics after every call. Also here: the autoencoder, loaded once and cached, and the
memory block around a loop of calls with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .. import memory
from ..autoencoders import load_autoencoder
from ..devices import resolve_device
from ..distributed import gather_stats, report_failure, sum_counts, synchronizing
from ..encoding import latent_patch_stats
from ..patches import patch_dim
from ..priors import NaturalPrior, has_builtin_prior, load_prior, restored_image_side
from ..stats import GaussianStats
from ._common import make_generator
from ._latent_checks import resolve_noise_scale, resolve_patch_size, resolve_rtol
from .gaussian_transport import GaussianOTTransformer


class LatentFitMixin:
    """The fitting half of :class:`~latent_ot.LatentOTTransformer`: its private methods, and
    :meth:`reusing_freed_memory`."""

    def reusing_freed_memory(self) -> contextlib.AbstractContextManager[bool]:
        """A block in which this operator's calls keep the memory they free for the next.

        Each call of ``fit``, ``partial_fit``, ``transform`` and ``sweep`` already runs in such
        a block and gives the memory back at its end; a loop of calls (one file at a time, as
        ``latent-ot transform`` runs) is faster in one block around the whole loop, which keeps
        the memory between calls. It is :func:`latent_ot.memory.reusing_freed_memory` for this
        operator's autoencoder: that module says what it changes and how to decline it.

        Returns
        -------
        contextlib.AbstractContextManager[bool]
            Yields whether freed memory is kept for reuse inside the block.

        Examples
        --------
        >>> import numpy as np
        >>> from latent_ot import LatentOTTransformer
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.random((32, 32, 3)) for _ in range(2)]
        >>> operator = LatentOTTransformer(vae="pixel", random_state=0).fit(images, images)
        >>> with operator.reusing_freed_memory():
        ...     outputs = [operator.transform(image) for image in images]
        >>> [output.shape for output in outputs]
        [(32, 32, 3), (32, 32, 3)]
        """
        return memory.reusing_freed_memory(self._autoencoder())

    def _start_fit(self, autoencoder) -> None:
        device = resolve_device(self.device)
        self.latent_channels_ = autoencoder.latent_channels
        self.factor_ = autoencoder.factor
        self.patch_size_ = resolve_patch_size(self.patch_size, self.latent_channels_)
        self.patch_dim_ = patch_dim(self.latent_channels_, self.patch_size_)
        self.restored_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.natural_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.n_images_restored_ = 0
        self.n_images_natural_ = 0

    def _accumulate_sides(self, sides: dict, autoencoder) -> None:
        """Add each side's images (None: none) to its statistics, across ranks when
        synchronizing; then refit the map, also after a failed batch."""
        try:
            # One block for all batches: memory freed by one is reused by the next.
            with memory.reusing_freed_memory(autoencoder):
                if synchronizing():
                    self._accumulate_across_ranks(sides, autoencoder)
                else:
                    for name, images in sides.items():
                        if images is not None:
                            self._accumulate(name, images, autoencoder)
        finally:
            self._fit_transport()

    def _accumulate(self, name: str, images, autoencoder) -> None:
        """Merge the patches of ``images`` into the ``name`` side, one batch at a time."""
        stats = getattr(self, f"{name}_stats_").to(resolve_device(self.device))
        count = 0
        for batch_stats, n_images in self._batch_stats(name, images, autoencoder):
            stats.merge(batch_stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + n_images)
            count += n_images
        if count == 0:
            raise ValueError(f"{name} is empty: expected at least one image")

    def _accumulate_across_ranks(self, sides: dict, autoencoder) -> None:
        """Accumulate this rank's share of the call, then merge every rank's, in rank order."""
        device = resolve_device(self.device)
        local = {name: GaussianStats(self.patch_dim_, device=device) for name in sides}
        counts = dict.fromkeys(sides, 0)
        try:
            for name, images in sides.items():
                for batch_stats, n_images in self._batch_stats(name, images or [], autoencoder):
                    local[name].merge(batch_stats)
                    counts[name] += n_images
        except BaseException as error:
            report_failure(error)  # the other ranks raise now instead of timing out
            raise
        merged = gather_stats([local[name] for name in sides])
        totals = sum_counts([counts[name] for name in sides])
        for name, stats, total in zip(sides, merged, totals, strict=True):
            if sides[name] is not None and total == 0:
                raise ValueError(f"{name} is empty on every rank: expected at least one image")
            getattr(self, f"{name}_stats_").to(device).merge(stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + total)

    def _batch_stats(self, name: str, images, autoencoder) -> Iterator[tuple[GaussianStats, int]]:
        """Statistics of the patches of each batch of ``images``, with the batch's size."""
        return latent_patch_stats(
            images,
            autoencoder,
            self.patch_size_,
            batch_size=self.batch_size,
            chunk_size=self.patch_chunk_size,
            device=resolve_device(self.device),
            generator=self._latent_generator(autoencoder),
            name=name,
            verbose=self.verbose,
            desc=f"encoding {name}",
        )

    def _fit_transport(self) -> None:
        target = self._natural_target()
        if self.restored_stats_.count < 2 or target.count < 2:
            self.__dict__.pop("gaussian_ot_", None)
            return
        self.gaussian_ot_ = self._gaussian_transport().fit_stats(self.restored_stats_, target)
        self.w2_ = self.gaussian_ot_.w2_

    def _gaussian_transport(self) -> GaussianOTTransformer:
        """The unfitted Gaussian transport this operator's parameters describe."""
        return GaussianOTTransformer(
            stochastic=self.stochastic,
            rtol=resolve_rtol(self.rtol, getattr(self, "patch_size_", None)),
            shrinkage=self.shrinkage,
            max_gain=self.max_gain,
            noise_scale=resolve_noise_scale(self.noise_scale, getattr(self, "patch_size_", None)),
            random_state=self.random_state,
        )

    def _natural_target(self) -> GaussianStats:
        """The natural images' statistics, or without any, the prior's nearest in scale.

        Streaming restored images alone with an autoencoder that has no built-in prior leaves
        the operator unfitted until natural images come.
        """
        self.prior_scale_ = None
        no_prior = self.prior == "builtin" and not has_builtin_prior(self._autoencoder().name)
        if self.n_images_natural_ > 0 or self.restored_stats_.count == 0 or no_prior:
            return self.natural_stats_
        side = restored_image_side(
            self.restored_stats_.count, self.n_images_restored_, self.patch_size_, self.factor_
        )
        scale = None if self.prior_scale == "auto" else self.prior_scale
        stats, self.prior_scale_ = self._natural_prior(self._autoencoder()).select(
            self.patch_size_, side, scale=scale
        )
        return stats.to(self.restored_stats_.device)

    def _natural_prior(self, autoencoder) -> NaturalPrior:
        """The ``prior`` parameter, loaded once and checked against the autoencoder."""
        key = (self.prior if isinstance(self.prior, str | os.PathLike) else id(self.prior),)
        key += (autoencoder.name,)
        cached = self.__dict__.get("_prior_cache")
        if cached is None or cached[0] != key:
            prior = load_prior(self.prior, autoencoder.name)
            prior.check_matches(autoencoder.latent_channels, autoencoder.factor, autoencoder.name)
            # a patch size the prior lacks fails here, before any encoding
            prior.select(resolve_patch_size(self.patch_size, autoencoder.latent_channels), 1.0)
            self._prior_cache = (key, prior)
        return self._prior_cache[1]

    def _autoencoder(self):
        """The loaded autoencoder, (re)loaded when the parameters that build it changed."""
        key = (
            self.vae if isinstance(self.vae, str | os.PathLike) else id(self.vae),
            str(resolve_device(self.device)),
            str(self.dtype),
            self.sample_latent,
            self.tile_size,
        )
        cached = self.__dict__.get("_autoencoder_cache")
        if cached is None or cached[0] != key:
            autoencoder = load_autoencoder(
                self.vae,
                device=resolve_device(self.device),
                dtype=self.dtype,
                sample_latent=self.sample_latent,
                tile_size=self.tile_size,
            )
            self._autoencoder_cache = (key, autoencoder)
        return self._autoencoder_cache[1]

    def _latent_generator(self, autoencoder) -> torch.Generator | None:
        if not self.sample_latent:
            return None
        # A stream apart from the transport noise, so that one does not shift the other.
        seed = self.random_state + 1 if isinstance(self.random_state, int) else self.random_state
        return make_generator(seed, autoencoder.device)
