"""Artifact measures: traces that a specific processing step leaves in an image.

`latent_grid_score` measures the periodic pattern that the latent grid of an autoencoder
(8 pixels for TAEF2 and the SD VAEs) can print into a decoded image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601: the grey level of an RGB pixel
NEIGHBOURS = 12  # bins on each side of a harmonic that make its reference level
PEAK_HALF_WIDTH = 2  # bins on each side of a harmonic left out of that reference


def _grey(image: Any) -> np.ndarray:
    """``H x W`` float grey levels of an ``H x W`` or ``H x W x 3`` array (any dtype) or a
    ``3 x H x W`` / ``H x W`` torch tensor."""
    if hasattr(image, "detach"):  # a torch tensor: channels first
        image = image.detach().cpu().numpy()
        if image.ndim == 3:
            image = np.moveaxis(image, 0, -1)
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels @ LUMA
    if pixels.ndim == 2:
        return pixels
    raise ValueError(
        f"image: expected H x W or H x W x 3 pixels (3 x H x W for a tensor), got shape "
        f"{tuple(np.shape(image))}"
    )


def _power_along_last_axis(grey: np.ndarray) -> np.ndarray:
    """The power spectrum of every line along the last axis, averaged over the lines."""
    centred = grey - grey.mean(axis=-1, keepdims=True)
    return np.mean(np.abs(np.fft.rfft(centred, axis=-1)) ** 2, axis=0)


def _peak_ratios(power: np.ndarray, length: int, period: int) -> list[float]:
    """Power at each odd harmonic ``k / period`` over the median of its neighbours."""
    ratios = []
    for harmonic in range(1, (period + 1) // 2, 2):  # odd k with k / period < 1/2
        peak = round(harmonic * length / period)
        near = [
            peak + offset
            for offset in range(-NEIGHBOURS, NEIGHBOURS + 1)
            if abs(offset) > PEAK_HALF_WIDTH and 0 < peak + offset < len(power)
        ]
        ratios.append(float(power[peak] / max(np.median(power[near]), np.finfo(float).tiny)))
    return ratios


def latent_grid_score(image: Any, period: int = 8) -> float:
    """How strongly an image repeats with the period of a latent grid (1: not at all).

    The grey level's power spectrum along rows (each row's 1-D FFT, its mean removed,
    powers averaged over the rows) and likewise along columns; at each *odd* harmonic
    ``k / period`` cycles per pixel (``k = 1, 3, ...`` below ``period / 2``: 1/8 and 3/8
    for 8), the power of the nearest frequency bin divided by the median power of the
    bins within ``+-12`` of it, the peak's own ``+-2`` bins (and the DC bin) left out; the
    mean of these ratios over harmonics and both directions.

    A decoder that paints a pattern repeating every ``period`` pixels raises the power at
    all harmonics of ``1 / period``; the even ones are left out because a restorer's own
    patterns share them (a x4 super-resolution network's 4-pixel period puts power at
    1/4 and 1/2 cycles per pixel) and because smoothing lowers their neighbours, both of
    which would read as a grid that is not there. Photographs without such a pattern
    score about 1.

    Parameters
    ----------
    image : array_like
        ``H x W x 3`` RGB (grey level by ITU-R BT.601 luma) or ``H x W`` grey pixels, any
        dtype and scale (the score is a ratio of powers); a torch tensor is read channels
        first (``3 x H x W``). Each side at least ``8 * period`` pixels.
    period : int, default 8
        The grid's period in pixels: the autoencoder's downsampling factor.

    Returns
    -------
    float
        The mean ratio: about 1 without a grid, above where the grid shows.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(size=(128, 128))
    >>> abs(latent_grid_score(noise) - 1) < 0.2  # white noise: no period
    True
    >>> grid = noise + 0.5 * (np.arange(128) % 8 == 0)  # a faint line every 8 pixels
    >>> latent_grid_score(grid) > 1.2
    True
    """
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 3:
        raise ValueError(f"period: an integer of at least 3 pixels, got {period!r}")
    grey = _grey(image)
    if min(grey.shape) < 8 * period:
        raise ValueError(
            f"image: each side must be at least 8 * period = {8 * period} px for the "
            f"neighbouring frequencies, got {grey.shape[0]} x {grey.shape[1]}"
        )
    ratios = []
    for lines in (grey, grey.T):  # along rows, then along columns
        power = _power_along_last_axis(lines)
        ratios += _peak_ratios(power, lines.shape[-1], period)
    return float(np.mean(ratios))
