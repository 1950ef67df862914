"""GaussianOTTransformer: optimal transport between two Gaussians fitted on 2-D samples."""

from __future__ import annotations

import copy
import os
from numbers import Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..gaussian import STOCHASTIC_MODES, GaussianMap, fit_gaussian_map, scale_noise, w2_distance
from ..serialization import read_operator, write_operator
from ..stats import GaussianStats
from ..validation import ALPHA, RANDOM_STATE, check_constraints, check_params, torch_generator
from ._file_state import json_params, params_from_file, stats_from_tensors, stats_tensors

__all__ = ["GaussianOTTransformer"]

_FITTED_MAP_ATTRIBUTES = (
    "mean_source_",
    "cov_source_",
    "mean_target_",
    "cov_target_",
    "transport_matrix_",
    "noise_cov_",
    "w2_",
)


def _check_enough_samples(count: int, name: str) -> None:
    if count < 2:
        raise ValueError(
            f"{name} has {count} sample(s); at least 2 rows are needed to estimate a covariance"
        )


def _as_float64_tensor(array: np.ndarray) -> torch.Tensor:
    """A float64 tensor sharing the array's memory when it can; never written to."""
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory (memory maps)
        array = array.copy()
    return torch.from_numpy(array)


def _stats_of(array: np.ndarray, name: str) -> GaussianStats:
    """Statistics of the rows of a validated array, called ``name`` in errors.

    The array comes unchecked for NaN and infinity: :class:`GaussianStats` finds them in the
    column sums it computes anyway, which spares a pass over the data.
    """
    return GaussianStats.from_samples(_as_float64_tensor(array), name=name)


