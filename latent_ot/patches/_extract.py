"""Cutting latents into overlapping patches: all at once, or in bounded chunks.

The shared checks of latent and patch tensors live here too, since folding and transport
both start from the shapes that extraction defines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from latent_ot.validation import check_int

__all__ = ["extract_patches", "iter_patch_chunks", "patch_dim"]


def _check_floating_tensor(tensor: object, name: str, ndim: int) -> Tensor:
    """Raise unless ``tensor`` is a floating-point tensor with ``ndim`` dimensions."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise ValueError(
            f"`{name}` must be {ndim}-D, got {tensor.ndim}-D with shape {tuple(tensor.shape)}"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"`{name}` must have a floating-point dtype, got {tensor.dtype}")
    return tensor


def _check_latents(latents: object) -> Tensor:
    """Raise unless ``latents`` is a floating-point ``N x C x h x w`` tensor."""
    return _check_floating_tensor(latents, "latents", ndim=4)


def _check_fits(height: int, width: int, patch_size: int) -> None:
    """Raise if a ``height x width`` latent is too small for one ``patch_size`` patch."""
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"latent size {height} x {width} is smaller than `patch_size` {patch_size}: "
            "at least one patch must fit"
        )


def patch_dim(channels: int, patch_size: int) -> int:
    """Length ``d = C * p * p`` of a flattened latent patch.

    Parameters
    ----------
    channels : int
        Number of latent channels ``C``.
    patch_size : int
        Side ``p`` of the square patch.

    Returns
    -------
    int
        ``channels * patch_size ** 2``.

    Examples
    --------
    >>> patch_dim(4, 3)
    36
    """
    channels = check_int(channels, "channels")
    patch_size = check_int(patch_size, "patch_size")
    return channels * patch_size * patch_size


def _unfold_to_rows(latents: Tensor, patch_size: int) -> Tensor:
    """All patches of ``latents`` as a ``(N * L) x d`` matrix, without validation."""
    columns = F.unfold(latents, kernel_size=patch_size)  # N x d x L
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


def extract_patches(latents: Tensor, patch_size: int) -> Tensor:
    """Every overlapping patch (stride 1, no padding) of a latent batch, one per row.

    Parameters
    ----------
    latents : Tensor
        Floating-point latents of shape ``N x C x h x w`` with ``h, w >= patch_size``.
    patch_size : int
        Side ``p`` of the square patch.

    Returns
    -------
    Tensor
        Shape ``(N * (h - p + 1) * (w - p + 1)) x (C * p * p)``, same dtype and device as
        ``latents``. Rows go image by image, in raster order of each patch's top-left corner;
        each row is laid out channel-major, then patch row, then patch column (the layout of
        :func:`torch.nn.functional.unfold`).

    Raises
    ------
    ValueError
        If ``latents`` is not 4-D or is smaller than ``patch_size`` in height or width.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(2 * 3 * 3, dtype=torch.float64).reshape(1, 2, 3, 3)
    >>> patches = extract_patches(x, 2)
    >>> patches.shape
    torch.Size([4, 8])
    >>> patches[0].tolist()  # channel 0 rows (0, 1), then channel 1 rows (9, 10), (12, 13)
    [0.0, 1.0, 3.0, 4.0, 9.0, 10.0, 12.0, 13.0]
    """
    latents = _check_latents(latents)
    patch_size = check_int(patch_size, "patch_size")
    _check_fits(latents.shape[2], latents.shape[3], patch_size)
    return _unfold_to_rows(latents, patch_size)


@dataclass(frozen=True)
class _PatchBlock:
    """A rectangle of patch positions (top-left corners) over a range of images."""

    image_start: int
    image_stop: int
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    def latent_region(self, patch_size: int) -> tuple[slice, slice, slice, slice]:
        """Index into ``N x C x h x w`` latents of the pixels these patches cover."""
        return (
            slice(self.image_start, self.image_stop),
            slice(None),
            slice(self.row_start, self.row_stop + patch_size - 1),
            slice(self.col_start, self.col_stop + patch_size - 1),
        )

    def region_size(self, patch_size: int) -> tuple[int, int]:
        """Height and width of the latent region covered by these patches."""
        return (
            self.row_stop - self.row_start + patch_size - 1,
            self.col_stop - self.col_start + patch_size - 1,
        )


def _patch_blocks(num_images: int, rows: int, cols: int, max_patches: int) -> Iterator[_PatchBlock]:
    """Cover a ``num_images x rows x cols`` grid of patch positions, in extraction order.

    Each block holds at most ``max_patches`` positions, choosing the coarsest split that fits:
    whole images, else bands of rows of one image, else pieces of a single row.
    """
    per_image = rows * cols
    if per_image <= max_patches:
        images_per_block = max_patches // per_image
        for start in range(0, num_images, images_per_block):
            stop = min(start + images_per_block, num_images)
            yield _PatchBlock(start, stop, 0, rows, 0, cols)
    elif cols <= max_patches:
        rows_per_block = max_patches // cols
        for image in range(num_images):
            for start in range(0, rows, rows_per_block):
                stop = min(start + rows_per_block, rows)
                yield _PatchBlock(image, image + 1, start, stop, 0, cols)
    else:
        for image in range(num_images):
            for row in range(rows):
                for start in range(0, cols, max_patches):
                    stop = min(start + max_patches, cols)
                    yield _PatchBlock(image, image + 1, row, row + 1, start, stop)


def _block_chunks(
    latents: Tensor, patch_size: int, max_patches: int
) -> Iterator[tuple[_PatchBlock, Tensor]]:
    """Yield every block of patch positions of ``latents`` with its patch matrix."""
    num_images, _, height, width = latents.shape
    rows, cols = height - patch_size + 1, width - patch_size + 1
    for block in _patch_blocks(num_images, rows, cols, max_patches):
        region = latents[block.latent_region(patch_size)]
        yield block, _unfold_to_rows(region, patch_size)


def iter_patch_chunks(latents: Tensor, patch_size: int, *, max_patches: int) -> Iterator[Tensor]:
    """The rows of :func:`extract_patches`, yielded in chunks of at most ``max_patches`` rows.

    Chunks split whole images where they fit, else bands of latent rows, else single rows, so
    memory stays about ``max_patches * d`` whatever the latent size. Concatenating the chunks
    gives exactly ``extract_patches(latents, patch_size)``.

    Parameters
    ----------
    latents : Tensor
        Floating-point latents ``N x C x h x w``, as for :func:`extract_patches`.
    patch_size : int
        Side ``p`` of the square patch, at most ``h`` and ``w``.
    max_patches : int
        Largest number of rows in one chunk (>= 1).

    Returns
    -------
    Iterator[Tensor]
        Patch matrices of shape ``k x (C * p * p)`` with ``1 <= k <= max_patches``. Arguments
        are checked when this function is called, not on the first ``next``.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    >>> chunks = list(iter_patch_chunks(x, 3, max_patches=5))
    >>> max(len(chunk) for chunk in chunks)
    4
    >>> torch.equal(torch.cat(chunks), extract_patches(x, 3))
    True
    """
    latents = _check_latents(latents)
    patch_size = check_int(patch_size, "patch_size")
    max_patches = check_int(max_patches, "max_patches")
    _check_fits(latents.shape[2], latents.shape[3], patch_size)
    return (chunk for _, chunk in _block_chunks(latents, patch_size, max_patches))
