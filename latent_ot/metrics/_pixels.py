"""Reading the image sets of a metric: named pixels, same-size batches, image/reference pairs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from ..images import ImageSource
from ..pipeline.statistics import batches_by_size


def named_pixels(images: Any, name: str) -> Iterator[tuple[str, Tensor]]:
    """``(name, 3 x H x W pixels)`` of every image of a set that ``name`` calls it."""
    for item in ImageSource(images, name=name):
        yield item.name, item.pixels


def same_size_batches(
    named: Iterable[tuple[str, Tensor]], batch_size: int
) -> Iterator[tuple[list[str], Tensor]]:
    """``(names, N x 3 x H x W batch)`` for images of equal size, ``batch_size`` at most."""
    for group in batches_by_size(named, batch_size, pixels=lambda entry: entry[1]):
        yield [name for name, _ in group], torch.stack([image for _, image in group])


def pairs(images: Any, reference: Any) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(name, image, reference image)``, checking counts and sizes pair by pair."""
    count = 0
    zipped = itertools.zip_longest(
        ImageSource(images, name="images"), ImageSource(reference, name="reference")
    )
    for image, target in zipped:
        if image is None or target is None:
            longer, shorter = ("images", "reference") if target is None else ("reference", "images")
            raise ValueError(
                f"{longer} has more images than {shorter}, which holds {count}; paired metrics "
                "compare images[i] with reference[i]"
            )
        if image.pixels.shape != target.pixels.shape:
            raise ValueError(
                f"{image.name} is {size_text(image.pixels)} px but {target.name} is "
                f"{size_text(target.pixels)} px; paired metrics need equal sizes"
            )
        count += 1
        yield image.name, image.pixels, target.pixels.to(image.pixels.device)
    if count == 0:
        raise ValueError("images and reference are empty: expected at least one pair")


def size_text(pixels: Tensor) -> str:
    """``"H x W"`` of an image, a batch or a latent, for error messages."""
    return f"{pixels.shape[-2]} x {pixels.shape[-1]}"
