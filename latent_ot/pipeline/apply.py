"""From restored pixels to transported pixels: the path every ``transform`` walks.

``pixels -> reflect-pad -> encode -> every overlapping latent patch through the map -> fold
(average the overlaps) -> decode -> crop back to the input's size``, then the
perception-distortion interpolation with the input. The map is any callable on ``n x d``
float64 patch vectors, such as a fitted
:meth:`~latent_ot.GaussianOTTransformer.transport_tensor`.

Three variations of the paper's recipe (Adrai et al., 2023) are options here:

- *cycle spinning*: the whole path run on copies of the image shifted by a fraction of the
  latent grid (:func:`grid_shifts`), each output shifted back, and the outputs averaged. A
  small decoder prints a faint pattern that repeats with its latent grid (every 8 px for
  TAEF2) where it decodes latents of blurry images; the copies put that pattern at
  different places, so the average keeps the transported detail, which all copies share,
  and cancels the pattern (Coifman and Donoho, "Translation-invariant de-noising", 1995).
  Each shift costs one more encode and decode;
- *latent interpolation*: ``D((1 - alpha) T(z) + alpha z)`` instead of
  ``(1 - alpha) D(T(z)) + alpha x``, one decode per ``alpha``;
- *the input's low frequencies kept*: ``y + G_sigma * (x - y)`` for a decoded output ``y``,
  whose band below a Gaussian low-pass of ``sigma`` pixels is replaced by the input's
  (:func:`gaussian_low_pass`). A restorer gets an image's coarse content (its colours, its
  shading) right far more often than its fine detail, which is what the transport should add;
  the transport's own changes to the coarse content (colour and contrast pulled toward the
  average photo's) cost fidelity for little realism.

Examples
--------
>>> import torch
>>> from latent_ot.autoencoders import load_autoencoder
>>> pixels = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
>>> out = transport_images(pixels, load_autoencoder("pixel"), lambda v: v, patch_size=3)
>>> torch.allclose(out, pixels, atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Options

from ..patches import map_patches
from ..validation import check_choice, check_constraints
from .statistics import DEFAULT_PATCH_CHUNK_SIZE, encode_padded

__all__ = [
    "INTERPOLATIONS",
    "SHIFTS",
    "SHIFT_COUNTS",
    "blend",
    "gaussian_low_pass",
    "grid_shifts",
    "sweep_images",
    "transport_images",
    "transport_latents",
]

INTERPOLATIONS = ("pixel", "latent")
"""Where ``alpha`` interpolates between the transported image and the input."""

SHIFT_COUNTS = (1, 2, 4, 16)
"""How many shifted copies cycle spinning may average (:func:`grid_shifts`)."""

SHIFTS = [Options(Integral, set(SHIFT_COUNTS))]
"""The constraint on a ``shifts`` count, for estimators' ``_parameter_constraints``."""

PatchMap = Callable[[torch.Tensor], torch.Tensor]
Shift = tuple[int, int]


def grid_shifts(count: int, factor: int) -> tuple[Shift, ...]:
    """The ``(down, right)`` pixel shifts of cycle spinning for a latent grid of ``factor`` px.

    ``1``: the image as it is; ``2``: also shifted by half a latent pixel along both axes;
    ``4``: by half a latent pixel along each axis and both; ``16``: every multiple of a
    quarter latent pixel along each axis. A shift that a small factor cannot make (the
    identity autoencoder's factor 1) is left out.

    Examples
    --------
    >>> grid_shifts(4, 8)
    ((0, 0), (0, 4), (4, 0), (4, 4))
    >>> grid_shifts(2, 8), grid_shifts(16, 1)
    (((0, 0), (4, 4)), ((0, 0),))
    """
    count = check_constraints(count, "shifts", SHIFTS)
    half, quarter = factor // 2, factor // 4
    if count == 16:
        steps = sorted({quarter * k for k in range(4)})
        shifts = [(down, right) for down in steps for right in steps]
    elif count == 4:
        shifts = [(0, 0), (0, half), (half, 0), (half, half)]
    else:
        shifts = [(0, 0), (half, half)][:count]
    return tuple(dict.fromkeys(shifts))  # the distinct ones, in order


def blend(transported: torch.Tensor, original: torch.Tensor, alpha: float) -> torch.Tensor:
    """Perception-distortion interpolation ``(1 - alpha) * transported + alpha * original``."""
    if alpha == 0.0:
        return transported
    return torch.lerp(transported, original.to(transported.dtype), alpha)


def gaussian_low_pass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""Gaussian blur of each channel of ``N x C x H x W`` images, the edges extended.

    .. math::

        (G_\sigma * x)[i, j] = \sum_{|u|, |v| \le r} g[u]\, g[v]\, x[i + u, j + v],
        \qquad g[u] \propto e^{-u^2 / 2\sigma^2}

    with ``r = round(4 sigma)`` and pixels beyond an edge equal to the edge pixel: the same
    as ``scipy.ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode="nearest")``, at any
    image size.

    Examples
    --------
    >>> flat = torch.full((1, 3, 5, 7), 0.25)
    >>> torch.allclose(gaussian_low_pass(flat, 3.0), flat)
    True
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), "replicate"), rows, groups=channels)
    columns = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.pad(blurred, (0, 0, radius, radius), "replicate"), columns, groups=channels)


