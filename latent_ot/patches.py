"""Overlapping latent patches: extraction, chunked iteration and folding back.

Pure tensor geometry: a latent batch ``N x C x h x w`` is cut into every overlapping
``C x p x p`` patch (stride 1), each flattened to a vector of length ``d = C * p * p``.

Vector layout
-------------
A patch vector follows :func:`torch.nn.functional.unfold`: channel-major, then patch row,
then patch column, i.e. element ``c * p * p + i * p + j`` is channel ``c`` at row ``i`` and
column ``j`` of the patch. Covariances fitted on these vectors depend on this layout, so
every function here uses it.

Row order
---------
Patch matrices list patches image by image and, within an image, in raster order of the
patch's top-left corner.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "extract_patches",
    "fold_patches",
    "gaussian_window",
    "iter_patch_chunks",
    "patch_dim",
    "transport_patches",
]


# --------------------------------------------------------------------------- validation


def _check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 1."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int >= 1, got a bool ({value!r})")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be an int >= 1, got {type(value).__name__} ({value!r})"
        ) from None
    if as_int < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {as_int}")
    return as_int


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


def _check_window(window: object, patch_size: int) -> Tensor:
    """Raise unless ``window`` is a finite, non-negative ``p x p`` tensor with positive sum."""
    if not isinstance(window, Tensor):
        raise TypeError(f"`window` must be a torch.Tensor or None, got {type(window).__name__}")
    if tuple(window.shape) != (patch_size, patch_size):
        raise ValueError(
            f"`window` must have shape ({patch_size}, {patch_size}) to match `patch_size`, "
            f"got {tuple(window.shape)}"
        )
    if not window.is_floating_point():
        raise TypeError(f"`window` must have a floating-point dtype, got {window.dtype}")
    if not bool(torch.isfinite(window).all()):
        raise ValueError("`window` must be finite (it contains NaN or inf)")
    if bool((window < 0).any()):
        raise ValueError("`window` must be non-negative")
    if not bool(window.sum() > 0):
        raise ValueError("`window` must have a positive sum")
    return window


def _check_output_size(output_size: object) -> tuple[int, int]:
    """Return ``output_size`` as ``(h, w)`` ints, or raise."""
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise ValueError(f"`output_size` must be a pair (h, w), got {output_size!r}")
    return (
        _check_positive_int(output_size[0], "output_size[0]"),
        _check_positive_int(output_size[1], "output_size[1]"),
    )


def _check_compute_dtype(dtype: object) -> torch.dtype:
    """Raise unless ``dtype`` is a floating-point torch dtype."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`compute_dtype` must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


# --------------------------------------------------------------------------- basic geometry


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
    channels = _check_positive_int(channels, "channels")
    patch_size = _check_positive_int(patch_size, "patch_size")
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
    >>> x = torch.arange(2 * 3 * 3, dtype=torch.float64).reshape(1, 2, 3, 3)
    >>> patches = extract_patches(x, 2)
    >>> patches.shape
    torch.Size([4, 8])
    >>> patches[0].tolist()  # channel 0 rows (0, 1), then channel 1 rows (9, 10), (12, 13)
    [0.0, 1.0, 3.0, 4.0, 9.0, 10.0, 12.0, 13.0]
    """
    latents = _check_latents(latents)
    patch_size = _check_positive_int(patch_size, "patch_size")
    _check_fits(latents.shape[2], latents.shape[3], patch_size)
    return _unfold_to_rows(latents, patch_size)


# --------------------------------------------------------------------------- chunking


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
        Floating-point latents of shape ``N x C x h x w`` with ``h, w >= patch_size``.
    patch_size : int
        Side ``p`` of the square patch.
    max_patches : int
        Largest number of rows in one chunk (>= 1).

    Returns
    -------
    Iterator[Tensor]
        Patch matrices of shape ``k x (C * p * p)`` with ``1 <= k <= max_patches``. Arguments
        are checked when this function is called, not on the first ``next``.

    Examples
    --------
    >>> x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    >>> chunks = list(iter_patch_chunks(x, 3, max_patches=5))
    >>> max(len(chunk) for chunk in chunks)
    4
    >>> torch.equal(torch.cat(chunks), extract_patches(x, 3))
    True
    """
    latents = _check_latents(latents)
    patch_size = _check_positive_int(patch_size, "patch_size")
    max_patches = _check_positive_int(max_patches, "max_patches")
    _check_fits(latents.shape[2], latents.shape[3], patch_size)
    return (chunk for _, chunk in _block_chunks(latents, patch_size, max_patches))


