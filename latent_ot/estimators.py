"""The scikit-learn estimators: they compose the pieces and hold no math of their own.

- :class:`GaussianOTTransformer` transports 2-D samples (rows) between two Gaussians.
- :class:`LatentOTTransformer` does it on overlapping latent patches of images.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from .autoencoders import load_autoencoder
from .devices import resolve_device
from .distributed import gather_stats, sum_counts, synchronizing
from .exceptions import IncompatibleAutoencoderError
from .gaussian import GaussianMap, fit_gaussian_map, w2_distance
from .io import ImageItem, ImageSource, batch_name, batches_by_size, crop_to, pad_to_multiple
from .patches import gaussian_window, iter_patch_chunks, patch_dim, transport_patches
from .serialization import read_operator, write_operator
from .stats import GaussianStats

__all__ = ["GaussianOTTransformer", "LatentOTTransformer"]

_STOCHASTIC_MODES = ("auto", "never", "always")
_FITTED_MAP_ATTRIBUTES = (
    "mean_source_",
    "cov_source_",
    "mean_target_",
    "cov_target_",
    "transport_matrix_",
    "noise_cov_",
    "w2_",
)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}: {alpha!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return float(alpha)


def _check_stochastic(stochastic: Any) -> str:
    if not isinstance(stochastic, str) or stochastic not in _STOCHASTIC_MODES:
        raise ValueError(f"stochastic must be one of {_STOCHASTIC_MODES}, got {stochastic!r}")
    return stochastic


def _check_rtol(rtol: Any) -> float | None:
    if rtol is None:
        return None
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be None or a number in [0, 1), got {rtol!r}")
    return float(rtol)


def _check_enough_samples(count: int, name: str) -> None:
    if count < 2:
        raise ValueError(
            f"{name} has {count} sample(s); at least 2 rows are needed to estimate a covariance"
        )


def _to_float64_tensor(array: np.ndarray) -> torch.Tensor:
    # A copy: torch.from_numpy warns on read-only arrays (memory maps) and would share memory.
    return torch.from_numpy(np.array(array, dtype=np.float64, copy=True))


def _make_generator(random_state: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from a scikit-learn style ``random_state``.

    An int seeds it directly (same int, same noise); None draws fresh entropy; a
    ``numpy.random.RandomState`` gives a seed drawn from it.
    """
    generator = torch.Generator(device=device)
    if random_state is None:
        generator.seed()
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        generator.manual_seed(int(random_state))
    else:
        generator.manual_seed(int(check_random_state(random_state).randint(0, 2**31 - 1)))
    return generator


def _blend(transported: torch.Tensor, original: torch.Tensor, alpha: float) -> torch.Tensor:
    """Perception-distortion interpolation ``(1 - alpha) * transported + alpha * original``."""
    return torch.lerp(transported, original.to(transported.dtype), alpha)


def _stats_tensors(name: str, stats: GaussianStats) -> dict[str, torch.Tensor]:
    return {f"{name}.mean": stats.mean, f"{name}.scatter": stats.scatter}


