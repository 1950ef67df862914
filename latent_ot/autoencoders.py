"""Pretrained image autoencoders behind one small interface.

The transport is computed on latents, so every autoencoder is wrapped in an :class:`Autoencoder`
with the same contract: :meth:`~Autoencoder.encode` takes RGB images in ``[0, 1]`` and returns
deterministic float32 latents, :meth:`~Autoencoder.decode` takes latents and returns RGB images
clamped to ``[0, 1]``. Each adapter hides its model's own range convention.

Large images are encoded and decoded in overlapping tiles, one at a time, so that the memory
stays that of one tile (:meth:`~Autoencoder.set_tiling`, :data:`AUTO_TILE_SIZES`). Outputs are
never NaN or infinite: a half-precision model that overflows is run again in float32.

Adapters:

- :class:`DiffusersKLAutoencoder` wraps a ``diffusers.AutoencoderKL`` (Stable Diffusion VAEs).
- :class:`DiffusersTinyAutoencoder` wraps a ``diffusers.AutoencoderTiny`` (TAESD on the hub).
- :class:`TAESDAutoencoder` is a small implementation of the TAESD family that loads its
  ``<name>_encoder.pth`` / ``<name>_decoder.pth`` state dicts, including members that diffusers
  cannot load (``taef2``).
- :class:`PixelAutoencoder` is the identity, for transport in pixel space and for tests.

:func:`load_autoencoder` turns a preset name (see :data:`PRESETS`), a hub id, a local directory
or a model instance into one of these. Local copies are searched first in the directory given by
``models_dir`` or by the environment variable :data:`MODELS_DIR_ENV`.

diffusers is imported lazily: it takes seconds to import and the pixel and TAESD paths do not
need it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .devices import resolve_dtype, reusing_freed_cpu_memory
from .exceptions import AutoencoderNotFoundError

__all__ = [
    "AUTO_TILE_SIZES",
    "MODELS_DIR_ENV",
    "PRESETS",
    "Autoencoder",
    "AutoencoderPreset",
    "DiffusersKLAutoencoder",
    "DiffusersTinyAutoencoder",
    "PixelAutoencoder",
    "TAESDAutoencoder",
    "load_autoencoder",
]

MODELS_DIR_ENV = "LATENT_OT_MODELS_DIR"
"""Environment variable naming a directory of local model copies, searched before the hub.

A preset or hub id ``owner/name`` is looked up as ``$LATENT_OT_MODELS_DIR/<preset or name>/``,
which may hold a diffusers model (``config.json`` and weights) or a TAESD-family pair
``<name>_encoder.pth`` + ``<name>_decoder.pth``.
"""

_TAESD_HOME = "https://github.com/madebyollin/taesd"


@dataclass(frozen=True)
class AutoencoderPreset:
    """A named autoencoder that :func:`load_autoencoder` knows how to find.

    Attributes
    ----------
    hub_id : str or None
        Hugging Face hub id loaded with diffusers, or None when only a local copy can be used.
    latent_channels : int
        Channels of the latent.
    factor : int
        Spatial downsampling factor.
    description : str
        One line for the documentation.
    """

    hub_id: str | None
    latent_channels: int
    factor: int
    description: str


PRESETS: Mapping[str, AutoencoderPreset] = MappingProxyType(
    {
        "sd-vae-ft-mse": AutoencoderPreset(
            "stabilityai/sd-vae-ft-mse",
            4,
            8,
            "Stable Diffusion 1 KL VAE, decoder fine-tuned with MSE (the paper's autoencoder).",
        ),
        "sd-vae-ft-ema": AutoencoderPreset(
            "stabilityai/sd-vae-ft-ema", 4, 8, "Stable Diffusion 1 KL VAE, EMA fine-tune."
        ),
        "taesd": AutoencoderPreset(
            "madebyollin/taesd", 4, 8, "Tiny autoencoder for the Stable Diffusion 1/2 latent space."
        ),
        "taesdxl": AutoencoderPreset(
            "madebyollin/taesdxl", 4, 8, "Tiny autoencoder for the SDXL latent space."
        ),
        "taesd3": AutoencoderPreset(
            "madebyollin/taesd3", 16, 8, "Tiny autoencoder for the SD3 latent space."
        ),
        "taef1": AutoencoderPreset(
            "madebyollin/taef1", 16, 8, "Tiny autoencoder for the FLUX.1 latent space."
        ),
        "taef2": AutoencoderPreset(
            None,
            32,
            8,
            "Tiny autoencoder for the FLUX.2 latent space; local taef2_encoder.pth and "
            "taef2_decoder.pth only (diffusers cannot load it).",
        ),
    }
)
"""Preset names accepted by :func:`load_autoencoder`, with where each one comes from."""


def _as_output(tensor: Tensor) -> Tensor:
    # Called outside inference mode: the copy is an ordinary tensor that callers may modify in
    # place, which inference tensors forbid.
    return tensor.float() if tensor.dtype != torch.float32 else tensor.clone()


AUTO_TILE_SIZES: Mapping[str, int] = MappingProxyType({"cpu": 512, "cuda": 1024})
"""Tile size in pixels that ``tile_size="auto"`` gives on each device type (others: ``"cpu"``).

