"""`evaluate`: a table of several metrics at once, each network run once per image."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..devices import resolve_device
from ..exceptions import MetricSkippedWarning, first_line
from ..validation import check_int
from .distortion import _lpips_scorer, _paired_scores, _psnr_pair, _ssim_pair
from .distribution import (
    _frechet_distance,
    _inception_score,
    _kernel_distance,
    _set_features,
    patch_fid,
)
from .latent import latent_w2
from .networks import (
    _extractor,
    _image_features,
    _install_remedy,
    _MissingPackageError,
    _require_torchmetrics,
)

__all__ = ["DEFAULT_METRICS", "METRICS", "evaluate"]

# Every metric name evaluate knows, and those it computes when none are named (documented
# where latent_ot.metrics re-exports them).
METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid", "latent_w2")
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid")

_PAIRED_METRICS = ("psnr", "ssim", "lpips")
# evaluate's IS splits hold at least this many images: p(y) needs many images per split.
_IS_SPLIT_SIZE = 100


def _requested_metrics(metrics: Any, autoencoder: Any) -> tuple[list[str], bool]:
    """The metric names to compute, and whether the caller named them."""
    if metrics is None:
        defaults = [*DEFAULT_METRICS, *(["latent_w2"] if autoencoder is not None else [])]
        return defaults, False
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"metrics: unknown or no names {unknown}; expected some of {', '.join(METRICS)}"
        )
    if "latent_w2" in names and autoencoder is None:
        raise ValueError("metrics: latent_w2 needs an autoencoder (autoencoder=...)")
    return list(dict.fromkeys(names)), True


def _skipped(metric: str, error: Exception, argument: str) -> MetricSkippedWarning:
    """The warning for a metric whose network could not be built, from the error."""
    alternative = f"{argument}=<your network>"
    if isinstance(error, _MissingPackageError):
        return MetricSkippedWarning(
            metric, error.reason, _install_remedy(error.package, alternative)
        )
    reason = first_line(f"{type(error).__name__}: {error}")
    if isinstance(error, OSError):  # weights that could not be downloaded or read
        remedy = f"download its weights once with a network connection, or pass {alternative}"
    else:
        remedy = _install_remedy(None, alternative)
    return MetricSkippedWarning(metric, reason, remedy)


class _EvaluationNetworks:
    """Builds the networks `evaluate` needs, skipping metrics whose default is unavailable.

    When the caller left the metrics to the defaults, a network that cannot be built (a
    missing package, weights that cannot be downloaded) drops the metrics that need it from
    ``requested``, with one `MetricSkippedWarning` each; metrics the caller named fail with
    the original error.
    """

    def __init__(self, requested: list[str], named: bool) -> None:
        self.requested = requested
        self.named = named

    def build(self, metrics: list[str], argument: str, build: Callable[[], Any]) -> Any:
        """``build()`` if a requested metric needs it; ``argument`` is how to pass your own."""
        needed_by = [metric for metric in metrics if metric in self.requested]
        if not needed_by:
            return None
        try:
            return build()
        except (ImportError, OSError) as err:
            if self.named:
                raise
            for metric in needed_by:
                # stacklevel 3: the caller of evaluate, which called this method.
                warnings.warn(_skipped(metric, err, argument), stacklevel=3)
                self.requested.remove(metric)
            return None


def _feature_metrics(
    images: Any, reference: Any, requested: list[str], extractor: Any, batch_size: int, seed: Any
) -> dict[str, float]:
    """fid and kid, from one pass of the feature extractor over each set."""
    if "fid" not in requested and "kid" not in requested:
        return {}
    features, reference_features = _set_features(images, reference, extractor, batch_size)
    results = {}
    if "fid" in requested:
        results["fid"] = _frechet_distance(features, reference_features, "fid", "images")
    if "kid" in requested:
        results["kid"] = _kernel_distance(
            features, reference_features, subsets=100, subset_size=None, degree=3, random_state=seed
        )
    return results


def evaluate(
    images: Any,
    reference: Any,
    *,
    metrics: Sequence[str] | None = None,
    feature_extractor: Callable | None = None,
    classifier: Callable | None = None,
    lpips_net: str | Callable | None = None,
    autoencoder: Any = None,
    patch_size: int = 3,
    crop_size: int = 64,
    crops_per_image: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> dict[str, float]:
    """A table of metrics of restored images against their references, in one call.

    Paired metrics (psnr, ssim, lpips) compare ``images[i]`` with ``reference[i]``; the
    others compare the two sets as distributions. Each network runs once per image: fid and
    kid share one pass of ``feature_extractor``.

    Parameters
    ----------
    images, reference : images
        Restored images and their clean references. Iterated several times: pass a list,
        a batch or a directory rather than a generator.
    metrics : sequence of str, optional
        Names from `METRICS`: "psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid",
        "latent_w2". Named metrics fail loudly when their default network is unavailable.
        None: `DEFAULT_METRICS` plus "latent_w2" given an ``autoencoder``; a metric whose
        default network cannot be built (torch-fidelity or torchvision missing, weights not
        downloadable) is then left out of the table, with a
        `latent_ot.exceptions.MetricSkippedWarning` for each metric left out, which says why
        (``reason``) and what to install or pass instead (``remedy``).
    feature_extractor : callable, optional
        For fid, kid and patch_fid (see `fid`).
    classifier : callable, optional
        For is (see `inception_score`).
    lpips_net : str or callable, optional
        For lpips (see `lpips`, argument ``net``).
    autoencoder : optional
        For latent_w2 (see `latent_w2`).
    patch_size : int, default 3
        Latent patch size of latent_w2.
    crop_size, crops_per_image : optional
        Crops of patch_fid (see `patch_fid`).
    batch_size : int, default 16
    device : str or torch.device, default "auto"
        Where default networks and an autoencoder given by name run.
    random_state : int, RandomState instance or None, default None
        Seeds kid's subsets, the is shuffle and random patch_fid crops. Pass an int to compare
        tables, for instance along a sweep of alphas.

    Returns
    -------
    dict of str to float
        Metric name to value, in the order of ``metrics``. psnr, ssim and lpips are means over
        pairs; kid uses 100 subsets of ``min(1000, n_images, n_reference)`` images; is uses
        ``min(10, max(1, n_images // 100))`` splits, so that every split holds at least 100
        images (10 splits from 1000 images on, the usual protocol), or all the images.

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> reference = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> table = evaluate(reference * 0.9, reference, metrics=["psnr", "fid"],
    ...                  feature_extractor=pooled)
    >>> sorted(table)
    ['fid', 'psnr']
    """
    requested, named = _requested_metrics(metrics, autoencoder)
    batch_size = check_int(batch_size, "batch_size")
    device = resolve_device(device)
    _require_torchmetrics()
    networks = _EvaluationNetworks(requested, named)
    lpips_scorer = networks.build(
        ["lpips"], "lpips_net", lambda: _lpips_scorer(lpips_net, None, device)
    )
    extractor = networks.build(
        ["fid", "kid", "patch_fid"],
        "feature_extractor",
        lambda: _extractor(feature_extractor, device, "fid, kid and patch_fid"),
    )
    inception = networks.build(
        ["is"],
        "classifier",
        lambda: _extractor(classifier, device, "inception_score", argument="classifier"),
    )

    results: dict[str, float] = {}
    scorers = {"psnr": _psnr_pair, "ssim": _ssim_pair, "lpips": lpips_scorer}
    scorers = {metric: scorers[metric] for metric in _PAIRED_METRICS if metric in requested}
    if scorers:
        for metric, scores in _paired_scores(images, reference, scorers).items():
            results[metric] = float(scores.mean())
    results |= _feature_metrics(images, reference, requested, extractor, batch_size, random_state)
    if "patch_fid" in requested:
        results["patch_fid"] = patch_fid(
            images,
            reference,
            crop_size=crop_size,
            crops_per_image=crops_per_image,
            feature_extractor=extractor,
            batch_size=batch_size,
            random_state=random_state,
        )
    if "is" in requested:
        logits = _image_features(images, "images", inception, "classifier", batch_size)
        splits = min(10, max(1, len(logits) // _IS_SPLIT_SIZE))
        results["is"] = _inception_score(logits, splits=splits, random_state=random_state)
    if "latent_w2" in requested:
        results["latent_w2"] = latent_w2(
            images, reference, autoencoder, patch_size=patch_size, device=device
        )
    return {metric: results[metric] for metric in requested}
