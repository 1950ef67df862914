"""`evaluate` and `Evaluator`: a table of several metrics at once, the images streamed."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from ..devices import resolve_device
from ..exceptions import MetricSkippedWarning, first_line
from ..stats import GaussianStats
from ..validation import check_bool, check_int
from ._pixels import named_pixels, pairs
from .distortion import _lpips_scorer, _psnr_pair, _ssim_pair
from .distribution import (
    _crop_features,
    _frechet_distance,
    _inception_score,
    _kernel_distance,
)
from .latent import (
    DEFAULT_LATENT_PATCH_SIZE,
    _distance,
    _enough,
    _image_stats,
    resolve_autoencoder,
)
from .networks import (
    _extractor,
    _image_features,
    _install_remedy,
    _MissingPackageError,
    _require_torchmetrics,
)

__all__ = ["DEFAULT_METRICS", "METRICS", "Evaluator", "evaluate"]

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
                # stacklevel 3: the caller of Evaluator, which called this method.
                warnings.warn(_skipped(metric, err, argument), stacklevel=3)
                self.requested.remove(metric)
            return None


class Evaluator:
    """Metrics of image sets against one reference set, whose own measures are taken once.

    What belongs to the reference alone (the statistics of its latent patches, its network
    features and crop features) is computed on the first call and kept; each call then
    streams its images: every pair is read once, scored (psnr, ssim, lpips) and encoded into
    running latent statistics (`latent_ot.stats.GaussianStats`, merged exactly), so memory
    holds one image pair plus what is accumulated. This is how `evaluate` works, and what a
    sweep of alphas measured against the same references uses.

    Parameters
    ----------
    reference : images
        The clean references (see `evaluate`).
    verbose : bool, default False
        Show progress bars: the encoding of the references, and the images of each call
        (unless the call passes its own ``progress``).
    **options
        Every other keyword of `evaluate` (metrics, networks, autoencoder, patch_size, ...).
        Networks are built, and metrics whose default network is unavailable are skipped
        with a `latent_ot.exceptions.MetricSkippedWarning`, when the evaluator is created.

    Attributes
    ----------
    metrics : list of str
        The metrics each call computes, in order.

    Examples
    --------
    >>> import torch
    >>> from latent_ot.metrics import psnr
    >>> reference = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> evaluator = Evaluator(reference, metrics=["psnr", "latent_w2"], autoencoder="pixel",
    ...                       patch_size=1)
    >>> [round(evaluator(reference * s)["psnr"], 2) for s in (0.9, 0.8)] == [
    ...     round(psnr(reference * s, reference), 2) for s in (0.9, 0.8)]
    True
    """

    def __init__(
        self,
        reference: Any,
        *,
        metrics: Sequence[str] | None = None,
        feature_extractor: Callable | None = None,
        classifier: Callable | None = None,
        lpips_net: str | Callable | None = None,
        autoencoder: Any = None,
        patch_size: int = DEFAULT_LATENT_PATCH_SIZE,
        crop_size: int = 64,
        crops_per_image: int | None = None,
        batch_size: int = 16,
        device: str | torch.device = "auto",
        random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        requested, named = _requested_metrics(metrics, autoencoder)
        self.batch_size = check_int(batch_size, "batch_size")
        self.patch_size = check_int(patch_size, "patch_size")
        self.crop_size = check_int(crop_size, "crop_size")
        self.crops_per_image = (
            None if crops_per_image is None else check_int(crops_per_image, "crops_per_image")
        )
        self.random_state = random_state
        self.verbose = check_bool(verbose, "verbose")
        self.reference = reference
        device = resolve_device(device)
        if "psnr" in requested or "ssim" in requested:
            _require_torchmetrics()
        networks = _EvaluationNetworks(requested, named)
        self._lpips = networks.build(
            ["lpips"], "lpips_net", lambda: _lpips_scorer(lpips_net, None, device)
        )
        self._extractor = networks.build(
            ["fid", "kid", "patch_fid"],
            "feature_extractor",
            lambda: _extractor(feature_extractor, device, "fid, kid and patch_fid"),
        )
        self._classifier = networks.build(
            ["is"],
            "classifier",
            lambda: _extractor(classifier, device, "inception_score", argument="classifier"),
        )
        self._autoencoder = None
        if "latent_w2" in requested:
            self._autoencoder = resolve_autoencoder(autoencoder, device)
        self.metrics = requested
        self._measured: dict[str, Any] | None = None

    def __call__(
        self,
        images: Any,
        *,
        progress: Callable[[], Any] | None = None,
        latent_stats: GaussianStats | None = None,
    ) -> dict[str, float]:
        """The metrics of ``images`` against the reference, in the order of `metrics`.

        ``progress`` is called once per image measured (such as a ``tqdm`` bar's
        ``update``). ``latent_stats``, the statistics of the latent patches of ``images``
        where they are already known, stands in for encoding them for latent_w2: the
        statistics of a sweep's inputs, from the latents that
        `latent_ot.LatentOTTransformer.sweep` hands to ``on_encoded``
        (`latent_ot.pipeline.statistics.patch_stats` of each, merged).
        """
        if latent_stats is not None:
            latent_stats = self._checked_latent_stats(latent_stats)
        reference = self._reference_measures()
        bar = None
        if progress is None:
            bar = tqdm(desc="measuring", unit="img", disable=not self.verbose)
            progress = bar.update
        try:
            results = self._streamed(images, reference, progress, latent_stats)
        finally:
            if bar is not None:
                bar.close()
        results |= self._feature_metrics(images, reference)
        return {metric: results[metric] for metric in self.metrics}

    def _checked_latent_stats(self, stats: Any) -> GaussianStats:
        if not isinstance(stats, GaussianStats):
            raise TypeError(f"latent_stats: expected GaussianStats, got {type(stats).__name__}")
        if self._autoencoder is None:
            raise ValueError("latent_stats: this evaluator does not compute latent_w2")
        dim = self._autoencoder.latent_channels * self.patch_size**2
        if stats.n_features != dim:
            raise ValueError(
                f"latent_stats: statistics of {stats.n_features}-dimensional patch vectors; "
                f"latent_w2 here uses {dim} ({self._autoencoder.latent_channels} channels, "
                f"patch_size={self.patch_size})"
            )
        return _enough(stats, "latent_stats")

    def _reference_measures(self) -> dict[str, Any]:
        """What the metrics need of the reference alone, computed on the first call."""
        if self._measured is not None:
            return self._measured
        measured: dict[str, Any] = {}
        if self._autoencoder is not None:
            measured["latent"] = self._reference_latent_stats()
        if "fid" in self.metrics or "kid" in self.metrics:
            measured["features"] = _image_features(
                self.reference, "reference", self._extractor, "feature_extractor", self.batch_size
            )
        if "patch_fid" in self.metrics:
            measured["crops"] = self._crop_features(self.reference, "reference")
        self._measured = measured
        return measured

    def _reference_latent_stats(self) -> GaussianStats:
        """The reference's latent patch statistics, encoded image by image."""
        merged = None
        named = named_pixels(self.reference, "reference")
        bar = tqdm(named, desc="encoding reference", unit="img", disable=not self.verbose)
        for name, image in bar:
            stats = self._latent_stats_of(image, name)
            merged = stats if merged is None else merged.merge(stats)
        if merged is None:
            raise ValueError("reference is empty: expected at least one image")
        return _enough(merged, "reference")

    def _latent_stats_of(self, image: torch.Tensor, name: str) -> GaussianStats:
        # Outside the allocator policy of latent_ot.memory, which the transport runs in: kept
        # freed memory makes an encoder pass faster, but between passes it holds what the
        # pixel metrics freed too, and measuring peaked 0.9 GB higher for 10 % less time
        # (benchmarks/README.md, evaluation.py).
        return _image_stats(image, name, self._autoencoder, self.patch_size)

    def _crop_features(self, images: Any, name: str) -> Any:
        rng = check_random_state(self.random_state)
        return _crop_features(
            images,
            name,
            self._extractor,
            self.crop_size,
            self.crops_per_image,
            rng,
            self.batch_size,
        )

    def _streamed(
        self,
        images: Any,
        reference: dict[str, Any],
        progress: Callable[[], Any],
        latent_stats: GaussianStats | None = None,
    ) -> dict[str, float]:
        """Paired scores and latent statistics (unless given), in one pass over the images."""
        scorers = {"psnr": _psnr_pair, "ssim": _ssim_pair, "lpips": self._lpips}
        scorers = {metric: scorers[metric] for metric in _PAIRED_METRICS if metric in self.metrics}
        encode = self._autoencoder is not None and latent_stats is None
        results: dict[str, float] = {}
        if scorers or encode:
            results, latent = self._one_pass(images, scorers, encode, progress)
            latent_stats = latent_stats if latent is None else _enough(latent, "images")
        if latent_stats is not None:
            results["latent_w2"] = _distance(latent_stats, reference["latent"])
        return results

    def _one_pass(
        self, images: Any, scorers: dict[str, Callable], encode: bool, progress: Callable[[], Any]
    ) -> tuple[dict[str, float], GaussianStats | None]:
        """The mean paired scores and, if ``encode``, the merged latent statistics."""
        if scorers:
            stream = pairs(images, self.reference)
        else:
            stream = ((name, image, None) for name, image in named_pixels(images, "images"))
        scores: dict[str, list[float]] = {metric: [] for metric in scorers}
        latent = None
        for name, image, target in stream:
            for metric, score in scorers.items():
                scores[metric].append(score(image, target, name))
            if encode:
                stats = self._latent_stats_of(image, name)
                latent = stats if latent is None else latent.merge(stats)
            progress()
        if encode and latent is None:  # (pairs raise for an empty set themselves)
            raise ValueError("images is empty: expected at least one image")
        return {metric: float(np.mean(values)) for metric, values in scores.items()}, latent

    def _feature_metrics(self, images: Any, reference: dict[str, Any]) -> dict[str, float]:
        """fid and kid from one pass of the feature extractor, patch_fid and is."""
        results: dict[str, float] = {}
        if "fid" in self.metrics or "kid" in self.metrics:
            features = _image_features(
                images, "images", self._extractor, "feature_extractor", self.batch_size
            )
            if "fid" in self.metrics:
                results["fid"] = _frechet_distance(features, reference["features"], "fid", "images")
            if "kid" in self.metrics:
                results["kid"] = _kernel_distance(
                    features,
                    reference["features"],
                    subsets=100,
                    subset_size=None,
                    degree=3,
                    random_state=self.random_state,
                )
        if "patch_fid" in self.metrics:
            crops = self._crop_features(images, "images")
            results["patch_fid"] = _frechet_distance(
                crops, reference["crops"], "patch_fid", "crops"
            )
        if "is" in self.metrics:
            logits = _image_features(
                images, "images", self._classifier, "classifier", self.batch_size
            )
            splits = min(10, max(1, len(logits) // _IS_SPLIT_SIZE))
            results["is"] = _inception_score(logits, splits=splits, random_state=self.random_state)
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
    patch_size: int = DEFAULT_LATENT_PATCH_SIZE,
    crop_size: int = 64,
    crops_per_image: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
    verbose: bool = False,
) -> dict[str, float]:
    """A table of metrics of restored images against their references, in one call.

    Paired metrics (psnr, ssim, lpips) compare ``images[i]`` with ``reference[i]``; the
    others compare the two sets as distributions. The images are streamed: each pair is read
    once for the paired metrics and the latent statistics, so memory holds one pair plus
    running statistics; fid and kid share one pass of ``feature_extractor``. To measure
    several image sets against the same references (a sweep of alphas), an `Evaluator`
    measures the references once.

    Parameters
    ----------
    images, reference : images
        Restored images and their clean references. Iterated several times when network
        metrics are asked for: pass a list, a batch or a directory rather than a generator.
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
    patch_size : int, default DEFAULT_LATENT_PATCH_SIZE (1)
        Latent patch size of latent_w2. To measure what an operator closes, pass its
        ``patch_size_`` (and its autoencoder, ``operator.vae``).
    crop_size, crops_per_image : optional
        Crops of patch_fid (see `patch_fid`).
    batch_size : int, default 16
    device : str or torch.device, default "auto"
        Where default networks and an autoencoder given by name run.
    random_state : int, RandomState instance or None, default None
        Seeds kid's subsets, the is shuffle and random patch_fid crops. Pass an int to compare
        tables, for instance along a sweep of alphas.
    verbose : bool, default False
        Show progress bars (tqdm): the references encoded, the images measured.

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluator = Evaluator(
            reference,
            metrics=metrics,
            feature_extractor=feature_extractor,
            classifier=classifier,
            lpips_net=lpips_net,
            autoencoder=autoencoder,
            patch_size=patch_size,
            crop_size=crop_size,
            crops_per_image=crops_per_image,
            batch_size=batch_size,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
    for warning in caught:  # a skipped metric points at the caller of evaluate
        if isinstance(warning.message, MetricSkippedWarning):
            warnings.warn(warning.message, stacklevel=2)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return evaluator(images)
