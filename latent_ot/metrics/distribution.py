"""Perceptual quality between the distributions of two image sets: FID, KID, IS, patch FID.

Features are extracted here, once per image (see `latent_ot.metrics.networks`), and handed to
torchmetrics' metrics as already computed features, so the statistics are torchmetrics' own.
"""

from __future__ import annotations

import itertools
import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from sklearn.utils import check_random_state
from torch import Tensor, nn

from ..images import ImageSource
from ..validation import check_int
from .networks import _extract_features, _extractor, _image_features

__all__ = ["fid", "inception_score", "kid", "patch_fid"]


class _Precomputed(nn.Module):
    """Hands already extracted features to a torchmetrics metric as its feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics' FID to size its state

    def forward(self, features: Tensor) -> Tensor:
        return features


def _check_enough(features: Tensor, minimum: int, name: str, metric: str, what: str) -> None:
    if len(features) < minimum:
        raise ValueError(f"{metric} needs at least {minimum} {what} in {name}; got {len(features)}")


def _seeded(random_state: Any) -> int:
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _compute_with_seed(metric: Any, seed: int) -> Any:
    """``metric.compute()`` with torch's CPU generator seeded, and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return metric.compute()


def _frechet_distance(features: Tensor, reference_features: Tensor, metric: str, what: str):
    _check_enough(features, 2, "images", metric, what)
    _check_enough(reference_features, 2, "reference", metric, what)
    from torchmetrics.image.fid import FrechetInceptionDistance

    distance = FrechetInceptionDistance(feature=_Precomputed(features.shape[1]))
    distance.update(reference_features, real=True)
    distance.update(features, real=False)
    return float(distance.compute())


def _kernel_distance(
    features: Tensor,
    reference_features: Tensor,
    *,
    subsets: int,
    subset_size: int | None,
    degree: int,
    random_state: Any,
) -> float:
    _check_enough(features, 2, "images", "kid", "images")
    _check_enough(reference_features, 2, "reference", "kid", "images")
    largest = min(len(features), len(reference_features))
    if subset_size is None:
        subset_size = min(1000, largest)
    elif not 2 <= subset_size <= largest:
        raise ValueError(
            f"subset_size must be between 2 and the size of the smaller set ({largest}); "
            f"got {subset_size}"
        )
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        distance = KernelInceptionDistance(
            feature=_Precomputed(features.shape[1]),
            subsets=subsets,
            subset_size=subset_size,
            degree=degree,
        )
    distance.update(reference_features, real=True)
    distance.update(features, real=False)
    mean, _ = _compute_with_seed(distance, _seeded(random_state))
    return float(mean)


def _inception_score(logits: Tensor, *, splits: int, random_state: Any) -> float:
    if splits > len(logits):
        raise ValueError(
            f"splits must be at most the number of images ({len(logits)}); got {splits}"
        )
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        score = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits)
    score.update(logits)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom")  # std of 1 split
        mean, _ = _compute_with_seed(score, _seeded(random_state))
    return float(mean)


def _set_features(
    images: Any, reference: Any, extractor: Any, batch_size: int
) -> tuple[Tensor, Tensor]:
    """The ``feature_extractor`` features of both sets, those of ``images`` first."""
    return (
        _image_features(images, "images", extractor, "feature_extractor", batch_size),
        _image_features(reference, "reference", extractor, "feature_extractor", batch_size),
    )


def fid(
    images: Any,
    reference: Any,
    *,
    feature_extractor: Callable | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
) -> float:
    """Frechet inception distance between the features of two image sets (Heusel et al. 2017).

    The squared W2 distance between Gaussians fitted to the features of ``images`` and of
    ``reference``, computed by torchmetrics. The sets are unpaired and may differ in size.
    Fewer images than features leave the covariances singular: FID is then biased upwards,
    as it always is on small sets; see `patch_fid` for a dozen images.

    Parameters
    ----------
    images, reference : images
        At least 2 images each.
    feature_extractor : callable, optional
        Maps ``N x 3 x H x W`` images in [0, 1] to ``N x d`` features. Default: the 2048
        pool features of the FID Inception-v3 (torchmetrics, needs torch-fidelity, downloads
        the weights), which resizes every image to 299 x 299 itself.
    batch_size : int, default 16
        Images per forward pass (same-size images only).
    device : str or torch.device, default "auto"
        Where the default network runs ("auto": CUDA when available).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If a set has fewer than 2 images, or the extractor returns the wrong shape.
    ModuleNotFoundError
        For the default network without torch-fidelity (or torchmetrics); the ``metrics``
        extra installs it: ``pip install "latent-ot[metrics]"``.

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> fid(images, images, feature_extractor=pooled) < 1e-6
    True
    """
    batch_size = check_int(batch_size, "batch_size")
    extractor = _extractor(feature_extractor, device, "fid")
    features, reference_features = _set_features(images, reference, extractor, batch_size)
    return _frechet_distance(features, reference_features, "fid", "images")