def transport_latents(
    latents: torch.Tensor,
    patch_map: PatchMap,
    *,
    patch_size: int,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
) -> torch.Tensor:
    """Apply ``patch_map`` to every overlapping ``C x p x p`` patch of ``N x C x h x w`` latents.

    Patches are mapped ``chunk_size`` at a time and folded back by averaging the overlaps
    with equal weights, as the paper does.
    """
    return map_patches(latents, patch_size, patch_map, max_patches=chunk_size)


def transport_images(
    pixels: torch.Tensor, autoencoder: Any, patch_map: PatchMap, **options: Any
) -> torch.Tensor:
    """Encode, transport every latent patch, fold, decode, crop: the ``alpha = 0`` images.

    The keyword ``options`` are those of :func:`sweep_images`.
    """
    return sweep_images(pixels, autoencoder, patch_map, [0.0], **options)[0]


def sweep_images(
    pixels: torch.Tensor,
    autoencoder: Any,
    patch_map: PatchMap,
    alphas: list[float],
    *,
    patch_size: int,
    chunk_size: int = DEFAULT_PATCH_CHUNK_SIZE,
    interpolation: str = "pixel",
    low_frequency_sigma: float | None = None,
    shifts: Sequence[Shift] = ((0, 0),),
    name: str = "images",
    generator: torch.Generator | None = None,
    on_encoded: Callable[[torch.Tensor], Any] | None = None,
) -> list[torch.Tensor | None]:
    """Transported images interpolated with the input for each ``alpha``; one encoding per
    shift.

    Parameters
    ----------
    pixels : torch.Tensor
        ``N x 3 x H x W`` in ``[0, 1]``, on the autoencoder's device; any ``H``, ``W`` of at
        least the autoencoder's factor.
    autoencoder : Autoencoder
    patch_map : callable
        From ``n x d`` float64 patch vectors to ``n x d``.
    alphas : list of float
        ``0`` is the transported image, ``1`` the input.
    patch_size, chunk_size
        See :func:`transport_latents`.
    interpolation : {"pixel", "latent"}, default "pixel"
        Interpolate ``alpha`` between the images (the paper) or between the latents.
    low_frequency_sigma : float, optional
        Replace the band of every output below a Gaussian low-pass of this many pixels by
        the input's: ``y + G * (x - y)`` (:func:`gaussian_low_pass`); None keeps ``y``.
    shifts : sequence of (int, int), default ((0, 0),)
        Cycle spinning: the ``(down, right)`` pixel shifts (each less than the image's side)
        whose outputs are averaged, e.g. :func:`grid_shifts`; the default runs the image as
        it is.
    name : str
        What error messages call the batch.
    generator : torch.Generator, optional
        For an autoencoder that samples its latent.
    on_encoded : callable, optional
        Called with the latents of the unshifted pixels, as :func:`encode_padded` gives them
        (when ``shifts`` holds ``(0, 0)``): what measuring the input needs, without encoding
        it again.

    Returns
    -------
    list
        Per alpha, ``N x 3 x H x W`` float32 of the input's size, unclipped; None for
        ``alpha == 1`` (the input itself, which callers return bit for bit).
    """
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    decoded_alphas = alphas if interpolation == "latent" else [0.0]
    decoded = None
    for shift in shifts:
        at_shift = _decode_at_shift(
            pixels,
            shift,
            autoencoder,
            patch_map,
            decoded_alphas,
            patch_size,
            chunk_size,
            name,
            generator,
            on_encoded if shift == (0, 0) else None,
        )
        decoded = (
            at_shift
            if decoded is None
            else [_add(a, b) for a, b in zip(decoded, at_shift, strict=True)]
        )
    if len(shifts) > 1:
        decoded = [None if d is None else d / len(shifts) for d in decoded]

    def kept_low_frequencies(image: torch.Tensor) -> torch.Tensor:
        if low_frequency_sigma is None:
            return image
        return image + gaussian_low_pass(pixels.to(image.dtype) - image, low_frequency_sigma)

    if interpolation == "latent":
        return [None if d is None else kept_low_frequencies(d) for d in decoded]
    transported = kept_low_frequencies(decoded[0])
    return [None if a == 1.0 else blend(transported, pixels, a) for a in alphas]


def _decode_at_shift(
    pixels: torch.Tensor,
    shift: Shift,
    autoencoder: Any,
    patch_map: PatchMap,
    alphas: list[float],
    patch_size: int,
    chunk_size: int,
    name: str,
    generator: torch.Generator | None,
    on_encoded: Callable[[torch.Tensor], Any] | None = None,
) -> list[torch.Tensor | None]:
    """Per alpha, the decoded latents ``(1 - alpha) T(z) + alpha z`` of the pixels shifted by
    ``shift`` (reflect-padded), shifted back to the input's place; None for ``alpha == 1``."""
    down, right = shift
    height, width = pixels.shape[-2:]
    shifted = F.pad(pixels, (right, 0, down, 0), mode="reflect") if down or right else pixels
    latents = encode_padded(shifted, autoencoder, name=name, generator=generator)
    if on_encoded is not None:
        on_encoded(latents)
    moved = transport_latents(latents, patch_map, patch_size=patch_size, chunk_size=chunk_size)

    def decoded(alpha: float) -> torch.Tensor:
        image = autoencoder.decode(moved if alpha == 0.0 else blend(moved, latents, alpha))
        return image[..., down : down + height, right : right + width]

    return [None if alpha == 1.0 else decoded(alpha) for alpha in alphas]


def _add(total: torch.Tensor | None, more: torch.Tensor | None) -> torch.Tensor | None:
    return None if total is None else total.add_(more)
