"""The :class:`Autoencoder` interface: checks, casts, inference mode, tiling, finite outputs.

Subclasses implement ``_encode`` and ``_decode`` on tensors already on the model's device and
dtype; everything the contract promises around them is done here once.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from ..devices import resolve_dtype
from ._tiling import AUTO_TILE_SIZES, _one_image_at_a_time, _round_down, _tiled

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _as_output(tensor: Tensor) -> Tensor:
    # Called outside inference mode: the copy is an ordinary tensor that callers may modify in
    # place, which inference tensors forbid.
    return tensor.float() if tensor.dtype != torch.float32 else tensor.clone()


class Autoencoder(ABC):
    """An image autoencoder with a fixed contract on ranges, shapes and dtypes.

    Subclasses implement ``_encode`` and ``_decode`` on tensors already on the model's device
    and dtype, and ``_move`` when they hold modules; this class does the checks, the casts, the
    inference mode, the tiling of large images (see :meth:`set_tiling`) and the float32 retry
    when a half-precision model overflows.

    Outputs are never NaN or infinite: when a float16 / bfloat16 model overflows, the batch is
    computed again in float32 (with a ``RuntimeWarning``); when that does not help either, a
    ``ValueError`` names the autoencoder.

    Attributes
    ----------
    factor : int
        Spatial downsampling factor: an ``H x W`` image has an ``H/factor x W/factor`` latent.
    latent_channels : int
        Channels of the latent.
    name : str
        Human-readable name, used in error messages.
    device : torch.device
        Where the model runs and where outputs are returned.
    dtype : torch.dtype
        The model's compute dtype; inputs are cast to it, outputs are float32.
    sample_latent : bool
        Whether :meth:`encode` samples the latent distribution instead of taking its mean.
    tile_size : int or None
        Images larger than this (pixels, height or width) are processed in tiles; None: never.
    tile_overlap : int
        Pixels shared by neighbouring tiles.

    Examples
    --------
    >>> import torch
    >>> from latent_ot.autoencoders import PixelAutoencoder
    >>> ae = PixelAutoencoder()
    >>> images = torch.rand(2, 3, 8, 8)
    >>> latents = ae.encode(images)
    >>> latents.shape, latents.dtype
    (torch.Size([2, 3, 8, 8]), torch.float32)
    >>> torch.equal(ae.decode(latents), images)
    True
    """

    factor: int
    latent_channels: int
    name: str
    device: torch.device
    dtype: torch.dtype
    sample_latent: bool = False
    # Whether "auto" tiles: only for adapters whose tiling was checked (a subclass whose model
    # has attention or normalisation would be tiled approximately without knowing it).
    _tiles_by_default: bool = False

    def __init__(
        self,
        *,
        factor: int,
        latent_channels: int,
        name: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.factor = int(factor)
        self.latent_channels = int(latent_channels)
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.set_tiling("auto")

    # ---- tiling --------------------------------------------------------------------------

    def set_tiling(
        self, tile_size: int | str | None = "auto", overlap: int | None = None
    ) -> Autoencoder:
        """Choose when and how large images are encoded and decoded tile by tile.

        Tiles are processed one at a time, one image at a time, so that the memory stays about
        that of one ``tile_size`` image whatever the image size. Images no larger than
        ``tile_size`` run in one pass, exactly as without tiling.

        Parameters
        ----------
        tile_size : int, "auto" or None, default "auto"
            Largest tile, in pixels; a multiple of :attr:`factor`. ``"auto"`` takes
            :data:`AUTO_TILE_SIZES` for the current device (re-read after :meth:`to`) for the
            adapters of this package, and never tiles :class:`PixelAutoencoder` or other
            subclasses; None never tiles.
        overlap : int, optional
            Pixels shared by neighbouring tiles, a multiple of ``2 * factor`` and at most
            ``tile_size / 2``. By default the adapter's choice: enough context for the TAESD
            family to match the untiled output to float precision, a quarter of the tile for
            ``AutoencoderKL`` (diffusers' default).

        Returns
        -------
        Autoencoder
            ``self``, changed in place.

        Raises
        ------
        ValueError
            If ``tile_size`` or ``overlap`` is not one of the values described above.

        Examples
        --------
        >>> from latent_ot.autoencoders import PixelAutoencoder
        >>> ae = PixelAutoencoder().set_tiling(64, overlap=16)
        >>> ae.tile_size, ae.tile_overlap
        (64, 16)
        """
        if tile_size is not None and tile_size != "auto":
            if isinstance(tile_size, bool) or not isinstance(tile_size, int):
                raise ValueError(f"tile_size must be an int, 'auto' or None, got {tile_size!r}")
        if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int)):
            raise ValueError(f"overlap must be an int or None, got {overlap!r}")
        self._resolve_tiling(tile_size, overlap)  # check now, with this device's "auto" value
        self._tiling_request = (tile_size, overlap)
        return self

    @property
    def tile_size(self) -> int | None:
        """Largest tile in pixels, ``"auto"`` resolved for the current device; None: no tiling."""
        return self._tiling()[0]

    @property
    def tile_overlap(self) -> int:
        """Pixels shared by neighbouring tiles."""
        return self._tiling()[1]

    def _tiling(self) -> tuple[int | None, int]:
        return self._resolve_tiling(*self._tiling_request)

    def _resolve_tiling(self, tile_size: Any, overlap: int | None) -> tuple[int | None, int]:
        if tile_size == "auto":
            tile_size = self._auto_tile_size()
        if tile_size is None:
            return None, 0
        if tile_size <= 0 or tile_size % self.factor:
            raise ValueError(
                f"tile_size must be a positive multiple of the factor {self.factor} of "
                f"{self.name}, got {tile_size}"
            )
        if overlap is None:
            overlap = self._default_tile_overlap(tile_size)
        if overlap < 0 or overlap % (2 * self.factor) or 2 * overlap > tile_size:
            raise ValueError(
                f"overlap must be a multiple of 2 x factor = {2 * self.factor} between 0 and "
                f"tile_size / 2 = {tile_size // 2} for {self.name}, got {overlap}"
            )
        return tile_size, overlap

    def _auto_tile_size(self) -> int | None:
        if not self._tiles_by_default:
            return None
        return AUTO_TILE_SIZES.get(self.device.type, AUTO_TILE_SIZES["cpu"])

    def _default_tile_overlap(self, tile_size: int) -> int:
        # 64 pixels of context on each side covers the receptive field of the TAESD family's
        # convolutions (measured: tiled equals untiled to ~1e-7); see TAESDAutoencoder.
        return _round_down(min(128, tile_size // 2), 2 * self.factor)

    def _needs_tiling(self, height: int, width: int) -> bool:
        tile_size = self.tile_size
        return tile_size is not None and max(height, width) > tile_size

    # ---- encode / decode -----------------------------------------------------------------

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Encode RGB images in ``[0, 1]`` to latents.

        Parameters
        ----------
        images : Tensor
            Float tensor ``N x 3 x H x W`` in ``[0, 1]``, on any device; ``H`` and ``W`` must be
            multiples of :attr:`factor` (pad the images first, nothing is cropped here).
        generator : torch.Generator, optional
            Random generator for the latent sample; used only when :attr:`sample_latent` is
            True, where the same seed gives the same latents.

        Returns
        -------
        Tensor
            Float32 latents ``N x latent_channels x H/factor x W/factor`` on :attr:`device`.

        Raises
        ------
        ValueError
            If ``images`` has the wrong shape or dtype, holds NaN or infinite values, or the
            model gives NaN or infinite latents even in float32.
        """
        _check_images(images, self.factor)
        latents = self._run_finite("encode", self._encode_any_size, images, generator)
        return _as_output(latents)

    def decode(self, latents: Tensor) -> Tensor:
        """Decode latents to RGB images clamped to ``[0, 1]``.

        Parameters
        ----------
        latents : Tensor
            Float tensor ``N x latent_channels x h x w``, on any device.

        Returns
        -------
        Tensor
            Float32 images ``N x 3 x h*factor x w*factor`` in ``[0, 1]`` on :attr:`device`.

        Raises
        ------
        ValueError
            If ``latents`` has the wrong shape, holds NaN or infinite values, or the model
            gives NaN or infinite images even in float32.
        """
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape N x {self.latent_channels} x h x w for {self.name}, "
                f"got {tuple(latents.shape)}"
            )
        images = self._run_finite("decode", self._decode_any_size, latents)
        # Outside inference mode, so the clamped copy is an ordinary tensor (see _as_output).
        return images.float().clamp(0, 1)

    def _run_finite(self, what: str, run: Any, inputs: Tensor, *args: Any) -> Tensor:
        """``run(inputs, *args)`` in inference mode, never returning NaN or infinite values.

        A float16 / bfloat16 model that overflows is run again in float32; the modules are cast
        for that pass only (outside inference mode, so their weights stay ordinary tensors).
        """
        kind = "images" if what == "encode" else "latents"
        if not torch.isfinite(inputs).all():
            raise ValueError(f"{kind} must be finite: they hold NaN or infinite values")
        with torch.inference_mode():
            outputs = run(inputs.to(device=self.device, dtype=self.dtype), *args)
            if torch.isfinite(outputs).all():
                return outputs
        retried = self.dtype in _HALF_DTYPES
        if retried:
            warnings.warn(
                f"{self.name}: {what} overflowed in {self.dtype} (NaN or infinite values); "
                f"computed again in float32. Load the autoencoder with dtype=torch.float32 to "
                f"avoid the wasted pass.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._move(self.device, torch.float32)
            try:
                with torch.inference_mode():
                    outputs = run(inputs.to(device=self.device, dtype=torch.float32), *args)
            finally:
                self._move(self.device, self.dtype)
            if torch.isfinite(outputs).all():
                return outputs
        again = " and again in float32" if retried else ""
        raise ValueError(
            f"{self.name}: {what} gave NaN or infinite values in {self.dtype}{again} from "
            f"finite {kind}; the model overflows on these inputs or its weights are damaged"
        )

    def _encode_any_size(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self._needs_tiling(*images.shape[-2:]):
            return self._encode(images, generator)
        return _one_image_at_a_time(lambda image: self._encode_tiled(image, generator), images)

    def _decode_any_size(self, latents: Tensor) -> Tensor:
        height, width = (size * self.factor for size in latents.shape[-2:])
        if not self._needs_tiling(height, width):
            return self._decode(latents)
        return _one_image_at_a_time(self._decode_tiled, latents)

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        """One large image -> latents, tile by tile; exact for a model of convolutions only.

        Adapters whose model has wider reach (normalisation, attention) override it.
        """
        return self._tile_images(lambda tile: self._encode(tile, generator), image)

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        """One large latent -> image, tile by tile (see :meth:`_encode_tiled`)."""
        return self._tile_latents(self._decode, latents)

    def _tile_images(self, run: Any, images: Tensor) -> Tensor:
        """``run`` (downsampling by :attr:`factor`) on ``images`` tile by tile."""
        tile_size, overlap = self._tiling()
        return _tiled(
            run,
            images,
            tile=tile_size,
            overlap=overlap,
            align=self.factor,
            scale=Fraction(1, self.factor),
        )

    def _tile_latents(self, run: Any, latents: Tensor) -> Tensor:
        """``run`` (upsampling by :attr:`factor`) on ``latents`` tile by tile."""
        tile_size, overlap = self._tiling()
        return _tiled(
            run,
            latents,
            tile=tile_size // self.factor,
            overlap=overlap // self.factor,
            align=1,
            scale=Fraction(self.factor),
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> Autoencoder:
        """Move the model to ``device`` and/or cast it to ``dtype`` (None keeps the current one).

        Returns
        -------
        Autoencoder
            ``self``, moved in place.
        """
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else resolve_dtype(dtype, device)
        self._move(device, dtype)
        self.device, self.dtype = device, dtype
        return self

    @abstractmethod
    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Images in [0, 1] on the model's device and dtype -> latents."""

    @abstractmethod
    def _decode(self, latents: Tensor) -> Tensor:
        """Latents on the model's device and dtype -> images, roughly in [0, 1]."""

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:  # noqa: B027
        """Move the underlying modules; nothing to do for a model without weights."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, factor={self.factor}, "
            f"latent_channels={self.latent_channels}, device={self.device}, dtype={self.dtype}, "
            f"tile_size={self.tile_size})"
        )


def _check_images(images: Any, factor: int) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape N x 3 x H x W, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(
            f"images height and width must be multiples of the autoencoder's factor {factor}, "
            f"got {height} x {width}; pad the images first (e.g. reflect padding)"
        )