An image larger than this in height or width is encoded and decoded tile by tile, which bounds
the memory at about that of one tile; smaller images run in one pass. On CPU in float32, a
512 px tile takes about 1.1 GB above the weights with the Stable Diffusion VAE and 0.3 GB with
TAEF2 (untiled 1024 px images: 4.0 GB and 1.1 GB); tiles overlap, so a tiled image costs
some more time (about 1.5x for 1024 px in 512 px tiles).
"""

_HALF_DTYPES = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


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
    # Whether CPU passes keep the memory they free for reuse (reusing_freed_memory).
    _reuses_freed_memory: bool = True

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

    # ---- memory --------------------------------------------------------------------------

    def reusing_freed_memory(self) -> AbstractContextManager[bool]:
        """A block in which this autoencoder's CPU passes reuse the memory they free.

        Each :meth:`encode` and :meth:`decode` runs in one; wrap several calls in another to
        reuse memory from one call to the next as well (``fit`` and ``transform`` of
        :class:`~latent_ot.LatentOTTransformer` do). See
        :func:`~latent_ot.devices.reusing_freed_cpu_memory`. It does nothing off the CPU and
        for the Stable Diffusion VAE (:class:`DiffusersKLAutoencoder`), whose working set is
        large enough that the heap kept for reuse would undo what tiling saves.

        Returns
        -------
        context manager
            It yields whether freed memory is kept for reuse inside the block.
        """
        if not self._reuses_freed_memory:
            return nullcontext(False)
        return reusing_freed_cpu_memory(self.device)

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
            adapters of this module, and never tiles :class:`PixelAutoencoder` or other
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
        # On the CPU the pass reuses the memory it frees, instead of fresh pages per layer.
        with self.reusing_freed_memory(), torch.inference_mode():
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
                with self.reusing_freed_memory(), torch.inference_mode():
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


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------
#
# A tile is run with context around the part of the output it keeps: neighbouring tiles share
# ``overlap`` input pixels and each keeps the half of the shared strip nearer to its own centre.
# Where the model sees no further than ``overlap / 2`` (the convolutions of the TAESD family),
# every kept value is computed from the same inputs as without tiling: the result matches the
# untiled one to float precision and no seam can appear, so nothing needs blending.


def _round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


class _Span(NamedTuple):
    """One tile along one axis: the input it reads and the part of it whose output is kept."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int

    def kept(self, scale: Fraction) -> tuple[slice, slice]:
        """The kept part in output units: (where it goes, where it is in the tile's output)."""
        start, stop = self.keep_start - self.start, self.keep_stop - self.start
        where = slice(int(self.keep_start * scale), int(self.keep_stop * scale))
        return where, slice(int(start * scale), int(stop * scale))


