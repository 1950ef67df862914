"""Mapping every overlapping patch of a latent batch, chunk by chunk, and folding it back.

The whole patch matrix is never held: chunks of patches are mapped, weighted and summed onto a
padded latent-sized buffer, then divided by the total weight each pixel received.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from latent_ot.validation import check_int

from ._extract import _block_chunks, _check_latents
from ._fold import _check_covered, _check_window, _coverage, _fold_rows, _weight_patches

__all__ = ["map_patches"]


def _check_compute_dtype(dtype: object) -> torch.dtype:
    """Raise unless ``dtype`` is a floating-point torch dtype."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`compute_dtype` must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _border_padding(patch_size: int) -> tuple[int, int]:
    """Padding before and after each spatial axis so that there is one patch per pixel.

    Patch ``k`` (top-left corner in the padded latent) then has pixel ``k`` of the original
    latent at index ``(p - 1) // 2`` of each axis: the centre for odd ``p``.
    """
    return (patch_size - 1) // 2, patch_size // 2


def _border_coverage(
    height: int,
    width: int,
    window: Tensor | None,
    patch_size: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[tuple[slice, ...], Tensor]:
    """The crop of the padded latent back to ``height x width``, and the weight each pixel gets.

    Border pixels get fewer patches, so a window with zeros may leave one uncovered: this
    raises before any patch is mapped.
    """
    before, _ = _border_padding(patch_size)
    crop = (slice(None), slice(None), slice(before, before + height), slice(before, before + width))
    coverage = _coverage((height, width), window, patch_size, device=device, dtype=dtype)[crop]
    _check_covered(coverage)
    return crop, coverage


def _apply_patch_map(patch_map: Callable[[Tensor], Tensor], chunk: Tensor) -> Tensor:
    """Call ``patch_map`` on one chunk and check that it returns a chunk of the same shape."""
    mapped = patch_map(chunk)
    if not isinstance(mapped, Tensor):
        raise TypeError(f"`patch_map` must return a torch.Tensor, got {type(mapped).__name__}")
    if mapped.shape != chunk.shape:
        raise ValueError(
            f"`patch_map` must return a tensor of the shape it was given, {tuple(chunk.shape)}, "
            f"got {tuple(mapped.shape)}"
        )
    return mapped.to(chunk.dtype)


def _mapped_sum(
    padded: Tensor,
    patch_size: int,
    patch_map: Callable[[Tensor], Tensor],
    window: Tensor | None,
    max_patches: int,
    compute_dtype: torch.dtype,
) -> Tensor:
    """Window-weighted sum of the mapped patches of ``padded`` on each of its pixels."""
    weighted_sum = torch.zeros_like(padded, dtype=compute_dtype)
    for block, chunk in _block_chunks(padded, patch_size, max_patches):
        mapped = _apply_patch_map(patch_map, chunk.to(compute_dtype))
        weighted = _weight_patches(mapped, window, patch_size)
        images = block.image_stop - block.image_start
        folded = _fold_rows(weighted, images, block.region_size(patch_size), patch_size)
        weighted_sum[block.latent_region(patch_size)] += folded
    return weighted_sum


def map_patches(
    latents: Tensor,
    patch_size: int,
    patch_map: Callable[[Tensor], Tensor],
    *,
    window: Tensor | None = None,
    max_patches: int = 65536,
    compute_dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Apply a map to every overlapping patch of a latent batch and fold the patches back.

    Each latent is replicate-padded by ``(p - 1) // 2`` before and ``p // 2`` after each axis
    (``p // 2`` on every side for odd ``p``), so there is one patch per latent pixel. Patches
    are taken in chunks of at most ``max_patches`` rows, cast to ``compute_dtype``, passed to
    ``patch_map``, weighted by ``window`` and accumulated; each pixel of the result is the
    weighted mean of the values its covering patches give it. Only one chunk and two
    latent-sized buffers are held at a time, never the whole patch matrix.

    Parameters
    ----------
    latents : Tensor
        Floating-point latents ``N x C x h x w``; any ``h, w >= 1``.
    patch_size : int
        Side ``p`` of the square patch.
    patch_map : callable
        Takes a ``k x (C * p * p)`` patch matrix (layout of :func:`extract_patches`, dtype
        ``compute_dtype``) and returns one of the same shape, e.g. an affine map, possibly
        with noise added. Rows are independent patches, so it must act row by row.
    window : Tensor, optional
        ``p x p`` non-negative weights over the patch (see :func:`gaussian_window`); uniform
        when None.
    max_patches : int, default 65536
        Largest number of patches passed to ``patch_map`` in one call.
    compute_dtype : torch.dtype, default torch.float64
        Dtype of the chunks and of the accumulation.

    Returns
    -------
    Tensor
        Transported latents ``N x C x h x w``, in the dtype and on the device of ``latents``.

    Raises
    ------
    ValueError
        On invalid arguments, or if ``patch_map`` returns a different shape.

    Examples
    --------
    >>> x = torch.randn(1, 4, 6, 5)
    >>> y = map_patches(x, 3, lambda patches: 2 * patches + 1)
    >>> torch.allclose(y, 2 * x + 1)
    True
    """
    latents = _check_latents(latents)
    patch_size = check_int(patch_size, "patch_size")
    max_patches = check_int(max_patches, "max_patches")
    compute_dtype = _check_compute_dtype(compute_dtype)
    if not callable(patch_map):
        raise TypeError(f"`patch_map` must be callable, got {type(patch_map).__name__}")
    if window is not None:
        window = _check_window(window, patch_size)
        window = window.to(device=latents.device, dtype=compute_dtype)

    height, width = latents.shape[2:]
    before, after = _border_padding(patch_size)
    padded = F.pad(latents, (before, after, before, after), mode="replicate")
    crop, coverage = _border_coverage(
        height, width, window, patch_size, device=latents.device, dtype=compute_dtype
    )
    weighted_sum = _mapped_sum(padded, patch_size, patch_map, window, max_patches, compute_dtype)
    return (weighted_sum[crop] / coverage).to(latents.dtype)
