"""Distortion between each image and its reference: PSNR, SSIM and LPIPS.

Pairs may differ in size from pair to pair; each pair is scored on its own, in one pass over
the pairs, and the scores are averaged or returned per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..devices import resolve_device
from ._pixels import pairs, size_text
from .networks import (
    _LPIPS_BACKBONES,
    _check_network,
    _default_lpips,
    _describe_output,
    _network_device,
    _require_torchmetrics,
)

__all__ = ["lpips", "psnr", "ssim"]

# Wang et al. 2004: an 11-tap Gaussian window of sigma 1.5, K1 = 0.01 and K2 = 0.03 on a data
# range of 1 (scikit-image's gaussian_weights=True truncates its Gaussian to the same 11 taps).
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2
_SSIM_STRIP_ROWS = 256  # output rows of SSIM computed at once
_LPIPS_EPS = 1e-8  # inside the square root of the channel norm, as torchmetrics' LPIPS

# (image, reference image, pair name) -> score
_PairScorer = Callable[[Tensor, Tensor, str], float]


def _check_reduction(reduction: Any) -> None:
    if reduction not in ("mean", None):
        raise ValueError(f"reduction must be 'mean' or None, got {reduction!r}")


def _paired_scores(images: Any, reference: Any, scorers: dict[str, _PairScorer]) -> dict:
    """Per-pair scores of every scorer, in one pass over the pairs."""
    scores: dict[str, list[float]] = {metric: [] for metric in scorers}
    for name, image, target in pairs(images, reference):
        for metric, score in scorers.items():
            scores[metric].append(score(image, target, name))
    return {metric: np.asarray(values, dtype=np.float64) for metric, values in scores.items()}


def _reduced(scores: np.ndarray, reduction: str | None) -> float | np.ndarray:
    return float(scores.mean()) if reduction == "mean" else scores


# --------------------------------------------------------------------------- PSNR and SSIM


def _psnr_pair(image: Tensor, target: Tensor, name: str) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pair = image.double()[None], target.double()[None]
    return float(peak_signal_noise_ratio(*pair, data_range=1.0))


def _gaussian_taps(device: torch.device) -> Tensor:
    """The 11 normalised taps of a Gaussian of sigma 1.5, in float32."""
    offsets = torch.arange(_SSIM_WINDOW, dtype=torch.float64) - _SSIM_WINDOW // 2
    taps = torch.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    return (taps / taps.sum()).to(device=device, dtype=torch.float32)


def _window_means(maps: Tensor, taps: Tensor) -> Tensor:
    """Gaussian-weighted means over every window inside ``maps`` (``K x h x W``): two 1-D passes."""
    channels = maps.shape[0]
    rows = F.conv2d(maps[None], taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def _ssim_sum(image: Tensor, target: Tensor, taps: Tensor) -> Tensor:
    """Sum of the SSIM map over the windows inside a ``C x h x W`` strip (float64 scalar)."""
    x, y = image.float(), target.float()
    means = _window_means(torch.cat([x, y, x * x, y * y, x * y]), taps)
    mu_x, mu_y, xx, yy, xy = means.chunk(5)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (numerator / denominator).sum(dtype=torch.float64)


def _ssim_pair(image: Tensor, target: Tensor, name: str) -> float:
    """Mean SSIM over the channels and the windows inside the image, in float32.

    The image is cut into strips of rows (each with the window's margin) so that the
    temporaries stay a few times the size of one strip, whatever the size of the image.
    """
    height, width = image.shape[-2:]
    if min(height, width) < _SSIM_WINDOW:
        raise ValueError(
            f"{name} is {size_text(image)} px; ssim needs at least {_SSIM_WINDOW} x "
            f"{_SSIM_WINDOW} (its Gaussian window)"
        )
    taps = _gaussian_taps(image.device)
    margin = _SSIM_WINDOW - 1
    total = torch.zeros((), dtype=torch.float64, device=image.device)
    for top in range(0, height - margin, _SSIM_STRIP_ROWS):
        rows = slice(top, min(top + _SSIM_STRIP_ROWS, height - margin) + margin)
        total += _ssim_sum(image[:, rows], target[:, rows], taps)
    windows = image.shape[0] * (height - margin) * (width - margin)
    return float(total / windows)


def psnr(images: Any, reference: Any, *, reduction: str | None = "mean") -> float | np.ndarray:
    """Peak signal-to-noise ratio of each image against its reference, in dB.

    Computed by torchmetrics on RGB pixels in [0, 1] (peak 1), in float64.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size (see `latent_ot.images.ImageSource`).
    reduction : {"mean", None}, default "mean"
        ``"mean"``: the mean of the per-pair PSNRs (not the PSNR of the pooled error);
        None: the per-pair values. Identical pairs give ``inf``.

    Returns
    -------
    float or numpy.ndarray

    Raises
    ------
    ValueError
        If the counts differ, a pair differs in size, or there are no images.

    Examples
    --------
    >>> import torch
    >>> reference = torch.full((2, 3, 8, 8), 0.5)
    >>> round(psnr(reference + 0.1, reference), 4)  # an error of 0.1: 10 log10(1 / 0.01)
    20.0
    """
    _check_reduction(reduction)
    _require_torchmetrics()
    return _reduced(_paired_scores(images, reference, {"psnr": _psnr_pair})["psnr"], reduction)


def ssim(images: Any, reference: Any, *, reduction: str | None = "mean") -> float | np.ndarray:
    """Structural similarity of each image with its reference (Wang et al. 2004).

    With the standard settings: an 11 x 11 Gaussian window of sigma 1.5, ``K1 = 0.01``,
    ``K2 = 0.03``, on RGB pixels in [0, 1]; local variances and covariance are the window's
    weighted population ones (``E[xy] - E[x] E[y]``). The map is averaged over the three
    channels and the windows that lie inside the image (pixels at least 5 px from the
    border), as in the authors' code and in scikit-image's ``structural_similarity(...,
    channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``, which it matches to float32 precision. The Gaussian is
    separable: each window mean is a row pass then a column pass, in float32.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size, each at least 11 x 11 px.
    reduction : {"mean", None}, default "mean"
        The mean over pairs, or None for the per-pair values.

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> import torch
    >>> images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> round(ssim(images, images), 6)
    1.0
    """
    _check_reduction(reduction)
    return _reduced(_paired_scores(images, reference, {"ssim": _ssim_pair})["ssim"], reduction)


# --------------------------------------------------------------------------- LPIPS


def _unit_channels(features: Tensor) -> Tensor:
    return features / torch.sqrt(_LPIPS_EPS + features.square().sum(dim=1, keepdim=True))


def _lpips_distance(
    features: Sequence[Tensor], targets: Sequence[Tensor], weights: Sequence[Tensor] | None
) -> Tensor:
    """The LPIPS formula on feature maps: unit channel vectors, weighted squared distance,
    mean over positions, sum over layers (Zhang et al. 2018, eq. 1)."""
    total = torch.zeros((), dtype=torch.float64)
    for layer, (feature, target) in enumerate(zip(features, targets, strict=True)):
        squared = (_unit_channels(feature.double()) - _unit_channels(target.double())).square()
        if weights is not None:
            squared = squared * weights[layer].to(squared).reshape(1, -1, 1, 1)
        total = total + squared.sum(dim=1).mean().cpu()
    return total


def _feature_maps(output: Any, name: str) -> list[Tensor]:
    maps = [output] if isinstance(output, Tensor) else output
    if (
        not isinstance(maps, Sequence)
        or not maps
        or not all(isinstance(m, Tensor) and m.ndim == 4 and len(m) == 2 for m in maps)
    ):
        raise ValueError(
            "net must map an N x 3 x H x W batch to a feature map N x C x h x w or a list of "
            f"them; on {name} it returned {_describe_output(output)}"
        )
    return list(maps)


def _check_layer_weights(weights: Any, maps: list[Tensor]) -> list[Tensor] | None:
    if weights is None:
        return None
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence):
        raise TypeError("layer_weights must be a list of 1-D tensors, one per feature map")
    if len(weights) != len(maps):
        raise ValueError(f"layer_weights has {len(weights)} entries but net gives {len(maps)} maps")
    checked = []
    for layer, (weight, feature) in enumerate(zip(weights, maps, strict=True)):
        weight = torch.as_tensor(weight).detach().to(torch.float64).flatten()
        if len(weight) != feature.shape[1]:
            raise ValueError(
                f"layer_weights[{layer}] has {len(weight)} values but feature map {layer} has "
                f"{feature.shape[1]} channels"
            )
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise ValueError(f"layer_weights[{layer}] must be finite and non-negative")
        checked.append(weight)
    return checked


def _custom_lpips_scorer(net: Any, layer_weights: Any) -> _PairScorer:
    device = _network_device(net)

    def score(image: Tensor, target: Tensor, name: str) -> float:
        with torch.inference_mode():
            maps = _feature_maps(net(torch.stack([image, target]).to(device)), name)
        weights = _check_layer_weights(layer_weights, maps)
        return float(_lpips_distance([m[:1] for m in maps], [m[1:] for m in maps], weights))

    return score


def _default_lpips_scorer(backbone: str, device: torch.device) -> _PairScorer:
    metric = _default_lpips(backbone, device)

    def score(image: Tensor, target: Tensor, name: str) -> float:
        # Called on one pair, a torchmetrics metric returns that pair's value.
        return float(metric(image[None].to(device), target[None].to(device)))

    return score


def _lpips_scorer(net: Any, layer_weights: Any, device: torch.device) -> _PairScorer:
    if net is None or isinstance(net, str):
        backbone = "alex" if net is None else net
        if backbone not in _LPIPS_BACKBONES:
            raise ValueError(
                f"net must be one of {_LPIPS_BACKBONES}, a network or None; got {net!r}"
            )
        if layer_weights is not None:
            raise ValueError("layer_weights applies to a network of your own, not to net=str")
        return _default_lpips_scorer(backbone, device)
    _check_network(net, "net")
    return _custom_lpips_scorer(net, layer_weights)


def lpips(
    images: Any,
    reference: Any,
    *,
    net: str | Callable | None = None,
    layer_weights: Sequence[Tensor] | None = None,
    reduction: str | None = "mean",
    device: str | torch.device = "auto",
) -> float | np.ndarray:
    """Learned perceptual image patch similarity of each image with its reference.

    LPIPS (Zhang et al. 2018) compares deep features: at every position of every layer the
    channel vectors of both images are scaled to unit length, their squared difference is
    weighted per channel and summed, averaged over positions and summed over layers.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size.
    net : {"alex", "vgg", "squeeze"}, callable or None, default None (``"alex"``)
        A name: torchmetrics' LPIPS with that backbone and its calibrated weights (needs
        torchvision, which downloads the backbone). A network of your own: a callable mapping
        ``N x 3 x H x W`` images in [0, 1] to a feature map ``N x C x h x w`` or a list of
        them; without ``layer_weights`` every channel weighs 1 (the paper's uncalibrated
        "baseline" variant).
    layer_weights : list of Tensor, optional
        Non-negative channel weights, one 1-D tensor of length ``C_k`` per feature map of
        your ``net`` (the calibrated "lin" layers).
    reduction : {"mean", None}, default "mean"
        The mean over pairs, or None for the per-pair values.
    device : str or torch.device, default "auto"
        Where a named network runs ("auto": CUDA when available).

    Returns
    -------
    float or numpy.ndarray
        0 for identical images, larger for more different ones.

    Raises
    ------
    ModuleNotFoundError
        For a named network without torchvision (or torchmetrics); the ``metrics`` extra
        installs it: ``pip install "latent-ot[metrics]"``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Conv2d(3, 8, 3)  # untrained: only to show the call
    >>> images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> lpips(images, images, net=net)
    0.0
    """
    _check_reduction(reduction)
    scorer = _lpips_scorer(net, layer_weights, resolve_device(device))
    return _reduced(_paired_scores(images, reference, {"lpips": scorer})["lpips"], reduction)
