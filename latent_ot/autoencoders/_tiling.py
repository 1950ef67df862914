"""Tiling of large images: where the tiles go, running a model tile by tile, image by image.

A tile is run with context around the part of the output it keeps: neighbouring tiles share
``overlap`` input pixels and each keeps the half of the shared strip nearer to its own centre.
Where the model sees no further than ``overlap / 2`` (the convolutions of the TAESD family),
every kept value is computed from the same inputs as without tiling: the result matches the
untiled one to float precision and no seam can appear, so nothing needs blending.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any, NamedTuple

from torch import Tensor

AUTO_TILE_SIZES: Mapping[str, int] = MappingProxyType({"cpu": 512, "cuda": 1024})
"""Tile size in pixels that ``tile_size="auto"`` gives on each device type (others: ``"cpu"``).

An image larger than this in height or width is encoded and decoded tile by tile, which bounds
the memory at about that of one tile; smaller images run in one pass. On CPU in float32, a
512 px tile takes about 1.1 GB above the weights with the Stable Diffusion VAE and 0.3 GB with
TAEF2 (untiled 1024 px images: 4.0 GB and 1.1 GB); tiles overlap, so a tiled image costs
some more time (about 1.5x for 1024 px in 512 px tiles).
"""


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