# --------------------------------------------------------------------------- windows and folding


def gaussian_window(
    patch_size: int,
    sigma: float | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Separable Gaussian weights over a ``p x p`` patch, centred, with maximum 1.

    Parameters
    ----------
    patch_size : int
        Side ``p`` of the square patch.
    sigma : float, optional
        Standard deviation in latent pixels. Defaults to ``patch_size / 4``, so the patch
        spans about two standard deviations either side of its centre.
    device : torch.device or str, optional
        Device of the result.
    dtype : torch.dtype, default torch.float64
        Floating-point dtype of the result.

    Returns
    -------
    Tensor
        Shape ``p x p``; the centre (the four central elements for even ``p``) is 1.

    Raises
    ------
    ValueError
        If ``sigma`` is not a finite positive number.

    Examples
    --------
    >>> window = gaussian_window(3, sigma=1.0)
    >>> window[1, 1].item()
    1.0
    >>> round(window[0, 0].item(), 4)  # exp(-(1 + 1) / 2)
    0.3679
    """
    patch_size = _check_positive_int(patch_size, "patch_size")
    if sigma is None:
        sigma = patch_size / 4
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`sigma` must be a number or None, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a finite number > 0, got {sigma}")
    sigma = float(sigma)
    offsets = torch.arange(patch_size, device=device, dtype=dtype) - (patch_size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    window = torch.outer(profile, profile)
    return window / window.max()


def _coverage(
    positions: tuple[int, int],
    window: Tensor | None,
    patch_size: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Total patch weight landing on each pixel, ``1 x 1 x (rows + p - 1) x (cols + p - 1)``.

    Every position in a ``rows x cols`` grid contributes ``window`` (ones when None) to the
    pixels its patch covers: a transposed convolution of an all-ones grid with the window.
    It does not depend on image or channel, so it is computed once rather than accumulated.
    """
    if window is None:
        window = torch.ones(patch_size, patch_size)
    kernel = window.to(device=device, dtype=dtype).reshape(1, 1, patch_size, patch_size)
    grid = torch.ones(1, 1, *positions, device=device, dtype=dtype)
    return F.conv_transpose2d(grid, kernel)


def _check_covered(coverage: Tensor) -> None:
    """Raise if some pixel receives no weight (a window with zeros in the wrong places)."""
    if not bool((coverage > 0).all()):
        raise ValueError(
            "`window` leaves some latent pixels with zero total weight; "
            "use a window that is positive where patches cover the border"
        )


def _weight_patches(patches: Tensor, window: Tensor | None, patch_size: int) -> Tensor:
    """Multiply every channel of every patch vector by the window (no-op when None)."""
    if window is None:
        return patches
    per_pixel = window.to(device=patches.device, dtype=patches.dtype).reshape(1, 1, -1)
    channels = patches.shape[1] // (patch_size * patch_size)
    weighted = patches.reshape(len(patches), channels, -1) * per_pixel
    return weighted.reshape(patches.shape)


def _fold_rows(
    patches: Tensor, num_images: int, output_size: tuple[int, int], patch_size: int
) -> Tensor:
    """Sum patch rows (one image after the other) back onto an ``N x C x H x W`` latent."""
    columns = patches.reshape(num_images, -1, patches.shape[1]).transpose(1, 2)
    return F.fold(columns, output_size=output_size, kernel_size=patch_size)


def fold_patches(
    patches: Tensor,
    output_size: tuple[int, int],
    patch_size: int,
    *,
    window: Tensor | None = None,
) -> Tensor:
    """Fold a patch matrix back into latents, averaging every pixel over its patches.

    The inverse of :func:`extract_patches`: each latent pixel is the mean (or the
    ``window``-weighted mean) of the values that the patches covering it give it.

    Parameters
    ----------
    patches : Tensor
        Floating-point matrix ``(N * (h - p + 1) * (w - p + 1)) x (C * p * p)`` in the row
        order and vector layout of :func:`extract_patches`; ``N`` is inferred.
    output_size : tuple of int
        Latent height and width ``(h, w)``, each >= ``patch_size``.
    patch_size : int
        Side ``p`` of the square patch.
    window : Tensor, optional
        ``p x p`` non-negative weights over the patch; uniform when None.

    Returns
    -------
    Tensor
        Latents ``N x C x h x w``, same dtype and device as ``patches``.

    Raises
    ------
    ValueError
        If the shapes are inconsistent or ``window`` is invalid.

    Examples
    --------
    >>> x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    >>> restored = fold_patches(extract_patches(x, 3), (5, 6), 3)
    >>> torch.allclose(restored, x)
    True
    """
    patches = _check_floating_tensor(patches, "patches", ndim=2)
    patch_size = _check_positive_int(patch_size, "patch_size")
    height, width = _check_output_size(output_size)
    _check_fits(height, width, patch_size)
    if window is not None:
        window = _check_window(window, patch_size)

    area = patch_size * patch_size
    if patches.shape[1] % area != 0:
        raise ValueError(
            f"`patches` has {patches.shape[1]} columns, not a multiple of patch_size**2 = {area}"
        )
    positions = (height - patch_size + 1, width - patch_size + 1)
    per_image = positions[0] * positions[1]
    if len(patches) % per_image != 0:
        raise ValueError(
            f"`patches` has {len(patches)} rows, not a multiple of the {per_image} patches "
            f"of one {height} x {width} latent with patch_size {patch_size}"
        )

    coverage = _coverage(positions, window, patch_size, device=patches.device, dtype=patches.dtype)
    _check_covered(coverage)
    weighted = _weight_patches(patches, window, patch_size)
    return _fold_rows(weighted, len(patches) // per_image, (height, width), patch_size) / coverage


# --------------------------------------------------------------------------- transport


def _border_padding(patch_size: int) -> tuple[int, int]:
    """Padding before and after each spatial axis so that there is one patch per pixel.

    Patch ``k`` (top-left corner in the padded latent) then has pixel ``k`` of the original
    latent at index ``(p - 1) // 2`` of each axis: the centre for odd ``p``.
    """
    return (patch_size - 1) // 2, patch_size // 2


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


def transport_patches(
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
    >>> y = transport_patches(x, 3, lambda patches: 2 * patches + 1)
    >>> torch.allclose(y, 2 * x + 1)
    True
    """
    latents = _check_latents(latents)
    patch_size = _check_positive_int(patch_size, "patch_size")
    max_patches = _check_positive_int(max_patches, "max_patches")
    compute_dtype = _check_compute_dtype(compute_dtype)
    if not callable(patch_map):
        raise TypeError(f"`patch_map` must be callable, got {type(patch_map).__name__}")
    if window is not None:
        window = _check_window(window, patch_size)
        window = window.to(device=latents.device, dtype=compute_dtype)

    height, width = latents.shape[2:]
    before, after = _border_padding(patch_size)
    padded = F.pad(latents, (before, after, before, after), mode="replicate")

    # Border pixels get fewer patches, so a window with zeros may leave one uncovered: check first.
    crop = (slice(None), slice(None), slice(before, before + height), slice(before, before + width))
    coverage = _coverage(
        (height, width), window, patch_size, device=latents.device, dtype=compute_dtype
    )[crop]
    _check_covered(coverage)

    weighted_sum = torch.zeros_like(padded, dtype=compute_dtype)
    for block, chunk in _block_chunks(padded, patch_size, max_patches):
        mapped = _apply_patch_map(patch_map, chunk.to(compute_dtype))
        weighted = _weight_patches(mapped, window, patch_size)
        images = block.image_stop - block.image_start
        folded = _fold_rows(weighted, images, block.region_size(patch_size), patch_size)
        weighted_sum[block.latent_region(patch_size)] += folded

    return (weighted_sum[crop] / coverage).to(latents.dtype)