def _tile_spans(length: int, tile: int, overlap: int, align: int) -> list[_Span]:
    """Cover ``range(length)`` with the fewest tiles of at most ``tile`` sharing ``overlap``.

    Tiles are of equal size (but the last) and start at multiples of ``align``; ``tile`` and
    ``overlap`` are multiples of ``align``, and ``overlap / 2`` too.
    """
    if length <= tile:
        return [_Span(0, length, 0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count / align) * align  # <= tile
    stride, margin = size - overlap, overlap // 2
    spans = []
    for index in range(count):
        start = index * stride
        keep_start = start + margin if index > 0 else 0
        keep_stop = start + size - margin if index < count - 1 else length
        spans.append(_Span(start, min(start + size, length), keep_start, keep_stop))
    return spans


def _tiled(
    run: Any, inputs: Tensor, *, tile: int, overlap: int, align: int, scale: Fraction
) -> Tensor:
    """``run`` applied tile by tile to ``inputs`` (``... x H x W``), whose output is ``scale``
    times the size of its input; tiles as :func:`_tile_spans` cuts them."""
    rows = _tile_spans(inputs.shape[-2], tile, overlap, align)
    columns = _tile_spans(inputs.shape[-1], tile, overlap, align)
    outputs = None
    for row in rows:
        for column in columns:
            result = run(inputs[..., row.start : row.stop, column.start : column.stop])
            if outputs is None:  # preallocated once the channels and dtype are known
                height, width = (int(size * scale) for size in inputs.shape[-2:])
                outputs = result.new_empty(*result.shape[:-2], height, width)
            (rows_to, rows_from), (columns_to, columns_from) = row.kept(scale), column.kept(scale)
            outputs[..., rows_to, columns_to] = result[..., rows_from, columns_from]
    return outputs


def _one_image_at_a_time(run: Any, batch: Tensor) -> Tensor:
    """``run`` on each image of ``batch`` alone, into one preallocated output."""
    outputs = None
    for index in range(batch.shape[0]):
        result = run(batch[index : index + 1])
        if outputs is None:
            outputs = result.new_empty(batch.shape[0], *result.shape[1:])
        outputs[index] = result[0]
    return outputs


# --------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------


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


class _DiffusersAutoencoder(Autoencoder):
    """Shared plumbing of the diffusers adapters: the module lives in ``self.model``."""

    _tiles_by_default = True

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

    # Kept for reuse, the freed activations of this VAE (up to hundreds of megabytes each, in
    # diffusers' own tile loop) grow the heap tile after tile: measured on the CPU, 3.6 GB
    # above the model instead of 1.3 GB for a 1024 px image (2.1 instead of 1.0 GB at 512 px),
    # more than its 1.2x to 1.5x in speed is worth.
    _reuses_freed_memory = False

    def __init__(self, model: Any, sample_latent: bool = False, *, name: str | None = None):
        # Every encoder block but the last halves the resolution.
        factor = 2 ** (len(model.config.block_out_channels) - 1)
        super().__init__(model, factor=factor, name=name)
        self.sample_latent = bool(sample_latent)

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        with self._diffusers_tiling():
            distribution = self.model.encode(images * 2 - 1).latent_dist
        if self.sample_latent:
            return distribution.sample(generator=generator)
        return distribution.mean

    def _decode(self, latents: Tensor) -> Tensor:
        with self._diffusers_tiling():
            return (self.model.decode(latents).sample + 1) / 2

    # diffusers tiles AutoencoderKL itself, blending the tiles' moments (so the encoding is still
    # the mean of one distribution) and decoded pixels with linear ramps. Its tiles are only
    # approximately seamless: GroupNorm and the mid-block attention see one tile, not the image.

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._encode(image, generator)

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        return self._decode(latents)

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


# --------------------------------------------------------------------------------------------
# TAESD family from its .pth state dicts
# --------------------------------------------------------------------------------------------


def _conv(n_in: int, n_out: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """TAESD residual block, with the optional GroupNorm "pooling" branch of newer members."""

    def __init__(self, n_in: int, n_out: int, pool_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pool_channels:
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, pool_channels, 1, bias=False),
                nn.GroupNorm(4, pool_channels),
                nn.ReLU(),
                nn.Conv2d(pool_channels, n_in, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _taesd_encoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    def stage() -> list[nn.Module]:
        return [
            _conv(width, width, stride=2, bias=False),
            *(_Block(width, width) for _ in range(3)),
        ]

    return nn.Sequential(
        _conv(3, width),
        _Block(width, width),
        *stage(),
        *stage(),
        _conv(width, width, stride=2, bias=False),
        *(_Block(width, width, pool_channels) for _ in range(3)),
        _conv(width, latent_channels),
    )


def _taesd_decoder(width: int, latent_channels: int, pool_channels: int | None) -> nn.Sequential:
    def stage() -> list[nn.Module]:
        return [
            nn.Upsample(scale_factor=2),
            _conv(width, width, bias=False),
            *(_Block(width, width) for _ in range(3)),
        ]

    return nn.Sequential(
        _Clamp(),
        _conv(latent_channels, width),
        nn.ReLU(),
        *(_Block(width, width, pool_channels) for _ in range(3)),
        *stage(),
        *stage(),
        nn.Upsample(scale_factor=2),
        _conv(width, width, bias=False),
        _Block(width, width),
        _conv(width, 3),
    )


# Key whose shape gives (width, latent channels) and first block that may hold the pool branch.
_TAESD_LAYOUT = {
    "encoder": {"in": "0.weight", "out": "14.weight", "pool": "11.pool.0.weight"},
    "decoder": {"in": "1.weight", "out": "19.weight", "pool": "3.pool.0.weight"},
}


# Where the latent-resolution layers end (encoder) or begin (decoder): see TAESDAutoencoder.
_TAESD_SPLIT = {"encoder": 11, "decoder": 6}


def _read_state_dict(path: Path, part: str) -> dict[str, Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise ValueError(
            f"could not read the TAESD {part} weights in {path}: the file is not a PyTorch "
            f"state dict or is damaged ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, Tensor) for value in state_dict.values()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors (TAESD {part})")
    return dict(state_dict)


def _build_taesd_part(state_dict: Mapping[str, Tensor], part: str, source: str) -> nn.Sequential:
    """Build the encoder or decoder whose layout the state dict describes, and load it."""
    keys = _TAESD_LAYOUT[part]
    missing = [keys[k] for k in ("in", "out") if keys[k] not in state_dict]
    if missing:
        raise ValueError(
            f"{source} is not a TAESD {part} state dict: missing {missing}; expected the "
            f"nn.Sequential layout of the TAESD family ({_TAESD_HOME})"
        )
    first, last = state_dict[keys["in"]], state_dict[keys["out"]]
    if part == "encoder":
        width, latent_channels, image_channels = first.shape[0], last.shape[0], first.shape[1]
    else:
        width, latent_channels, image_channels = first.shape[0], first.shape[1], last.shape[0]
    if image_channels != 3:
        raise ValueError(
            f"{source}: expected a TAESD {part} for 3-channel images, the state dict has "
            f"{image_channels} image channels"
        )
    pool = state_dict.get(keys["pool"])
    build = _taesd_encoder if part == "encoder" else _taesd_decoder
    module = build(width, latent_channels, None if pool is None else pool.shape[0])
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{source} does not match the TAESD {part} layout deduced from it (width {width}, "
            f"{latent_channels} latent channels, pooling branch: {pool is not None}): {err}"
        ) from err
    return module.eval()


class TAESDAutoencoder(Autoencoder):
    """The TAESD family of tiny autoencoders (``taesd``, ``taesdxl``, ``taesd3``, ``taef1``,
    ``taef2``), loaded from their ``.pth`` state dicts.

    The layout (latent channels, block width, whether the mid blocks have the GroupNorm pooling
    branch of ``taef2``) is read from the state dicts, not from the file names. The models take
    images in ``[0, 1]``, downsample by 8, and have no latent scaling; the decoder starts with
    the soft clamp ``tanh(z / 3) * 3``.

    Tiling (:meth:`~Autoencoder.set_tiling`) is exact: only the convolutions above the latent
    resolution are tiled, each tile with 64 px of context on its inner sides, which covers what
    they see; the layers at the latent resolution, whose GroupNorm (``taef2``) spans the whole
    image, run untiled. Tiled and untiled TAEF2 outputs of a 1024 px image differ by about
    1e-7.

    Parameters
    ----------
    encoder, decoder : str, os.PathLike or Mapping[str, Tensor]
        The ``<name>_encoder.pth`` and ``<name>_decoder.pth`` files, or their state dicts.
    name : str, optional
        Name for messages; defaults to the file prefix and directory.

    Raises
    ------
    ValueError
        If a file cannot be read as a state dict, does not match the TAESD layout, or the
        encoder and decoder disagree on the latent channels; the message names the file.

    Examples
    --------
    With the weights of a TAESD-family member in a directory:

    >>> ae = TAESDAutoencoder.from_directory("weights/taef2")  # doctest: +SKIP
    >>> ae.factor, ae.latent_channels  # doctest: +SKIP
    (8, 32)
    """

    _tiles_by_default = True

    def __init__(
        self,
        encoder: str | os.PathLike | Mapping[str, Tensor],
        decoder: str | os.PathLike | Mapping[str, Tensor],
        *,
        name: str | None = None,
    ) -> None:
        parts = {}
        for part, source in (("encoder", encoder), ("decoder", decoder)):
            if isinstance(source, Mapping):
                parts[part] = _build_taesd_part(source, part, f"the {part} state dict")
            else:
                path = Path(source)
                parts[part] = _build_taesd_part(_read_state_dict(path, part), part, str(path))
        self.encoder, self.decoder = parts["encoder"], parts["decoder"]
        encoder_channels = self.encoder[-1].out_channels
        decoder_channels = self.decoder[1].in_channels
        if encoder_channels != decoder_channels:
            raise ValueError(
                f"TAESD encoder ({encoder}) gives {encoder_channels} latent channels but the "
                f"decoder ({decoder}) expects {decoder_channels}: they are not a pair"
            )
        if name is None:
            name = "TAESD"
            if not isinstance(encoder, Mapping):
                path = Path(encoder)
                name = f"{path.stem.removesuffix('_encoder')} ({path.parent})"
        super().__init__(factor=8, latent_channels=encoder_channels, name=name)

    @classmethod
    def from_directory(cls, path: str | os.PathLike, name: str | None = None) -> TAESDAutoencoder:
        """Load the ``<name>_encoder.pth`` / ``<name>_decoder.pth`` pair found in ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            Directory holding the pair.
        name : str, optional
            File prefix, e.g. ``"taef2"``. By default the single pair in the directory, or the
            one named like the directory when there are several.

        Returns
        -------
        TAESDAutoencoder

        Raises
        ------
        AutoencoderNotFoundError
            If the directory or the pair is missing.
        ValueError
            If several pairs are present and ``name`` does not choose one.
        """
        path = Path(path)
        if not path.is_dir():
            raise AutoencoderNotFoundError(f"TAESD weights directory {path} does not exist")
        if name is None:
            prefixes = _taesd_prefixes(path)
            if not prefixes:
                raise AutoencoderNotFoundError(
                    f"no <name>_encoder.pth + <name>_decoder.pth pair in {path}"
                )
            if path.name in prefixes:
                name = path.name
            elif len(prefixes) == 1:
                name = prefixes[0]
            else:
                raise ValueError(f"{path} holds several TAESD pairs {prefixes}; pass name=")
        encoder, decoder = path / f"{name}_encoder.pth", path / f"{name}_decoder.pth"
        for file in (encoder, decoder):
            if not file.is_file():
                raise AutoencoderNotFoundError(f"TAESD weights file {file} does not exist")
        return cls(encoder, decoder, name=f"{name} ({path})")

    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.encoder(images)

    def _decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)

    # Only the layers above the latent resolution are tiled: they are convolutions and ReLUs,
    # which tiles with enough context reproduce exactly, and they hold nearly all the memory.
    # The layers at the latent resolution run on the whole image: they are cheap, and taef2's
    # pooling branch has a GroupNorm whose statistics span the image (tiling them measurably
    # changes the latents, by ~0.07 mean absolute difference for 512 px tiles of a 1024 px image).

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        split = _TAESD_SPLIT["encoder"]
        return self.encoder[split:](self._tile_images(self.encoder[:split], image))

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        split = _TAESD_SPLIT["decoder"]
        return self._tile_latents(self.decoder[split:], self.decoder[:split](latents))

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        self.encoder.to(device=device, dtype=dtype)
        self.decoder.to(device=device, dtype=dtype)


def _taesd_prefixes(path: Path) -> list[str]:
    suffix = "_encoder.pth"
    return sorted(
        file.name.removesuffix(suffix)
        for file in path.glob(f"*{suffix}")
        if (path / file.name.replace(suffix, "_decoder.pth")).is_file()
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

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


def _load_directory(path: Path, dtype: torch.dtype, sample_latent: bool) -> Autoencoder:
    """A diffusers model directory (or pipeline with a ``vae/``) or a TAESD ``.pth`` pair."""
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{config_file} is not a diffusers config (JSON object)") from err
        cls = _diffusers_class(class_name, str(config_file))
        model = cls.from_pretrained(path, torch_dtype=dtype)
        return _wrap_diffusers(model, sample_latent)
    if _taesd_prefixes(path):
        return TAESDAutoencoder.from_directory(path)
    raise AutoencoderNotFoundError(
        f"{path} holds neither a diffusers autoencoder (config.json and weights) nor a TAESD "
        f"pair <name>_encoder.pth + <name>_decoder.pth"
    )


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:limit]}"


def _load_by_name(
    spec: str, dtype: torch.dtype, sample_latent: bool, models_dir: str | os.PathLike | None
) -> Autoencoder:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, dtype, sample_latent)
    if path.is_file():
        raise ValueError(
            f"vae={spec!r} is a file; pass the directory holding the autoencoder "
            f"(a diffusers config.json and weights, or a <name>_encoder.pth/_decoder.pth pair)"
        )

    if spec in PRESETS:
        hub_id, local_name = PRESETS[spec].hub_id, spec
    elif spec.count("/") == 1 and all(spec.split("/")) and not spec.startswith((".", "~")):
        hub_id, local_name = spec, spec.split("/")[1]
    else:
        raise AutoencoderNotFoundError(
            f"unknown autoencoder {spec!r}: not an existing directory, not a preset "
            f"({', '.join(PRESETS)}), not a Hugging Face hub id 'owner/name'"
        )

    looked = [f"{path.resolve()} (as a path; no such directory)"]
    root = models_dir if models_dir is not None else os.environ.get(MODELS_DIR_ENV)
    if root:
        candidate = Path(root).expanduser() / local_name
        if candidate.is_dir():
            return _load_directory(candidate, dtype, sample_latent)
        origin = "models_dir" if models_dir is not None else f"${MODELS_DIR_ENV}"
        looked.append(f"{candidate} ({origin}; not found)")
    else:
        looked.append(f"no local models directory (models_dir not given, ${MODELS_DIR_ENV} unset)")

    how = (
        f"To use a local copy, put it in <models dir>/{local_name}/ and set {MODELS_DIR_ENV} "
        f"(or pass models_dir=), or pass the directory itself as vae."
    )
    if hub_id is None:
        raise AutoencoderNotFoundError(
            f"autoencoder {spec!r} not found; it cannot be loaded from the Hugging Face hub: "
            f"download {local_name}_encoder.pth and {local_name}_decoder.pth from {_TAESD_HOME}. "
            f"Looked in: " + "; ".join(looked) + ". " + how
        )

    def not_found(err: BaseException) -> AutoencoderNotFoundError:
        looked.append(f"Hugging Face hub id {hub_id!r} ({_first_line(err)})")
        message = f"autoencoder {spec!r} not found. Looked in: " + "; ".join(looked) + ". "
        return AutoencoderNotFoundError(message + how)

    # diffusers goes through huggingface_hub: HF_HUB_OFFLINE, HF_HOME and its cache apply.
    import diffusers

    try:
        config = diffusers.AutoencoderKL.load_config(hub_id)
    except (OSError, ValueError) as err:  # ValueError: a malformed hub id
        raise not_found(err) from err
    cls = _diffusers_class(config.get("_class_name"), hub_id)
    try:
        model = cls.from_pretrained(hub_id, torch_dtype=dtype)
    except OSError as err:  # e.g. offline with the config cached but not the weights
        raise not_found(err) from err
    return _wrap_diffusers(model, sample_latent)


def load_autoencoder(
    vae: Any,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    sample_latent: bool = False,
    models_dir: str | os.PathLike | None = None,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
) -> Autoencoder:
    """Resolve ``vae`` to an :class:`Autoencoder` on ``device`` with compute dtype ``dtype``.

    Parameters
    ----------
    vae : Autoencoder, diffusers model, str or os.PathLike
        One of

        - an :class:`Autoencoder`: returned itself, moved to ``device`` / ``dtype``;
        - a ``diffusers.AutoencoderKL`` or ``diffusers.AutoencoderTiny``: wrapped (and moved,
          in place);
        - ``"pixel"``: the identity (:class:`PixelAutoencoder`);
        - a preset name from :data:`PRESETS`, e.g. ``"sd-vae-ft-mse"`` or ``"taef2"``;
        - a local directory: a diffusers model (``config.json`` with ``_class_name``
          ``AutoencoderKL`` or ``AutoencoderTiny``, or a pipeline with a ``vae/`` folder), or a
          TAESD-family pair ``<name>_encoder.pth`` + ``<name>_decoder.pth``;
        - a Hugging Face hub id ``"owner/name"``, loaded with diffusers ``from_pretrained``
          (``HF_HUB_OFFLINE`` and the Hugging Face cache apply).

        For a preset or hub id, ``<models_dir>/<preset or name>/`` is tried before the hub.
    device : str or torch.device, default "cpu"
        Where the model runs.
    dtype : torch.dtype, str or None, default None
        Compute dtype; None means float32, ``"auto"`` float16 on CUDA and float32 elsewhere
        (:data:`~latent_ot.devices.AUTO_DTYPES`). float16 / bfloat16 work where the model and
        device support them. Outputs are float32 whatever the compute dtype.
    sample_latent : bool, default False
        Sample the latent distribution instead of taking its mean (``AutoencoderKL`` only;
        deterministic autoencoders raise ``ValueError``). An :class:`Autoencoder` instance
        keeps its own setting.
    models_dir : str or os.PathLike, optional
        Directory of local model copies; defaults to the environment variable
        :data:`MODELS_DIR_ENV` (``LATENT_OT_MODELS_DIR``).
    tile_size : int, "auto" or None, default "auto"
        Images larger than this many pixels (height or width) are encoded and decoded tile by
        tile, bounding the memory; ``"auto"``: :data:`AUTO_TILE_SIZES` for the device; None:
        never. See :meth:`Autoencoder.set_tiling`.
    tile_overlap : int, optional
        Pixels shared by neighbouring tiles; by default the adapter's choice. An
        :class:`Autoencoder` instance keeps its own tiling unless ``tile_size`` (other than
        ``"auto"``) or ``tile_overlap`` is given.

    Returns
    -------
    Autoencoder

    Raises
    ------
    AutoencoderNotFoundError
        If the model is found neither locally nor on the hub; the message lists every place
        looked in and how to supply a local copy.
    TypeError
        If ``vae`` is of an unsupported type.
    ValueError
        If a local file is damaged or does not match the expected layout, ``sample_latent``
        is asked of a deterministic autoencoder, or the tiling is invalid.

    Examples
    --------
    >>> import torch
    >>> ae = load_autoencoder("pixel")
    >>> ae.factor, ae.latent_channels, ae.dtype
    (1, 3, torch.float32)

    With ``LATENT_OT_MODELS_DIR`` pointing at a directory holding ``taef2/``:

    >>> ae = load_autoencoder("taef2", device="cuda")  # doctest: +SKIP
    """
    dtype = resolve_dtype(dtype, device)
    if isinstance(vae, Autoencoder):
        if sample_latent and not vae.sample_latent:
            raise ValueError(
                f"sample_latent=True but {vae.name} was built without latent sampling; "
                f"build the adapter with sample_latent=True instead"
            )
        autoencoder = vae
    elif isinstance(vae, (str, os.PathLike)):
        if os.fspath(vae) == "pixel":
            autoencoder = PixelAutoencoder()
        else:
            autoencoder = _load_by_name(os.fspath(vae), dtype, sample_latent, models_dir)
    else:
        autoencoder = _wrap_diffusers(vae, sample_latent)
        if autoencoder is None:
            raise TypeError(
                "vae must be an Autoencoder, a diffusers AutoencoderKL or AutoencoderTiny, "
                f"a preset name, a hub id or a directory; got {type(vae).__name__}"
            )
    if sample_latent and not autoencoder.sample_latent:
        raise ValueError(
            f"sample_latent=True, but {autoencoder.name} has a deterministic encoder "
            f"(only diffusers AutoencoderKL has a latent distribution to sample)"
        )
    if autoencoder is not vae or tile_size != "auto" or tile_overlap is not None:
        autoencoder.set_tiling(tile_size, tile_overlap)
    return autoencoder.to(device=device, dtype=dtype)
