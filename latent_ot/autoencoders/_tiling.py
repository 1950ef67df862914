"""Tiling of large images: when to tile, where the tiles go, running a model tile by tile.

``tile_size="auto"`` decides by memory: a pass runs whole when the autoencoder's estimated
activations for it (:meth:`~latent_ot.autoencoders.Autoencoder.estimated_memory`) fit the
memory budget, by default a share of the memory free on the device when the pass starts
(:func:`latent_ot.memory.auto_memory_budget`); a batch that does not fit runs in smaller
batches, and an image that does not fit alone runs in tiles, each sized to take at most half
the budget (the other half is left for what a tiled pass holds for the whole image and for the
allocator's slack) and at most :data:`AUTO_TILE_SIZES`. Tiling costs time (the overlap is
computed twice), so no image whose pass fits is tiled.

A tile is run with context around the part of the output it keeps: neighbouring tiles share
``overlap`` input pixels and each keeps the half of the shared strip nearer to its own centre.
Where the model sees no further than ``overlap / 2`` (the convolutions of the TAESD family),
every kept value is computed from the same inputs as without tiling: the result matches the
untiled one to float precision and no seam can appear, so nothing needs blending.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from ..memory import auto_memory_budget
from ..validation import check_int

if TYPE_CHECKING:  # the interface that this class is part of
    from ._base import Autoencoder

AUTO_TILE_SIZES: Mapping[str, int] = MappingProxyType({"cpu": 1024, "cuda": 2048})
"""Largest tile in pixels that ``tile_size="auto"`` uses, per device type (others: ``"cpu"``).

``"auto"`` tiles only images whose pass would exceed the memory budget
(:func:`latent_ot.memory.auto_memory_budget`), in tiles that take at most half of it (with a
2 GB budget: 800 px for TAEF2 and 512 px for the Stable Diffusion VAE on the CPU in float32).
This caps them where the budget is large, so that the tiles of a large image still stream.
"""

# Tiles "auto" never goes below: smaller ones would spend most of their pass on context.
_SMALLEST_AUTO_TILE = 256
# The part of the budget a tile may take (see the module docstring).
_TILE_SHARE = 0.5


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


TileCallback = Callable[[str, int, int], Any]
"""``callback(what, done, total)``: ``done`` of the ``total`` tiles of a pass are finished;
``what`` is ``"encoding"`` or ``"decoding"``."""

_tile_callback: ContextVar[TileCallback | None] = ContextVar("tile_callback", default=None)


@contextmanager
def reporting_tiles(callback: TileCallback | None) -> Iterator[None]:
    """Within the block, call ``callback`` after each tile of every tiled pass (progress).

    Examples
    --------
    >>> from latent_ot.autoencoders import PixelAutoencoder
    >>> seen = []
    >>> with reporting_tiles(lambda what, done, total: seen.append((what, done, total))):
    ...     _ = PixelAutoencoder().set_tiling(8, overlap=0).encode(torch.zeros(1, 3, 8, 16))
    >>> seen
    [('encoding', 1, 2), ('encoding', 2, 2)]
    """
    # Restored by value rather than by token: a generator may leave the block in another
    # context (when it is closed by the garbage collector).
    previous = _tile_callback.get()
    _tile_callback.set(callback)
    try:
        yield
    finally:
        _tile_callback.set(previous)


def _tiled(
    run: Any,
    inputs: Tensor,
    *,
    tile: int,
    overlap: int,
    align: int,
    scale: Fraction,
    what: str = "encoding",
) -> Tensor:
    """``run`` applied tile by tile to ``inputs`` (``... x H x W``), whose output is ``scale``
    times the size of its input; tiles as :func:`_tile_spans` cuts them."""
    rows = _tile_spans(inputs.shape[-2], tile, overlap, align)
    columns = _tile_spans(inputs.shape[-1], tile, overlap, align)
    outputs, callback = None, _tile_callback.get()
    total = len(rows) * len(columns)
    for done, (row, column) in enumerate(itertools.product(rows, columns), start=1):
        result = run(inputs[..., row.start : row.stop, column.start : column.stop])
        if outputs is None:  # preallocated once the channels and dtype are known
            height, width = (int(size * scale) for size in inputs.shape[-2:])
            outputs = _empty_like_layout(result, (*result.shape[:-2], height, width))
        (rows_to, rows_from), (columns_to, columns_from) = row.kept(scale), column.kept(scale)
        outputs[..., rows_to, columns_to] = result[..., rows_from, columns_from]
        if callback is not None:
            callback(what, done, total)
    return outputs


def _auto_tile_size(budget: int, bytes_per_pixel: float, factor: int, largest: int) -> int:
    """The side of the largest square tile whose pass takes at most a share of ``budget``.

    A multiple of ``factor``, at most ``largest`` and at least :data:`_SMALLEST_AUTO_TILE`.

    Examples
    --------
    >>> _auto_tile_size(2 * 10**9, 1536.0, 8, 1024)
    800
    """
    side = math.isqrt(int(budget * _TILE_SHARE / bytes_per_pixel))
    side = min(largest, side)
    return max(_round_down(side, factor), math.ceil(_SMALLEST_AUTO_TILE / factor) * factor)


def _in_chunks(run: Any, batch: Tensor, size: int) -> Tensor:
    """``run`` on ``size`` images of ``batch`` at a time, into one preallocated output."""
    outputs = None
    for start in range(0, batch.shape[0], size):
        result = run(batch[start : start + size])
        if outputs is None:
            outputs = _empty_like_layout(result, (batch.shape[0], *result.shape[1:]))
        outputs[start : start + size] = result
    return outputs


def _one_image_at_a_time(run: Any, batch: Tensor) -> Tensor:
    """``run`` on each image of ``batch`` alone, into one preallocated output."""
    return _in_chunks(run, batch, 1)


def _empty_like_layout(result: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty tensor of ``shape`` with the dtype, device and memory layout of ``result``.

    Keeping channels-last results channels-last spares the next layers a conversion.
    """
    channels_last = (
        result.ndim == 4
        and result.is_contiguous(memory_format=torch.channels_last)
        and not result.is_contiguous()
    )
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=result.dtype, device=result.device, memory_format=layout)