def _stats_from(tensors: dict, name: str, count: int) -> GaussianStats:
    return GaussianStats.from_state(count, tensors[f"{name}.mean"], tensors[f"{name}.scatter"])


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values for an operator file; refuses what a file cannot hold."""
    plain = {}
    for name, value in params.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        elif isinstance(value, np.integer):
            value = int(value)
        if value is not None and not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"{name}: a {type(value).__name__} cannot be written to an operator file; use a "
                "name, a path or a number (an instance needs joblib, which pickles it)"
            )
        plain[name] = value
    return plain


class GaussianOTTransformer(TransformerMixin, BaseEstimator):
    """Optimal transport between two Gaussians fitted on samples, as a transformer.

    ``fit`` estimates the mean and covariance of the source samples ``X`` and of the
    ``target`` samples, and the closed-form optimal transport map between the two Gaussians
    (``EQUATIONS.md`` section 2). When the source covariance is singular the map becomes
    stochastic (section 3): ``transform`` then adds Gaussian noise, drawn independently for
    every row from ``random_state``, so that the output covariance is still the target's.
    ``alpha`` interpolates between the transported samples (0) and the input (1).

    Parameters
    ----------
    alpha : float, default=0.0
        Perception-distortion interpolation ``(1 - alpha) * T(X) + alpha * X``. ``0`` gives
        the transported samples, ``1`` returns ``X`` unchanged; values outside ``[0, 1]``
        extrapolate.
    stochastic : {"auto", "never", "always"}, default="auto"
        ``"auto"`` uses the stochastic map only when the source covariance is singular;
        ``"never"`` raises on a singular source; ``"always"`` uses it regardless.
    rtol : float, default=None
        Relative eigenvalue tolerance deciding singularity: an eigenvalue ``<= rtol *
        largest`` counts as zero. None means ``d * eps(float64)``, as in
        ``numpy.linalg.matrix_rank``.
    random_state : int, RandomState instance or None, default=None
        Seeds the noise of the stochastic map. The same int gives the same output on every
        call of ``transform``.

    Attributes
    ----------
    mean_source_, mean_target_ : ndarray of shape (n_features,)
    cov_source_, cov_target_ : ndarray of shape (n_features, n_features)
        Unbiased sample covariances.
    transport_matrix_ : ndarray of shape (n_features, n_features)
        ``T`` of the map ``x -> mean_target_ + T (x - mean_source_) (+ noise)``.
    noise_cov_ : ndarray of shape (n_features, n_features) or None
        Covariance of the noise of the stochastic map; None when deterministic.
    w2_ : float
        2-Wasserstein distance between the fitted Gaussians (not squared).
    source_stats_, target_stats_ : GaussianStats
        The streaming statistics; ``target_stats_`` is None when no target was given.
    n_features_in_ : int

    Notes
    -----
    With no ``target`` the map is the identity (the target is the source itself), which
    lets scikit-learn's generic checks exercise the class.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 2))
    >>> target = rng.normal(size=(1000, 2)) * [1.0, 3.0] + 5.0
    >>> ot = GaussianOTTransformer().fit(X, target=target)
    >>> Y = ot.transform(X)
    >>> bool(np.allclose(Y.mean(axis=0), target.mean(axis=0), atol=1e-8))
    True
    >>> bool(np.allclose(np.cov(Y.T), np.cov(target.T)))
    True
    """

    def __init__(self, *, alpha=0.0, stochastic="auto", rtol=None, random_state=None):
        self.alpha = alpha
        self.stochastic = stochastic
        self.rtol = rtol
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, X, y=None, *, target=None):
        """Fit the source statistics on ``X`` and the target statistics on ``target``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source samples; at least 2 rows.
        y : None
            Ignored; present for scikit-learn's API.
        target : array-like of shape (n_target_samples, n_features), GaussianStats or None
            Target samples (any number of rows, at least 2) or their statistics. None gives
            the identity map.

        Returns
        -------
        self : GaussianOTTransformer
        """
        self._check_params()
        X = validate_data(self, X, reset=True, dtype=np.float64)
        _check_enough_samples(X.shape[0], "X")
        target_stats = self._as_target_stats(target) if target is not None else None
        if target_stats is not None:
            _check_enough_samples(target_stats.count, "target")
            target_stats = target_stats.copy()
        self.source_stats_ = GaussianStats.from_samples(_to_float64_tensor(X))
        self.target_stats_ = target_stats
        self._fit_map()
        return self

    def partial_fit(self, X=None, y=None, *, target=None):
        """Stream a batch of source samples, target samples, or both.

        Statistics accumulate exactly across calls (see :class:`GaussianStats`); the map is
        recomputed from all data seen so far at the end of each call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or None
            A batch of source samples.
        y : None
            Ignored.
        target : array-like of shape (n_target_samples, n_features), GaussianStats or None
            A batch of target samples, or statistics to merge into the target side.

        Returns
        -------
        self : GaussianOTTransformer
        """
        self._check_params()
        if X is None and target is None:
            raise ValueError("partial_fit needs X, target or both; got neither")
        first_call = not hasattr(self, "source_stats_")
        if first_call and X is None:
            raise ValueError("the first call to partial_fit needs source samples X")
        source_batch = None
        if X is not None:
            X = validate_data(self, X, reset=first_call, dtype=np.float64)
            source_batch = _to_float64_tensor(X)
        target_update = self._as_target_stats(target) if target is not None else None

        # Everything is checked: now change the state, all or nothing.
        if first_call:
            self.source_stats_ = GaussianStats(self.n_features_in_)
            self.target_stats_ = None
        if source_batch is not None:
            self.source_stats_.update(source_batch)
        if target_update is not None:
            if self.target_stats_ is None:
                self.target_stats_ = GaussianStats(self.n_features_in_)
            self.target_stats_.merge(target_update)
        self._fit_map()
        return self

    def fit_stats(self, source: GaussianStats, target: GaussianStats | None = None):
        """Fit from already computed statistics of both sides (copied, not referenced).

        Parameters
        ----------
        source : GaussianStats
            Statistics of the source samples, at least 2 samples.
        target : GaussianStats or None
            Statistics of the target samples; None gives the identity map.

        Returns
        -------
        self : GaussianOTTransformer

        Examples
        --------
        >>> source = GaussianStats.from_samples(torch.randn(100, 3, dtype=torch.float64))
        >>> ot = GaussianOTTransformer().fit_stats(source, source)
        >>> bool(np.allclose(ot.transport_matrix_, np.eye(3)))
        True
        """
        self._check_params()
        if not isinstance(source, GaussianStats):
            raise TypeError(f"source must be GaussianStats, got {type(source).__name__}")
        _check_enough_samples(source.count, "source")
        self.n_features_in_ = source.n_features
        target_stats = self._as_target_stats(target) if target is not None else None
        if target_stats is not None:
            _check_enough_samples(target_stats.count, "target")
            target_stats = target_stats.copy()
        self.source_stats_ = source.copy()
        self.target_stats_ = target_stats
        self._fit_map()
        return self

    def _check_params(self) -> None:
        _check_alpha(self.alpha)
        _check_stochastic(self.stochastic)
        _check_rtol(self.rtol)

    def _as_target_stats(self, target) -> GaussianStats:
        if isinstance(target, GaussianStats):
            stats = target
        else:
            target = check_array(target, dtype=np.float64, input_name="target")
            stats = GaussianStats.from_samples(_to_float64_tensor(target))
        if stats.n_features != self.n_features_in_:
            raise ValueError(
                f"target has {stats.n_features} features, but X has {self.n_features_in_}; "
                "source and target samples must have the same number of columns"
            )
        return stats

    def _fit_map(self) -> None:
        """Recompute the map and the public fitted attributes from the statistics.

        Until each side has 2 samples (possible while streaming with ``partial_fit``) there
        is no covariance, and the estimator stays unfitted.
        """
        self._map_cache = {}
        source, target = self.source_stats_, self.target_stats_
        if source.count < 2 or (target is not None and target.count < 2):
            self._gaussian_map = None
            for name in _FITTED_MAP_ATTRIBUTES:
                self.__dict__.pop(name, None)
            return
        mean_s, cov_s = source.mean, source.covariance
        if target is None:
            identity = torch.eye(source.n_features, dtype=torch.float64, device=source.device)
            ot_map, w2 = GaussianMap(mean_s, mean_s, identity, None), 0.0
        else:
            mean_t, cov_t = target.mean, target.covariance
            ot_map = fit_gaussian_map(
                mean_s, cov_s, mean_t, cov_t, stochastic=self.stochastic, rtol=self.rtol
            )
            w2 = float(w2_distance(mean_s, cov_s, mean_t, cov_t))
        self._set_map(ot_map, w2)

    def _set_map(self, ot_map: GaussianMap, w2: float) -> None:
        """Install a map and derive the public fitted attributes from it and the statistics."""
        source, target = self.source_stats_, self.target_stats_ or self.source_stats_
        self._gaussian_map = ot_map
        self._map_cache = {}
        self.mean_source_ = source.mean.cpu().numpy()
        self.cov_source_ = source.covariance.cpu().numpy()
        self.mean_target_ = target.mean.cpu().numpy()
        self.cov_target_ = target.covariance.cpu().numpy()
        self.transport_matrix_ = ot_map.matrix.cpu().numpy()
        self.noise_cov_ = None
        if ot_map.noise_factor is not None:
            self.noise_cov_ = (ot_map.noise_factor @ ot_map.noise_factor.mT).cpu().numpy()
        self.w2_ = w2

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "_gaussian_map", None) is not None

    # -- transforming --------------------------------------------------------------------------

    def transform(self, X):
        """Transport the rows of ``X``, then interpolate with ``X`` by ``alpha``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features), float64
        """
        check_is_fitted(self)
        alpha = _check_alpha(self.alpha)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        samples = _to_float64_tensor(X)
        if alpha == 1.0:
            return samples.numpy()
        generator = _make_generator(self.random_state, samples.device)
        return _blend(self.transport_tensor(samples, generator), samples, alpha).numpy()

    def transport_tensor(self, samples: torch.Tensor, generator: torch.Generator | None = None):
        """Apply the fitted map (no ``alpha``) to the rows of a tensor, on its device.

        This is the one place the map is applied; :class:`LatentOTTransformer` calls it on
        latent patch vectors.

        Parameters
        ----------
        samples : Tensor of shape (n, n_features)
        generator : torch.Generator, optional
            Source of the noise of a stochastic map (on the device of ``samples``).

        Returns
        -------
        Tensor of shape (n, n_features), float64, on the device of ``samples``
        """
        check_is_fitted(self)
        ot_map = self._map_on(samples.device)
        noise = None
        if ot_map.stochastic:
            noise = torch.randn(
                samples.shape, generator=generator, dtype=torch.float64, device=samples.device
            )
        return ot_map(samples, noise)

    def _map_on(self, device: torch.device) -> GaussianMap:
        key = str(device)
        if key not in self._map_cache:
            self._map_cache[key] = self._gaussian_map.to(device)
        return self._map_cache[key]

    def interpolate(self, alpha: float) -> GaussianOTTransformer:
        """A fitted copy with another ``alpha``, without refitting.

        Examples
        --------
        >>> X = np.random.default_rng(0).normal(size=(50, 2))
        >>> ot = GaussianOTTransformer().fit(X, target=2 * X)
        >>> bool(np.array_equal(ot.interpolate(1.0).transform(X), X))
        True
        """
        check_is_fitted(self)
        alpha = _check_alpha(alpha)
        new = copy.deepcopy(self)
        new.alpha = alpha
        return new

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted transformer to a safe operator file (see :meth:`load`).

        The file holds tensors (safetensors) and JSON metadata, never code, with checksums;
        the write is atomic. ``random_state`` must be None or an int.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> X = np.random.default_rng(0).normal(size=(50, 2))
        >>> ot = GaussianOTTransformer(random_state=0).fit(X, target=3 * X)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ot.safetensors"
        >>> ot.save(path)
        >>> bool(np.array_equal(GaussianOTTransformer.load(path).transform(X), ot.transform(X)))
        True
        """
        check_is_fitted(self)
        tensors, metadata = self._file_state()
        metadata["kind"] = type(self).__name__
        metadata["params"] = _json_params(self.get_params())
        write_operator(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GaussianOTTransformer:
        """Read a transformer written by :meth:`save`; nothing in the file is executed.

        Raises
        ------
        OperatorFileError
            If the file is not a latent-ot operator of this class, is truncated, was
            tampered with (checksums), or was written by a newer format version.
        """
        tensors, metadata = read_operator(path, expected_kind=cls.__name__)
        estimator = cls(**metadata["params"])
        estimator._restore_file_state(tensors, metadata)
        return estimator

    def _file_state(self, prefix: str = "") -> tuple[dict, dict]:
        tensors = _stats_tensors(f"{prefix}source", self.source_stats_)
        counts = {"source": self.source_stats_.count}
        if self.target_stats_ is not None:
            tensors |= _stats_tensors(f"{prefix}target", self.target_stats_)
            counts["target"] = self.target_stats_.count
        ot_map = self._gaussian_map
        tensors[f"{prefix}map.mean_source"] = ot_map.mean_source
        tensors[f"{prefix}map.mean_target"] = ot_map.mean_target
        tensors[f"{prefix}map.matrix"] = ot_map.matrix
        if ot_map.noise_factor is not None:
            tensors[f"{prefix}map.noise_factor"] = ot_map.noise_factor
        metadata = {"counts": counts, "n_features_in": self.n_features_in_, "w2": self.w2_}
        return tensors, metadata

    def _restore_file_state(self, tensors: dict, metadata: dict, prefix: str = "") -> None:
        counts = metadata["counts"]
        self.n_features_in_ = metadata["n_features_in"]
        self.source_stats_ = _stats_from(tensors, f"{prefix}source", counts["source"])
        self.target_stats_ = None
        if "target" in counts:
            self.target_stats_ = _stats_from(tensors, f"{prefix}target", counts["target"])
        ot_map = GaussianMap(
            tensors[f"{prefix}map.mean_source"],
            tensors[f"{prefix}map.mean_target"],
            tensors[f"{prefix}map.matrix"],
            tensors.get(f"{prefix}map.noise_factor"),
        )
        self._set_map(ot_map, metadata["w2"])

    def __getstate__(self) -> dict:
        # Pickles load anywhere: state goes to the CPU, the per-device cache is rebuilt.
        state = super().__getstate__()
        state["_map_cache"] = {}
        if state.get("_gaussian_map") is not None:
            state["_gaussian_map"] = state["_gaussian_map"].to("cpu")
        for name in ("source_stats_", "target_stats_"):
            if state.get(name) is not None:
                state[name] = state[name].copy().to("cpu")
        return state


# -- images ---------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _describe_vae(vae: Any) -> str:
    if isinstance(vae, str | os.PathLike):
        return os.fspath(vae)
    return f"{type(vae).__name__} instance at {id(vae):#x}"


def _indexed_batches(source: Iterable[ImageItem], batch_size: int, verbose: bool, desc: str):
    """``(index, item)`` batches of equal-size images, with a progress bar when verbose."""
    progress = tqdm(source, desc=desc, unit="img", disable=not verbose)
    return batches_by_size(enumerate(progress), batch_size, pixels=lambda entry: entry[1].pixels)


def _group_name(group: list[tuple[int, ImageItem]]) -> str:
    return batch_name([item.name for _, item in group])


class LatentOTTransformer(TransformerMixin, BaseEstimator):
    """Deep Optimal Transport: make restored images look natural, from a dozen examples.

    ``fit`` encodes a set of restored images (outputs of any restoration model) and a set of
    natural images with a pretrained autoencoder, and fits Gaussian statistics of all their
    overlapping ``C x p x p`` latent patches. ``transform`` encodes new restored images,
    applies the Gaussian optimal transport map to every latent patch, folds the patches back
    by averaging, decodes, and finally interpolates with the input in pixel space:
    ``(1 - alpha) * transported + alpha * input`` (Adrai et al., NeurIPS 2023).

    Parameters
    ----------
    vae : str, os.PathLike, Autoencoder or diffusers model, default="stabilityai/sd-vae-ft-mse"
        The autoencoder: a preset name (``"sd-vae-ft-mse"``, ``"taef2"``, ``"pixel"``, ...), a
        hub id, a local directory or an instance; see
        :func:`latent_ot.autoencoders.load_autoencoder`. Loaded on first use, not here.
    patch_size : int, default=3
        Side ``p`` of the latent patches; the statistics have dimension ``C * p * p``.
    alpha : float, default=0.0
        ``0`` gives the transported images (most realistic), ``1`` returns the inputs
        unchanged; values outside ``[0, 1]`` extrapolate.
    stochastic : {"auto", "never", "always"}, default="auto"
        When to use the stochastic map (noise per patch) instead of the deterministic one;
        ``"auto"``: only when the restored patches' covariance is singular.
    fold_window : {"uniform", "gaussian"}, default="uniform"
        Weights of a patch's pixels when overlapping patches are averaged back.
    device : str or torch.device, default="auto"
        Where the autoencoder runs and the statistics live; ``"auto"`` picks CUDA when
        available.
    dtype : torch.dtype or str, default=None
        Compute dtype of the autoencoder (float32 when None); statistics are always float64.
    batch_size : int, default=4
        Images encoded together; only images of equal size share a batch.
    sample_latent : bool, default=False
        Encode with a sample of the latent distribution instead of its mean (``AutoencoderKL``
        only). The mean makes the result deterministic.
    patch_chunk_size : int, default=16384
        Patches processed at once: bounds memory whatever the image size.
    rtol : float, default=None
        Relative eigenvalue tolerance deciding singularity (see
        :class:`GaussianOTTransformer`).
    random_state : int, RandomState instance or None, default=None
        Seeds the noise of the stochastic map and the latent samples; the same int gives the
        same output on every call.
    verbose : bool, default=False
        Show progress bars (tqdm) while encoding and transporting.

    Attributes
    ----------
    gaussian_ot_ : GaussianOTTransformer
        The Gaussian transport fitted on the patch vectors (restored as source, natural as
        target); it is what is applied to every patch.
    restored_stats_, natural_stats_ : GaussianStats
        Streaming statistics of the patch vectors of each set.
    w2_ : float
        2-Wasserstein distance between the fitted restored and natural patch Gaussians.
    n_images_restored_, n_images_natural_ : int
        Images seen on each side.
    latent_channels_, factor_, patch_dim_ : int
        Latent channels and downsampling factor of the autoencoder used in ``fit``, and the
        patch vector length ``latent_channels_ * patch_size ** 2``.

    Notes
    -----
    Images may be PIL images, numpy arrays, torch tensors, file paths, a directory or any
    iterable of them, of mixed sizes; ``transform`` returns the kind it was given (see
    :mod:`latent_ot.io`). Sizes that are not multiples of the autoencoder's factor are
    reflect-padded and cropped back, so outputs have exactly the input's size.

    Pickling (``joblib.dump``) stores the statistics and how to re-create the autoencoder
    (its name or path), not its weights; an autoencoder given as an instance is a parameter
    and is pickled with its weights.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> natural = [rng.random((32, 32, 3)) for _ in range(3)]
    >>> restored = [np.clip(0.5 + 0.3 * (im - 0.5), 0, 1) for im in natural]  # washed out
    >>> dot = LatentOTTransformer(vae="pixel", patch_size=3, random_state=0)
    >>> dot = dot.fit(restored, natural)
    >>> out = dot.transform(restored[0])
    >>> out.shape, bool(out.std() > restored[0].std())
    ((32, 32, 3), True)
    """

    def __init__(
        self,
        vae="stabilityai/sd-vae-ft-mse",
        *,
        patch_size=3,
        alpha=0.0,
        stochastic="auto",
        fold_window="uniform",
        device="auto",
        dtype=None,
        batch_size=4,
        sample_latent=False,
        patch_chunk_size=16384,
        rtol=None,
        random_state=None,
        verbose=False,
    ):
        self.vae = vae
        self.patch_size = patch_size
        self.alpha = alpha
        self.stochastic = stochastic
        self.fold_window = fold_window
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.sample_latent = sample_latent
        self.patch_chunk_size = patch_chunk_size
        self.rtol = rtol
        self.random_state = random_state
        self.verbose = verbose

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, restored, natural=None):
        """Fit the patch statistics of restored and natural images and the transport map.

        Parameters
        ----------
        restored : images
            Outputs of the restoration model (any accepted kind, sizes may differ).
        natural : images
            Natural images (unpaired with ``restored``; any number, any sizes). Passed as
            ``y`` by a :class:`~sklearn.pipeline.Pipeline`.

        Returns
        -------
        self : LatentOTTransformer
        """
        if natural is None:
            raise ValueError("natural: fit needs natural images as well as restored ones")
        for name in ("restored_stats_", "natural_stats_", "gaussian_ot_"):
            self.__dict__.pop(name, None)
        return self.partial_fit(restored, natural)

    def partial_fit(self, restored=None, natural=None):
        """Stream more restored images, natural images, or both.

        Statistics are updated batch by batch: a batch that fails (an unreadable image, out
        of memory, an interrupt) leaves them as they were before it, and ``partial_fit`` can
        be called again to resume. The map is refitted at the end of every call once both
        sides have been seen. Inside :func:`latent_ot.distributed.synchronize_fit` the
        statistics of the call are merged across all ranks instead.

        Parameters
        ----------
        restored, natural : images or None

        Returns
        -------
        self : LatentOTTransformer
        """
        self._check_params()
        if restored is None and natural is None:
            raise ValueError("partial_fit needs restored images, natural images or both")
        autoencoder = self._autoencoder()
        if not hasattr(self, "restored_stats_"):
            self._start_fit(autoencoder)
        else:
            self._check_compatible(autoencoder)
        sides = {name: images for name, images in (("restored", restored), ("natural", natural))}
        try:
            if synchronizing():
                self._accumulate_across_ranks(sides, autoencoder)
            else:
                for name, images in sides.items():
                    if images is not None:
                        self._accumulate(name, images, autoencoder)
        finally:
            self._fit_transport()
        return self

    def _start_fit(self, autoencoder) -> None:
        device = resolve_device(self.device)
        self.latent_channels_ = autoencoder.latent_channels
        self.factor_ = autoencoder.factor
        self.patch_dim_ = patch_dim(self.latent_channels_, self.patch_size)
        self.restored_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.natural_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.n_images_restored_ = 0
        self.n_images_natural_ = 0

    def _accumulate(self, name: str, images, autoencoder) -> None:
        """Merge the patches of ``images`` into the ``name`` side, one batch at a time."""
        stats = getattr(self, f"{name}_stats_").to(resolve_device(self.device))
        count = 0
        for batch_stats, n_images in self._batch_stats(name, images, autoencoder):
            stats.merge(batch_stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + n_images)
            count += n_images
        if count == 0:
            raise ValueError(f"{name} is empty: expected at least one image")

    def _accumulate_across_ranks(self, sides: dict, autoencoder) -> None:
        """Accumulate this rank's share of the call, then merge every rank's, in rank order."""
        device = resolve_device(self.device)
        local = {name: GaussianStats(self.patch_dim_, device=device) for name in sides}
        counts = dict.fromkeys(sides, 0)
        for name, images in sides.items():
            for batch_stats, n_images in self._batch_stats(name, images or [], autoencoder):
                local[name].merge(batch_stats)
                counts[name] += n_images
        merged = gather_stats([local[name] for name in sides])
        totals = sum_counts([counts[name] for name in sides])
        for name, stats, total in zip(sides, merged, totals, strict=True):
            if sides[name] is not None and total == 0:
                raise ValueError(f"{name} is empty on every rank: expected at least one image")
            getattr(self, f"{name}_stats_").to(device).merge(stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + total)

    def _batch_stats(self, name: str, images, autoencoder) -> Iterator[tuple[GaussianStats, int]]:
        """Statistics of the patches of each batch of ``images``, with the batch's size."""
        generator = self._latent_generator(autoencoder)
        source = ImageSource(images, name=name)
        device = resolve_device(self.device)
        for group in _indexed_batches(source, self.batch_size, self.verbose, f"encoding {name}"):
            latents = self._encode(group, autoencoder, generator)
            self._check_latent_fits_patch(latents, group)
            batch_stats = GaussianStats(self.patch_dim_, device=device)
            chunks = iter_patch_chunks(latents, self.patch_size, max_patches=self.patch_chunk_size)
            for chunk in chunks:
                batch_stats.update(chunk)
            yield batch_stats, len(group)

    def _check_latent_fits_patch(self, latents: torch.Tensor, group) -> None:
        height, width = latents.shape[-2:]
        if min(height, width) < self.patch_size:
            least = self.patch_size * self.factor_
            raise ValueError(
                f"{_group_name(group)}: its latent is {height} x {width}, smaller than "
                f"patch_size={self.patch_size}; images must be at least {least} x {least} px "
                f"for this autoencoder (factor {self.factor_}) and patch size"
            )

    def _fit_transport(self) -> None:
        if self.restored_stats_.count < 2 or self.natural_stats_.count < 2:
            self.__dict__.pop("gaussian_ot_", None)
            return
        self.gaussian_ot_ = GaussianOTTransformer(
            stochastic=self.stochastic, rtol=self.rtol, random_state=self.random_state
        ).fit_stats(self.restored_stats_, self.natural_stats_)
        self.w2_ = self.gaussian_ot_.w2_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "gaussian_ot_")

    # -- transforming --------------------------------------------------------------------------

    def transform(self, images):
        """Make restored images more photo-realistic (interpolated by ``alpha``).

        Parameters
        ----------
        images : images
            Any accepted kind (see :mod:`latent_ot.io`).

        Returns
        -------
        The same kind as ``images``: PIL in, PIL out; a uint8 array in, a uint8 array out; a
        tensor on the same device; a list for a list, a directory or paths. Each output has
        its input's size. With ``alpha=1`` the inputs come back bit for bit.
        """
        return self.sweep(images, [self.alpha])[0]

    def sweep(self, images, alphas) -> list:
        """Outputs for several ``alpha`` values, running the autoencoder once per image.

        Parameters
        ----------
        images : images
        alphas : sequence of float

        Returns
        -------
        list
            One output per alpha, each as :meth:`transform` would return it.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.random((16, 16, 3)) for _ in range(2)]
        >>> dot = LatentOTTransformer(vae="pixel").fit(images, [im ** 2 for im in images])
        >>> far, near = dot.sweep(images[0], [0.0, 1.0])
        >>> bool(np.array_equal(near, images[0]))
        True
        """
        check_is_fitted(self)
        self._check_params()
        alphas = [_check_alpha(alpha) for alpha in alphas]
        source = ImageSource(images, name="images")
        outputs: list[dict[int, Any]] = [{} for _ in alphas]
        if all(alpha == 1.0 for alpha in alphas):
            for index, item in enumerate(source):
                for per_alpha in outputs:
                    per_alpha[index] = item.original()
        else:
            self._transport_all(source, alphas, outputs)
        return [source.collect([per_alpha[i] for i in sorted(per_alpha)]) for per_alpha in outputs]

    def _transport_all(self, source: ImageSource, alphas: list[float], outputs) -> None:
        autoencoder = self._autoencoder()
        self._check_compatible(autoencoder)
        generator = _make_generator(self.random_state, autoencoder.device)
        latent_generator = self._latent_generator(autoencoder)
        for group in _indexed_batches(source, self.batch_size, self.verbose, "transporting"):
            originals = torch.stack([item.pixels for _, item in group]).to(autoencoder.device)
            transported = self._transport_pixels(group, autoencoder, generator, latent_generator)
            for alpha, per_alpha in zip(alphas, outputs, strict=True):
                blended = _blend(transported, originals, alpha)
                for k, (index, item) in enumerate(group):
                    per_alpha[index] = (
                        item.original() if alpha == 1.0 else item.to_output(blended[k])
                    )

    def _transport_pixels(self, group, autoencoder, generator, latent_generator) -> torch.Tensor:
        """Encode, transport every latent patch, fold, decode, crop: the ``alpha = 0`` images."""
        latents = self._encode(group, autoencoder, latent_generator)
        window = None
        if self.fold_window == "gaussian":
            window = gaussian_window(self.patch_size, device=latents.device)
        transported = transport_patches(
            latents,
            self.patch_size,
            lambda patches: self.gaussian_ot_.transport_tensor(patches, generator),
            window=window,
            max_patches=self.patch_chunk_size,
        )
        height, width = group[0][1].pixels.shape[-2:]
        return crop_to(autoencoder.decode(transported), height, width)

    def _encode(self, group, autoencoder, generator) -> torch.Tensor:
        pixels = torch.stack([item.pixels for _, item in group]).to(autoencoder.device)
        padded = pad_to_multiple(pixels, autoencoder.factor, name=_group_name(group))
        latents = autoencoder.encode(padded, generator)
        if not bool(torch.isfinite(latents).all()):
            raise ValueError(
                f"{_group_name(group)}: the autoencoder {autoencoder.name} returned NaN or "
                f"infinite latents (dtype {autoencoder.dtype}); try dtype=torch.float32"
            )
        return latents

    def interpolate(self, alpha: float) -> LatentOTTransformer:
        """A fitted copy with another ``alpha``; shares the loaded autoencoder, no refit.

        Examples
        --------
        >>> import numpy as np
        >>> images = [np.random.default_rng(0).random((16, 16, 3))]
        >>> dot = LatentOTTransformer(vae="pixel").fit(images, images)
        >>> dot.interpolate(0.5).alpha, dot.alpha
        (0.5, 0.0)
        """
        check_is_fitted(self)
        alpha = _check_alpha(alpha)
        new = copy.copy(self)
        new.restored_stats_ = self.restored_stats_.copy()
        new.natural_stats_ = self.natural_stats_.copy()
        new.gaussian_ot_ = copy.deepcopy(self.gaussian_ot_)
        new.alpha = alpha
        return new

    def merge(self, other: LatentOTTransformer) -> LatentOTTransformer:
        """An operator fitted on the images of both ``self`` and ``other``.

        Statistics merge exactly, so fitting on disjoint shards (in separate processes, on
        Dask, Ray or Spark workers) and merging on the driver equals one fit on all images.
        ``a + b`` is the same as ``a.merge(b)``. The result takes ``self``'s parameters.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> restored = [rng.random((16, 16, 3)) ** 2 for _ in range(4)]
        >>> natural = [rng.random((16, 16, 3)) for _ in range(4)]
        >>> a = LatentOTTransformer(vae="pixel").fit(restored[:2], natural[:2])
        >>> b = LatentOTTransformer(vae="pixel").fit(restored[2:], natural[2:])
        >>> whole = LatentOTTransformer(vae="pixel").fit(restored, natural)
        >>> bool(np.allclose((a + b).gaussian_ot_.transport_matrix_,
        ...                  whole.gaussian_ot_.transport_matrix_))
        True
        """
        if not isinstance(other, LatentOTTransformer):
            raise TypeError(f"other must be a LatentOTTransformer, got {type(other).__name__}")
        for operator, name in ((self, "self"), (other, "other")):
            if not hasattr(operator, "restored_stats_"):
                raise NotFittedError(f"{name} has not been fitted: nothing to merge")
        self._check_mergeable(other)
        merged = copy.copy(self)
        merged.restored_stats_ = self.restored_stats_ + other.restored_stats_
        merged.natural_stats_ = self.natural_stats_ + other.natural_stats_
        merged.n_images_restored_ = self.n_images_restored_ + other.n_images_restored_
        merged.n_images_natural_ = self.n_images_natural_ + other.n_images_natural_
        merged._fit_transport()
        return merged

    def __add__(self, other):
        if not isinstance(other, LatentOTTransformer):
            return NotImplemented
        return self.merge(other)

    def _check_mergeable(self, other: LatentOTTransformer) -> None:
        mine = (_describe_vae(self.vae), self.patch_size, self.latent_channels_, self.factor_)
        theirs = (_describe_vae(other.vae), other.patch_size, other.latent_channels_, other.factor_)
        if mine != theirs:
            raise IncompatibleAutoencoderError(
                "cannot merge operators fitted differently: (vae, patch_size, latent "
                f"channels, factor) are {mine} and {theirs}"
            )

    # -- the autoencoder -----------------------------------------------------------------------

    def _autoencoder(self):
        """The loaded autoencoder, (re)loaded when ``vae``, ``device`` or ``dtype`` changed."""
        key = (
            self.vae if isinstance(self.vae, str | os.PathLike) else id(self.vae),
            str(resolve_device(self.device)),
            str(self.dtype),
            self.sample_latent,
        )
        cached = self.__dict__.get("_autoencoder_cache")
        if cached is None or cached[0] != key:
            autoencoder = load_autoencoder(
                self.vae,
                device=resolve_device(self.device),
                dtype=self.dtype,
                sample_latent=self.sample_latent,
            )
            self._autoencoder_cache = (key, autoencoder)
        return self._autoencoder_cache[1]

    def _latent_generator(self, autoencoder) -> torch.Generator | None:
        if not self.sample_latent:
            return None
        # A stream apart from the transport noise, so that one does not shift the other.
        seed = self.random_state + 1 if isinstance(self.random_state, int) else self.random_state
        return _make_generator(seed, autoencoder.device)

    def _check_compatible(self, autoencoder) -> None:
        fitted = (self.latent_channels_, self.factor_)
        if (autoencoder.latent_channels, autoencoder.factor) != fitted:
            raise IncompatibleAutoencoderError(
                f"vae: this operator was fitted on latents with {fitted[0]} channels and factor "
                f"{fitted[1]}, but {autoencoder.name} gives {autoencoder.latent_channels} "
                f"channels and factor {autoencoder.factor}; use the autoencoder of the fit, "
                "or refit"
            )
        if patch_dim(self.latent_channels_, self.patch_size) != self.patch_dim_:
            raise IncompatibleAutoencoderError(
                f"patch_size: this operator was fitted with patch vectors of length "
                f"{self.patch_dim_}, patch_size={self.patch_size} gives "
                f"{patch_dim(self.latent_channels_, self.patch_size)}; refit"
            )

    def _check_params(self) -> None:
        _check_alpha(self.alpha)
        _check_stochastic(self.stochastic)
        _check_rtol(self.rtol)
        _check_int(self.patch_size, "patch_size", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.patch_chunk_size, "patch_chunk_size", 1)
        resolve_device(self.device)
        if self.fold_window not in ("uniform", "gaussian"):
            raise ValueError(
                f"fold_window must be 'uniform' or 'gaussian', got {self.fold_window!r}"
            )
        for name in ("sample_latent", "verbose"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted operator to a safe file: statistics, map and parameters, no code.

        Tensors are stored with safetensors and parameters (including how to re-create the
        autoencoder: its preset name, hub id or directory, never its weights) as JSON, with
        checksums; the write is atomic, so an interrupted save leaves any previous file at
        ``path`` intact. Prefer this to ``joblib.dump`` for files you share: loading a
        pickle runs code from the file.

        Raises
        ------
        TypeError
            If ``vae`` is an instance (a file stores how to load an autoencoder, not its
            weights: use joblib then) or ``random_state`` is a RandomState.
        """
        check_is_fitted(self)
        tensors = _stats_tensors("restored", self.restored_stats_)
        tensors |= _stats_tensors("natural", self.natural_stats_)
        transport_tensors, transport_metadata = self.gaussian_ot_._file_state("transport.")
        metadata = {
            "kind": type(self).__name__,
            "params": _json_params(self.get_params()),
            "counts": {
                "restored": self.restored_stats_.count,
                "natural": self.natural_stats_.count,
                "restored_images": self.n_images_restored_,
                "natural_images": self.n_images_natural_,
            },
            "latent_channels": self.latent_channels_,
            "factor": self.factor_,
            "patch_dim": self.patch_dim_,
            "transport": transport_metadata,
        }
        write_operator(path, tensors | transport_tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentOTTransformer:
        """Read an operator written by :meth:`save`; nothing in the file is executed.

        The autoencoder is loaded on first use from the stored ``vae`` (preset, hub id or
        directory), as in ``fit``.

        Raises
        ------
        OperatorFileError
            If the file is not a latent-ot operator, is truncated, was tampered with
            (checksums), or was written by a newer format version.
        """
        tensors, metadata = read_operator(path, expected_kind=cls.__name__)
        operator = cls(**metadata["params"])
        counts = metadata["counts"]
        operator.latent_channels_ = metadata["latent_channels"]
        operator.factor_ = metadata["factor"]
        operator.patch_dim_ = metadata["patch_dim"]
        operator.restored_stats_ = _stats_from(tensors, "restored", counts["restored"])
        operator.natural_stats_ = _stats_from(tensors, "natural", counts["natural"])
        operator.n_images_restored_ = counts["restored_images"]
        operator.n_images_natural_ = counts["natural_images"]
        operator.gaussian_ot_ = GaussianOTTransformer(
            stochastic=operator.stochastic, rtol=operator.rtol, random_state=operator.random_state
        )
        operator.gaussian_ot_._restore_file_state(tensors, metadata["transport"], "transport.")
        operator.w2_ = operator.gaussian_ot_.w2_
        return operator

    def __getstate__(self) -> dict:
        # The loaded autoencoder is re-created from `vae` after loading; statistics go to the
        # CPU so that a pickle made on a GPU loads anywhere.
        state = super().__getstate__()
        state.pop("_autoencoder_cache", None)
        for name in ("restored_stats_", "natural_stats_"):
            if state.get(name) is not None:
                state[name] = state[name].copy().to("cpu")
        return state