class GaussianOTTransformer(TransformerMixin, BaseEstimator):
    """Optimal transport between two Gaussians fitted on samples, as a transformer.

    ``fit`` estimates the mean and covariance of the source samples ``X`` and of the
    ``target`` samples, and the closed-form optimal transport map between the two Gaussians
    (see :ref:`method-map` in the documentation). When the source covariance is singular the
    map becomes stochastic: ``transform`` then adds Gaussian noise, drawn independently for
    every row from ``random_state``, so that the output covariance is still the target's.
    ``alpha`` interpolates between the transported samples (0) and the input (1).

    Parameters
    ----------
    alpha : float in [-10, 10], default=0.0
        Perception-distortion interpolation ``(1 - alpha) * T(X) + alpha * X``. ``0`` gives
        the transported samples, ``1`` returns ``X`` unchanged; values outside ``[0, 1]``
        extrapolate (:data:`latent_ot.validation.ALPHA_RANGE` bounds them).
    stochastic : {"auto", "never", "always"}, default="auto"
        ``"auto"`` uses the stochastic map only when the source covariance is singular;
        ``"never"`` raises on a singular source; ``"always"`` uses it regardless.
    rtol : float, default=None
        Relative eigenvalue tolerance deciding singularity: an eigenvalue ``<= rtol *
        largest`` counts as zero. None means ``d * eps(float64)``, as in
        ``numpy.linalg.matrix_rank``.
    noise_scale : float, default=1.0
        Multiply the standard deviation of the stochastic map's noise by this value in
        ``[0, 1]`` (:func:`latent_ot.gaussian.scale_noise`): ``1`` matches the target
        covariance, ``0`` gives the map's mean, deterministic. No effect on a deterministic map.
    random_state : None, int in [0, 2**32 - 1], RandomState or Generator, default=None
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
        Covariance of the noise ``transform`` adds (``noise_scale ** 2`` times the stochastic
        map's); None when it adds none.
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

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "alpha": ALPHA,
        "stochastic": [StrOptions(set(STOCHASTIC_MODES))],
        "rtol": [None, Interval(Real, 0, 1, closed="left")],
        "noise_scale": [Interval(Real, 0, 1, closed="both")],
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self, *, alpha=0.0, stochastic="auto", rtol=None, noise_scale=1.0, random_state=None
    ):
        self.alpha = alpha
        self.stochastic = stochastic
        self.rtol = rtol
        self.noise_scale = noise_scale
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
        self._validate_params()
        X = validate_data(self, X, reset=True, dtype=np.float64, ensure_all_finite=False)
        _check_enough_samples(X.shape[0], "X")
        target_stats = self._as_target_stats(target) if target is not None else None
        if target_stats is not None:
            _check_enough_samples(target_stats.count, "target")
            target_stats = target_stats.copy()
        self.source_stats_ = _stats_of(X, "X")
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
        self._validate_params()
        if X is None and target is None:
            raise ValueError("partial_fit needs X, target or both; got neither")
        first_call = not hasattr(self, "source_stats_")
        if first_call and X is None:
            raise ValueError("the first call to partial_fit needs source samples X")
        source_batch = None
        if X is not None:
            X = validate_data(self, X, reset=first_call, dtype=np.float64)
            source_batch = _as_float64_tensor(X)
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
        self._validate_params()
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

    def _validate_params(self) -> None:
        """Check every parameter against :attr:`_parameter_constraints` (see
        :func:`latent_ot.validation.check_params`)."""
        check_params(self)

    def _as_target_stats(self, target) -> GaussianStats:
        if isinstance(target, GaussianStats):
            stats = target
        else:
            target = check_array(
                target, dtype=np.float64, input_name="target", ensure_all_finite=False
            )
            stats = _stats_of(target, "target")
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
            ot_map = scale_noise(ot_map, self.noise_scale)
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
        self._validate_params()
        alpha = float(self.alpha)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        samples = _as_float64_tensor(X)
        if alpha == 1.0:
            return samples.numpy().copy()
        generator = torch_generator(self.random_state, samples.device)
        transported = self.transport_tensor(samples, generator)
        if alpha != 0.0:  # the blend, written into the transported samples, which are ours
            transported.lerp_(samples, alpha)
        return transported.numpy()

    def transport_tensor(
        self, samples: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
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
        alpha = float(check_constraints(alpha, "alpha", ALPHA))
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
        tensors, metadata = self.file_state()
        metadata["kind"] = type(self).__name__
        metadata["params"] = json_params(self.get_params())
        write_operator(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, *, sha256: str | None = None) -> GaussianOTTransformer:
        """Read a transformer written by :meth:`save`; nothing in the file is executed.

        Raises
        ------
        OperatorFileError
            If the file is not a latent-ot operator of this class, is truncated, was
            tampered with (checksums), or was written by another version of latent-ot.
        """
        # sha256: the published digest of the whole file, which pins it (read_operator)
        tensors, metadata = read_operator(path, expected_kind=cls.__name__, sha256=sha256)
        estimator = cls(**params_from_file(cls, metadata["params"], path))
        estimator.restore_file_state(tensors, metadata)
        return estimator

    def file_state(self, prefix: str = "") -> tuple[dict, dict]:
        """The fitted state as ``(tensors, metadata)`` for a safe file, names led by ``prefix``.

        What :meth:`save` writes, and what an operator that holds this one (such as
        :class:`~latent_ot.LatentOTTransformer`) writes into its own file;
        :meth:`restore_file_state` reads it back.
        """
        check_is_fitted(self)
        tensors = stats_tensors(f"{prefix}source", self.source_stats_)
        counts = {"source": self.source_stats_.count}
        if self.target_stats_ is not None:
            tensors |= stats_tensors(f"{prefix}target", self.target_stats_)
            counts["target"] = self.target_stats_.count
        ot_map = self._gaussian_map
        tensors[f"{prefix}map.mean_source"] = ot_map.mean_source
        tensors[f"{prefix}map.mean_target"] = ot_map.mean_target
        tensors[f"{prefix}map.matrix"] = ot_map.matrix
        if ot_map.noise_factor is not None:
            tensors[f"{prefix}map.noise_factor"] = ot_map.noise_factor
        metadata = {"counts": counts, "n_features_in": self.n_features_in_, "w2": self.w2_}
        return tensors, metadata

    def restore_file_state(self, tensors: dict, metadata: dict, prefix: str = "") -> None:
        """Set the fitted state from what :meth:`file_state` returned (read from a file)."""
        counts = metadata["counts"]
        self.n_features_in_ = metadata["n_features_in"]
        self.source_stats_ = stats_from_tensors(tensors, f"{prefix}source", counts["source"])
        self.target_stats_ = None
        if "target" in counts:
            self.target_stats_ = stats_from_tensors(tensors, f"{prefix}target", counts["target"])
        ot_map = GaussianMap(
            tensors[f"{prefix}map.mean_source"],
            tensors[f"{prefix}map.mean_target"],
            tensors[f"{prefix}map.matrix"],
            tensors.get(f"{prefix}map.noise_factor"),
        )
        self._set_map(ot_map, metadata["w2"])

    def __getstate__(self) -> dict:
        # Pickles load anywhere: state goes to the CPU, the per-device cache is rebuilt. A
        # copy: on Python 3.11+ the default state is the live __dict__ itself.
        state = dict(super().__getstate__())
        state["_map_cache"] = {}
        if state.get("_gaussian_map") is not None:
            state["_gaussian_map"] = state["_gaussian_map"].to("cpu")
        for name in ("source_stats_", "target_stats_"):
            if state.get(name) is not None:
                state[name] = state[name].copy().to("cpu")
        return state