class _Tiling:
    """The tiling of :class:`~latent_ot.autoencoders.Autoencoder`: settings, the plan of each
    pass (whole, in smaller batches, in tiles), and running a model tile by tile."""

    factor: int
    name: str
    device: torch.device
    dtype: torch.dtype
    _tiling_request: tuple[Any, int | None, Any]

    def set_tiling(
        self,
        tile_size: int | str | None = "auto",
        overlap: int | None = None,
        *,
        memory_budget: int | str = "auto",
    ) -> Autoencoder:
        """Choose when and how large images are encoded and decoded tile by tile.

        Tiles are processed one at a time, one image at a time, so that the memory stays about
        that of one tile whatever the image size. Images that are not tiled run in one pass,
        exactly as without tiling.

        Parameters
        ----------
        tile_size : int, "auto" or None, default "auto"
            An int: images larger than this many pixels (height or width) run in tiles of at
            most this size, a multiple of :attr:`factor`; others run whole, batch and all.
            ``"auto"``: decided by memory. A batch whose pass is estimated to take more than
            ``memory_budget`` (:meth:`estimated_memory`) runs in smaller batches; an image
            that does not fit alone runs in tiles that take at most half the budget, and at
            most :data:`AUTO_TILE_SIZES` for the device. Re-read after :meth:`to`. Only the
            adapters of this package have an estimate; :class:`PixelAutoencoder` and other
            subclasses are never tiled by ``"auto"``. None: never tiled.
        overlap : int, optional
            Pixels shared by neighbouring tiles, a multiple of ``2 * factor`` and at most
            ``tile_size / 2``. By default the adapter's choice: enough context for the TAESD
            family to match the untiled output to float precision, a quarter of the tile for
            ``AutoencoderKL`` (diffusers' default).
        memory_budget : int or "auto", default "auto"
            Bytes of activations one pass may take with ``tile_size="auto"``: an int >= 1, or
            ``"auto"`` for :func:`latent_ot.memory.auto_memory_budget`, a share of the memory
            free on the device, read when each pass is planned (a fixed
            :data:`~latent_ot.memory.FALLBACK_MEMORY_BUDGETS` where it cannot be read).
            Ignored for other values of ``tile_size``.

        Returns
        -------
        Autoencoder
            ``self``, changed in place.

        Raises
        ------
        ValueError
            If ``tile_size`` or ``overlap`` is not one of the values described above.
        TypeError, ValueError
            If ``memory_budget`` is neither ``"auto"`` nor an int >= 1.

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
        if memory_budget != "auto":
            memory_budget = check_int(memory_budget, "memory_budget")
        # Check now, with this device's "auto" values.
        self._resolve_tiling(tile_size, overlap, memory_budget)
        self._tiling_request = (tile_size, overlap, memory_budget)
        return self

    @property
    def tile_size(self) -> int | None:
        """Largest tile in pixels, ``"auto"`` resolved for the current device; None: no tiling."""
        return self._tiling()[0]

    @property
    def tile_overlap(self) -> int:
        """Pixels shared by neighbouring tiles."""
        return self._tiling()[1]

    @property
    def memory_budget(self) -> int | None:
        """Bytes one pass may take, ``"auto"`` read from the device now; None unless tiling is
        ``"auto"`` and the adapter has an estimate (:meth:`estimated_memory`)."""
        return self._budget(self._tiling_request[2]) if self._tiles_by_memory() else None

    def estimated_memory(self, height: int, width: int, count: int = 1) -> int | None:
        """Estimated bytes of activations of one pass over ``count`` images of that size.

        The adapter's activation size per pixel, measured on the CPU in float32 (peak resident
        memory above the loaded model during an encode and a decode) and scaled to the model's
        width and dtype; it is what ``tile_size="auto"`` compares with the memory budget. None
        for an adapter without an estimate.

        Examples
        --------
        >>> from latent_ot.autoencoders import load_autoencoder
        >>> round(load_autoencoder("taef2").estimated_memory(512, 768) / 1e9, 2)
        0.6
        >>> load_autoencoder("pixel").estimated_memory(512, 768) is None
        True
        """
        elements = self._activation_elements_per_pixel()
        if elements is None:
            return None
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return math.ceil(count * height * width * elements * itemsize)

    def will_tile(self, height: int, width: int) -> bool:
        """Whether an image of ``height x width`` pixels is encoded and decoded in tiles now.

        Examples
        --------
        >>> from latent_ot.autoencoders import load_autoencoder
        >>> ae = load_autoencoder("taef2")
        >>> ae.will_tile(512, 768), ae.will_tile(4096, 4096)
        (False, True)
        """
        return self._passes(1, height, width)[1]

    def _tiling(self) -> tuple[int | None, int]:
        return self._resolve_tiling(*self._tiling_request)

    def _resolve_tiling(
        self, tile_size: Any, overlap: int | None, memory_budget: Any
    ) -> tuple[int | None, int]:
        if tile_size == "auto":
            tile_size = self._auto_tile_size(memory_budget)
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

    def _tiles_by_memory(self) -> bool:
        return self._tiling_request[0] == "auto" and bool(self._activation_elements_per_pixel())

    def _budget(self, memory_budget: Any) -> int:
        return auto_memory_budget(self.device) if memory_budget == "auto" else memory_budget

    def _auto_tile_size(self, memory_budget: Any) -> int | None:
        per_pixel = self.estimated_memory(1, 1)
        if per_pixel is None:
            return None
        largest = AUTO_TILE_SIZES.get(self.device.type, AUTO_TILE_SIZES["cpu"])
        return _auto_tile_size(self._budget(memory_budget), per_pixel, self.factor, largest)

    def _activation_elements_per_pixel(self) -> float | None:
        """Activation values held per input pixel at the peak of a pass; None: unknown."""
        return None

    def _default_tile_overlap(self, tile_size: int) -> int:
        # 64 pixels of context on each side covers the receptive field of the TAESD family's
        # convolutions (measured: tiled equals untiled to ~1e-7); see TAESDAutoencoder.
        return _round_down(min(128, tile_size // 2), 2 * self.factor)

    def _passes(self, count: int, height: int, width: int) -> tuple[int, bool]:
        """(images per pass, whether in tiles) for ``count`` images of ``height x width``.

        By memory, the budget is read once, here: whatever fits it runs whole.
        """
        if self._tiles_by_memory():
            budget, one = (
                self._budget(self._tiling_request[2]),
                self.estimated_memory(height, width),
            )
            if one > budget:
                return 1, True
            return max(1, min(count, budget // one)), False
        tile_size = self.tile_size
        if tile_size is None or max(height, width) <= tile_size:
            return count, False
        return 1, True

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
            what="decoding",
        )