def kid(
    images: Any,
    reference: Any,
    *,
    feature_extractor: Callable | None = None,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """Kernel inception distance between the features of two image sets (Binkowski et al.).

    The unbiased estimate of the squared maximum mean discrepancy with the polynomial kernel
    ``k(x, y) = (x . y / d + 1) ** degree``, averaged over random subsets of equal size of
    both sets; computed by torchmetrics. Unlike FID it is unbiased on small sets.

    Parameters
    ----------
    images, reference : images
        At least 2 images each, unpaired.
    feature_extractor : callable, optional
        As for `fid`; default the FID Inception-v3 pool features.
    subsets : int, default 100
        Number of random subsets averaged.
    subset_size : int, optional
        Images per subset, from each set; default ``min(1000, n_images, n_reference)``.
        When it equals both set sizes every subset is the whole set and the result is exact.
    degree : int, default 3
        Degree of the polynomial kernel.
    batch_size : int, default 16
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the subsets; torch's global generator is left as it was.

    Returns
    -------
    float
        The mean over subsets (it can be slightly negative when the sets match).

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> same = kid(images, images, feature_extractor=pooled)
    >>> darker = kid(images, 0.5 * images, feature_extractor=pooled)
    >>> darker > 10 * abs(same)
    True
    """
    batch_size = check_int(batch_size, "batch_size")
    subsets = check_int(subsets, "subsets")
    degree = check_int(degree, "degree")
    if subset_size is not None:
        subset_size = check_int(subset_size, "subset_size", 2)
    extractor = _extractor(feature_extractor, device, "kid")
    features, reference_features = _set_features(images, reference, extractor, batch_size)
    return _kernel_distance(
        features,
        reference_features,
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
        random_state=random_state,
    )


def inception_score(
    images: Any,
    *,
    classifier: Callable | None = None,
    splits: int = 10,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """Inception score of an image set (Salimans et al. 2016), by torchmetrics.

    ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)`` the softmax of the classifier's logits
    and ``p(y)`` their mean, computed on each of ``splits`` random groups of the images and
    averaged. Higher is better; it needs no reference.

    Parameters
    ----------
    images : images
    classifier : callable, optional
        Maps ``N x 3 x H x W`` images in [0, 1] to ``N x n_classes`` logits. Default: the
        FID Inception-v3's 1008 logits (torchmetrics, needs torch-fidelity).
    splits : int, default 10
        Number of groups, at most the number of images. The images are shuffled and cut by
        ``torch.chunk``, which makes fewer groups when they do not divide evenly.
    batch_size : int, default 16
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the shuffle; torch's global generator is left as it was.

    Returns
    -------
    float
        The mean over groups, between 1 and ``n_classes``.

    Examples
    --------
    >>> import torch
    >>> confident = lambda images: 100 * torch.eye(4)[: len(images)]  # one class per image
    >>> round(inception_score(torch.rand(4, 3, 8, 8), classifier=confident, splits=1), 6)
    4.0
    """
    batch_size = check_int(batch_size, "batch_size")
    splits = check_int(splits, "splits")
    network = _extractor(classifier, device, "inception_score", argument="classifier")
    logits = _image_features(images, "images", network, "classifier", batch_size)
    return _inception_score(logits, splits=splits, random_state=random_state)


# --------------------------------------------------------------------------- patch FID


def _crop_corners(
    height: int, width: int, crop_size: int, crops_per_image: int | None, rng: Any
) -> list[tuple[int, int]]:
    if crops_per_image is None:  # the grid of non-overlapping tiles, from the top left
        rows = range(0, height - crop_size + 1, crop_size)
        cols = range(0, width - crop_size + 1, crop_size)
        return list(itertools.product(rows, cols))
    tops = rng.randint(0, height - crop_size + 1, size=crops_per_image)
    lefts = rng.randint(0, width - crop_size + 1, size=crops_per_image)
    return list(zip(tops.tolist(), lefts.tolist(), strict=True))


def _crops(
    images: Any, name: str, crop_size: int, crops_per_image: int | None, rng: Any
) -> Iterator[tuple[str, Tensor]]:
    for item in ImageSource(images, name=name):
        height, width = item.pixels.shape[-2:]
        if min(height, width) < crop_size:
            raise ValueError(
                f"{item.name} is {height} x {width} px, smaller than crop_size={crop_size}"
            )
        for top, left in _crop_corners(height, width, crop_size, crops_per_image, rng):
            yield item.name, item.pixels[:, top : top + crop_size, left : left + crop_size]


def _crop_features(images, source, extractor, crop_size, crops_per_image, rng, batch_size):
    crops = _crops(images, source, crop_size, crops_per_image, rng)
    return _extract_features(
        crops, extractor, argument="feature_extractor", source=source, batch_size=batch_size
    )


def patch_fid(
    images: Any,
    reference: Any,
    *,
    crop_size: int = 64,
    crops_per_image: int | None = None,
    feature_extractor: Callable | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """FID between crops of two image sets: FID that means something on a dozen images.

    FID needs many more samples than a small evaluation set has; cutting every image into
    many crops gives them (as in the evaluations of small image sets in restoration papers).
    Both sets are cut the same way and the crops are compared as in `fid`.

    Parameters
    ----------
    images, reference : images
        Unpaired; every image at least ``crop_size`` px on each side.
    crop_size : int, default 64
        Side of the square crops, in pixels.
    crops_per_image : int, optional
        None: every non-overlapping ``crop_size`` tile of the grid from the top-left corner
        (deterministic). An int: that many crops at uniformly random positions per image.
    feature_extractor : callable, optional
        As for `fid`; the default Inception-v3 upsamples each crop to 299 x 299.
    batch_size : int, default 64
        Crops per forward pass.
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the random crop positions.

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> patch_fid(images, images, crop_size=8, feature_extractor=pooled) < 1e-6  # 32 crops
    True
    """
    crop_size = check_int(crop_size, "crop_size")
    if crops_per_image is not None:
        crops_per_image = check_int(crops_per_image, "crops_per_image")
    batch_size = check_int(batch_size, "batch_size")
    extractor = _extractor(feature_extractor, device, "patch_fid")
    features, reference_features = (
        # A generator per set: an int seed puts the crops of equal-size images at the same places.
        _crop_features(
            source,
            name,
            extractor,
            crop_size,
            crops_per_image,
            check_random_state(random_state),
            batch_size,
        )
        for source, name in ((images, "images"), (reference, "reference"))
    )
    return _frechet_distance(features, reference_features, "patch_fid", "crops")
