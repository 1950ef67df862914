"""Folding patch matrices back onto latents: window weights, pixel coverage and averaging.

Every latent pixel becomes the (optionally window-weighted) mean of the values that the
patches covering it give it; :func:`map_patches` reuses these pieces chunk by
chunk.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from latent_ot.validation import check_int

from ._extract import _check_fits, _check_floating_tensor

__all__ = ["fold_patches", "gaussian_window"]


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
        check_int(output_size[0], "output_size[0]"),
        check_int(output_size[1], "output_size[1]"),
    )


def _check_patch_rows(patches: Tensor, height: int, width: int, patch_size: int) -> int:
    """Number of ``height x width`` latents whose patches ``patches`` holds, or raise."""
    area = patch_size * patch_size
    if patches.shape[1] % area != 0:
        raise ValueError(
            f"`patches` has {patches.shape[1]} columns, not a multiple of patch_size**2 = {area}"
        )
    per_image = (height - patch_size + 1) * (width - patch_size + 1)
    if len(patches) % per_image != 0:
        raise ValueError(
            f"`patches` has {len(patches)} rows, not a multiple of the {per_image} patches "
            f"of one {height} x {width} latent with patch_size {patch_size}"
        )
    return len(patches) // per_image


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
    patch_size = check_int(patch_size, "patch_size")
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
    >>> from latent_ot.patches import extract_patches
    >>> x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    >>> restored = fold_patches(extract_patches(x, 3), (5, 6), 3)
    >>> torch.allclose(restored, x)
    True
    """
    patches = _check_floating_tensor(patches, "patches", ndim=2)
    patch_size = check_int(patch_size, "patch_size")
    height, width = _check_output_size(output_size)
    _check_fits(height, width, patch_size)
    if window is not None:
        window = _check_window(window, patch_size)
    num_images = _check_patch_rows(patches, height, width, patch_size)

    positions = (height - patch_size + 1, width - patch_size + 1)
    coverage = _coverage(positions, window, patch_size, device=patches.device, dtype=patches.dtype)
    _check_covered(coverage)
    weighted = _weight_patches(patches, window, patch_size)
    return _fold_rows(weighted, num_images, (height, width), patch_size) / coverage
