"""Adapters for the autoencoders of diffusers: ``AutoencoderKL`` and ``AutoencoderTiny``.

diffusers is imported lazily, inside the functions that need it: it takes seconds to import and
the pixel and TAESD paths do not need it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from ._base import Autoencoder
from ._tiling import _round_down
from .taesd import _TAESD_ACTIVATIONS_PER_WIDTH

# Activation values per input pixel at the peak of an encode + decode, per channel of the
# full-resolution layers (``block_out_channels[0]``): the Stable Diffusion VAE's configuration
# (128) peaked at 3.7 to 3.8 KB per pixel above the model on the CPU in float32, contiguous
# (512 and 1024 px, untiled); channels-last takes less (3.2 KB at 512 px).
_KL_ACTIVATIONS_PER_WIDTH = 7.35


class _DiffusersAutoencoder(Autoencoder):
    """Shared plumbing of the diffusers adapters: the module lives in ``self.model``."""

    _convolutional = True

    def __init__(self, model: Any, *, factor: int, name: str | None) -> None:
        if name is None:
            source = getattr(model.config, "_name_or_path", None)
            name = f"{type(model).__name__} ({source})" if source else type(model).__name__
        self.model = model.eval()
        super().__init__(
            factor=factor,
            latent_channels=model.config.latent_channels,
            name=name,
            device=model.device,
            dtype=model.dtype,
        )

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        keep_in_float32 = getattr(self.model, "_keep_in_fp32_modules", None)
        if keep_in_float32 or getattr(self.model, "is_quantized", False):
            self.model.to(device=device, dtype=dtype)
        else:
            # diffusers' ModelMixin.to logs a warning at every cast to a dtype, even with no
            # module to keep in float32; for such a model nn.Module.to is the same, silent.
            nn.Module.to(self.model, device=device, dtype=dtype)

    def _set_module_format(self, memory_format: torch.memory_format) -> None:
        if not getattr(self.model, "is_quantized", False):  # packed weights have no layout
            nn.Module.to(self.model, memory_format=memory_format)

    @contextmanager
    def _model_tiling(self, settings: Mapping[str, Any]) -> Iterator[None]:
        """Set diffusers' own tiling attributes for one call, then restore the user's."""
        saved = {name: getattr(self.model, name) for name in settings}
        for name, value in settings.items():
            setattr(self.model, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(self.model, name, value)


class DiffusersKLAutoencoder(_DiffusersAutoencoder):
    """Adapter for a ``diffusers.AutoencoderKL`` (the Stable Diffusion VAEs).

    The model works in ``[-1, 1]``; the conversion from and to ``[0, 1]`` happens here.
    Latents are the raw encoder output, *not* multiplied by ``config.scaling_factor``: the
    transport map is affine, so a global scale changes nothing in its result, and raw latents
    are what the decoder expects back.

    Large images are tiled by diffusers' own ``AutoencoderKL`` tiling, set from
    :meth:`~Autoencoder.set_tiling` for each call (the model's own settings are restored
    after). It blends neighbouring tiles linearly, and is approximate: GroupNorm and the
    attention of the mid block see one tile, not the whole image.

    Parameters
    ----------
    model : diffusers.AutoencoderKL
        The model; it is put in eval mode and moved by :meth:`to` in place.
    sample_latent : bool, default False
        If False, :meth:`encode` returns the mean of the latent distribution (deterministic).
        If True, it draws a sample with the ``generator`` given to :meth:`encode`.
    name : str, optional
        Name for messages; defaults to the class name and the path it was loaded from.

    Examples
    --------
    >>> import torch
    >>> from diffusers import AutoencoderKL
    >>> model = AutoencoderKL(
    ...     block_out_channels=(8, 16),
    ...     down_block_types=("DownEncoderBlock2D",) * 2,
    ...     up_block_types=("UpDecoderBlock2D",) * 2,
    ...     norm_num_groups=8,
    ...     latent_channels=4,
    ... )
    >>> ae = DiffusersKLAutoencoder(model)
    >>> ae.factor, ae.latent_channels
    (2, 4)
    >>> ae.encode(torch.rand(1, 3, 16, 16)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, model: Any, sample_latent: bool = False, *, name: str | None = None):
        # Every encoder block but the last halves the resolution.
        factor = 2 ** (len(model.config.block_out_channels) - 1)
        super().__init__(model, factor=factor, name=name)
        self.sample_latent = bool(sample_latent)

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        with self._model_tiling({"use_tiling": False}):
            return self._encode_now(images, generator)

    def _decode(self, latents: Tensor) -> Tensor:
        with self._model_tiling({"use_tiling": False}):
            return self._decode_now(latents)

    def _encode_now(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        distribution = self.model.encode(images * 2 - 1).latent_dist
        if self.sample_latent:
            return distribution.sample(generator=generator)
        return distribution.mean

    def _decode_now(self, latents: Tensor) -> Tensor:
        return (self.model.decode(latents).sample + 1) / 2

    # diffusers tiles AutoencoderKL itself, blending the tiles' moments (so the encoding is still
    # the mean of one distribution) and decoded pixels with linear ramps. Its tiles are only
    # approximately seamless: GroupNorm and the mid-block attention see one tile, not the image.

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        with self._diffusers_tiling():
            return self._encode_now(image, generator)

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        with self._diffusers_tiling():
            return self._decode_now(latents)

    def _activation_elements_per_pixel(self) -> float:
        return _KL_ACTIVATIONS_PER_WIDTH * self.model.config.block_out_channels[0]

    def _default_tile_overlap(self, tile_size: int) -> int:
        return _round_down(tile_size // 4, 2 * self.factor)  # diffusers' default overlap

    def _diffusers_tiling(self) -> AbstractContextManager[None]:
        tile_size, overlap = self._tiling()
        if tile_size is None:
            return self._model_tiling({"use_tiling": False})
        return self._model_tiling(
            {
                "use_tiling": True,
                "tile_sample_min_size": tile_size,
                "tile_latent_min_size": tile_size // self.factor,
                # A Fraction keeps diffusers' int(size * overlap_factor) exact: a float can
                # round a tile's stride one pixel short, which misaligns the tiles.
                "tile_overlap_factor": Fraction(overlap, tile_size),
            }
        )


class DiffusersTinyAutoencoder(_DiffusersAutoencoder):
    """Adapter for a ``diffusers.AutoencoderTiny`` (TAESD models on the hub).

    diffusers' ``AutoencoderTiny`` takes and returns images in ``[-1, 1]`` (its encoder maps
    them back to TAESD's ``[0, 1]`` internally, its decoder maps its output to ``[-1, 1]``);
    the conversion from and to ``[0, 1]`` happens here. Latents are raw (no ``scale_latents``).
    The encoder is deterministic.

    Parameters
    ----------
    model : diffusers.AutoencoderTiny
        The model; it is put in eval mode and moved by :meth:`to` in place.
    name : str, optional
        Name for messages; defaults to the class name and the path it was loaded from.

    Examples
    --------
    >>> import torch
    >>> from diffusers import AutoencoderTiny
    >>> model = AutoencoderTiny(
    ...     encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)
    ... )
    >>> ae = DiffusersTinyAutoencoder(model)
    >>> ae.factor, ae.latent_channels
    (8, 4)
    >>> ae.decode(ae.encode(torch.rand(1, 3, 16, 16))).shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(self, model: Any, *, name: str | None = None):
        # Every encoder stage but the first starts with a stride-2 conv.
        factor = 2 ** (len(model.config.encoder_block_out_channels) - 1)
        super().__init__(model, factor=factor, name=name)

    # AutoencoderTiny has only convolutions, so our exact tiling applies; diffusers' own tiling
    # is kept off, as it writes into a 4-channel buffer (wrong for taesd3 / taef1).

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        with self._model_tiling({"use_tiling": False}):
            return self.model.encode(images * 2 - 1).latents

    def _decode(self, latents: Tensor) -> Tensor:
        with self._model_tiling({"use_tiling": False}):
            return (self.model.decode(latents).sample + 1) / 2

    def _activation_elements_per_pixel(self) -> float:
        # The TAESD family's layout without the pooling branch: TAESDAutoencoder's estimate.
        return _TAESD_ACTIVATIONS_PER_WIDTH * self.model.config.decoder_block_out_channels[-1]


_DIFFUSERS_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _wrap_diffusers(model: Any, sample_latent: bool) -> Autoencoder | None:
    """The adapter for a diffusers autoencoder instance, or None if ``model`` is not one."""
    if "diffusers" not in sys.modules:  # no diffusers model can exist yet: skip the import
        return None
    import diffusers

    if isinstance(model, diffusers.AutoencoderKL):
        return DiffusersKLAutoencoder(model, sample_latent=sample_latent)
    if isinstance(model, diffusers.AutoencoderTiny):
        return DiffusersTinyAutoencoder(model)
    return None


def _diffusers_class(class_name: Any, source: str) -> Any:
    import diffusers

    if class_name not in _DIFFUSERS_CLASSES:
        raise ValueError(
            f"{source}: autoencoder class {class_name!r} is not supported; "
            f"supported diffusers classes: {', '.join(_DIFFUSERS_CLASSES)}"
        )
    return getattr(diffusers, class_name)
