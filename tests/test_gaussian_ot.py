"""GaussianOTTransformer: scikit-learn conformance, the transport's properties, bad input."""

import joblib
import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from latent_ot import GaussianOTTransformer, GaussianStats


def anisotropic_target(n_features: int, n_samples: int = 500) -> np.ndarray:
    """A fixed, correlated, anisotropic Gaussian sample of any width."""
    rng = np.random.default_rng(12345)
    mixing = rng.normal(size=(n_features, n_features)) * np.linspace(0.2, 3.0, n_features)
    return rng.normal(size=(n_samples, n_features)) @ mixing + np.arange(n_features)


class AnisotropicTargetOT(GaussianOTTransformer):
    """Fits against a real anisotropic target when none is given, so the checks exercise
    the transport itself and not only the identity map."""

    def fit(self, X, y=None, *, target=None):
        if target is None:
            shape = getattr(X, "shape", None) or np.asarray(X).shape
            target = anisotropic_target(shape[1] if len(shape) == 2 else 1)
        return super().fit(X, y, target=target)


@parametrize_with_checks([GaussianOTTransformer(), AnisotropicTargetOT(random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_anisotropic_target_is_really_used_under_the_checks():
    X = np.random.default_rng(0).normal(size=(40, 3))
    fitted = AnisotropicTargetOT().fit(X)
    assert not np.allclose(fitted.transport_matrix_, np.eye(3))
    assert fitted.w2_ > 1.0


# -- the transport ------------------------------------------------------------------------------


def gaussian_sample(rng, n, dim, scale=1.0):
    mixing = rng.normal(size=(dim, dim)) * scale
    return rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim) * 5


def test_fitted_attributes_match_numpy_and_pot():
    rng = np.random.default_rng(0)
    X, target = gaussian_sample(rng, 3000, 8), gaussian_sample(rng, 2000, 8, scale=2.0)

    fitted = GaussianOTTransformer().fit(X, target=target)

    np.testing.assert_allclose(fitted.mean_source_, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(fitted.cov_source_, np.cov(X, rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(fitted.cov_target_, np.cov(target, rowvar=False), rtol=1e-10)
    expected_matrix, _ = ot.gaussian.bures_wasserstein_mapping(
        fitted.mean_source_, fitted.mean_target_, fitted.cov_source_, fitted.cov_target_
    )
    np.testing.assert_allclose(fitted.transport_matrix_, expected_matrix, rtol=1e-9, atol=1e-12)
    expected_w2 = ot.gaussian.bures_wasserstein_distance(
        fitted.mean_source_, fitted.mean_target_, fitted.cov_source_, fitted.cov_target_
    )
    assert fitted.w2_ == pytest.approx(float(expected_w2), rel=1e-9)
    assert fitted.noise_cov_ is None and fitted.n_features_in_ == 8


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_transported_sample_has_the_target_mean_and_covariance(dim, seed):
    rng = np.random.default_rng(seed)
    X, target = gaussian_sample(rng, 4000, dim), gaussian_sample(rng, 4000, dim, scale=1.5)

    fitted = GaussianOTTransformer().fit(X, target=target)
    Y = fitted.transform(X)

    # The map is affine: on its own training sample the moments match to round-off.
    target_cov = np.atleast_2d(np.cov(target, rowvar=False))
    np.testing.assert_allclose(Y.mean(0), target.mean(0), atol=1e-8 * (1 + np.abs(target).max()))
    np.testing.assert_allclose(
        np.atleast_2d(np.cov(Y, rowvar=False)), target_cov, rtol=1e-6, atol=1e-8
    )
    # On a fresh sample of the source distribution they match within sampling error.
    fresh = fitted.transform(gaussian_sample(np.random.default_rng(seed), 4000, dim))
    tolerance = 0.2 * np.sqrt(np.diag(target_cov)) + 1e-9
    assert np.all(np.abs(fresh.mean(0) - target.mean(0)) < tolerance)


def test_equal_source_and_target_give_the_identity_map():
    X = gaussian_sample(np.random.default_rng(1), 500, 5)
    fitted = GaussianOTTransformer().fit(X, target=X)
    np.testing.assert_allclose(fitted.transport_matrix_, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(fitted.transform(X), X, atol=1e-9)
    assert fitted.w2_ < 1e-6


def test_no_target_is_the_exact_identity():
    X = gaussian_sample(np.random.default_rng(2), 50, 4)
    fitted = GaussianOTTransformer().fit(X)
    assert np.array_equal(fitted.transport_matrix_, np.eye(4))
    assert np.array_equal(fitted.transform(X), X) and fitted.w2_ == 0.0


def test_rank_deficient_source_is_transported_onto_the_target_covariance():
    rng = np.random.default_rng(3)
    dim, rank, n = 36, 12, 200_000
    X = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, dim))
    target_cov = np.cov(gaussian_sample(rng, 5000, dim), rowvar=False)
    target_stats = GaussianStats.from_samples(
        torch.from_numpy(rng.multivariate_normal(np.zeros(dim), target_cov, size=20_000))
    )
    fitted = GaussianOTTransformer(random_state=0).fit(X, target=target_stats)

    Y = fitted.transform(X)

    assert fitted.noise_cov_ is not None and np.isfinite(Y).all()
    error = np.linalg.norm(np.cov(Y, rowvar=False) - fitted.cov_target_) / np.linalg.norm(
        fitted.cov_target_
    )
    assert error < 0.05
    # The deterministic formula has no answer here.
    with pytest.raises(ValueError, match="singular"):
        GaussianOTTransformer(stochastic="never").fit(X, target=target_stats)


def test_stochastic_noise_is_independent_per_row_and_reproducible():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 1)) @ np.ones((1, 3))  # rank 1
    fitted = GaussianOTTransformer(random_state=7).fit(X, target=rng.normal(size=(400, 3)))
    Y1, Y2 = fitted.transform(X), fitted.transform(X)
    assert np.array_equal(Y1, Y2)
    # Identical input rows get different noise.
    same_rows = fitted.transform(np.repeat(X[:1], 2, axis=0))
    assert not np.allclose(same_rows[0], same_rows[1])
    other = clone(fitted).set_params(random_state=8).fit(X, target=rng.normal(size=(400, 3)))
    assert not np.allclose(other.transform(X), Y1)


def test_stochastic_always_on_a_regular_source_adds_negligible_noise():
    rng = np.random.default_rng(5)
    X, target = gaussian_sample(rng, 500, 3), gaussian_sample(rng, 500, 3)
    deterministic = GaussianOTTransformer().fit(X, target=target)
    always = GaussianOTTransformer(stochastic="always", random_state=0).fit(X, target=target)
    assert always.noise_cov_ is not None
    np.testing.assert_allclose(always.transform(X), deterministic.transform(X), atol=1e-6)


def test_alpha_interpolates_between_transport_and_input():
    rng = np.random.default_rng(6)
    X, target = gaussian_sample(rng, 300, 3), gaussian_sample(rng, 300, 3, scale=3)
    fitted = GaussianOTTransformer().fit(X, target=target)
    transported = fitted.transform(X)

    assert np.array_equal(fitted.interpolate(1.0).transform(X), X)
    half = fitted.interpolate(0.5)
    np.testing.assert_allclose(half.transform(X), 0.5 * transported + 0.5 * X, rtol=1e-12)
    np.testing.assert_allclose(
        fitted.interpolate(-1.0).transform(X), 2 * transported - X, rtol=1e-12
    )
    np.testing.assert_allclose(
        fitted.interpolate(2.0).transform(X), 2 * X - transported, rtol=1e-12
    )
    # interpolate copies; it neither refits nor touches the original.
    assert fitted.alpha == 0.0 and half.source_stats_ is not fitted.source_stats_
    np.testing.assert_array_equal(half.transport_matrix_, fitted.transport_matrix_)


def test_partial_fit_streams_either_side_and_equals_fit():
    rng = np.random.default_rng(7)
    X, target = gaussian_sample(rng, 900, 4), gaussian_sample(rng, 600, 4)
    streamed = GaussianOTTransformer()
    for chunk in np.array_split(X, 3):
        streamed.partial_fit(chunk)
    for chunk in np.array_split(target, 4):
        streamed.partial_fit(target=chunk)
    full = GaussianOTTransformer().fit(X, target=target)
    np.testing.assert_allclose(streamed.transport_matrix_, full.transport_matrix_, rtol=1e-10)
    np.testing.assert_allclose(streamed.transform(X), full.transform(X), rtol=1e-10, atol=1e-10)


def test_partial_fit_with_one_row_waits_for_a_second_one():
    streamed = GaussianOTTransformer().partial_fit(np.ones((1, 2)))
    with pytest.raises(NotFittedError):
        streamed.transform(np.ones((1, 2)))
    streamed.partial_fit(np.zeros((1, 2)))
    np.testing.assert_array_equal(streamed.transform(np.ones((1, 2))), np.ones((1, 2)))


def test_fit_from_statistics_equals_fit_from_samples():
    rng = np.random.default_rng(8)
    X, target = gaussian_sample(rng, 500, 3), gaussian_sample(rng, 400, 3)
    to_stats = lambda a: GaussianStats.from_samples(torch.from_numpy(a))  # noqa: E731
    from_stats = GaussianOTTransformer().fit_stats(to_stats(X), to_stats(target))
    from_samples = GaussianOTTransformer().fit(X, target=to_stats(target))
    np.testing.assert_allclose(
        from_stats.transport_matrix_, from_samples.transport_matrix_, rtol=1e-12
    )


def test_joblib_round_trip_is_bitwise(tmp_path):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(300, 1)) @ np.ones((1, 4)) + rng.normal(size=(300, 4)) * [1, 1, 0, 0]
    fitted = GaussianOTTransformer(random_state=3).fit(X, target=rng.normal(size=(300, 4)))
    assert fitted.noise_cov_ is not None  # stochastic: the noise must round-trip too
    joblib.dump(fitted, tmp_path / "ot.joblib")
    loaded = joblib.load(tmp_path / "ot.joblib")
    assert np.array_equal(loaded.transform(X), fitted.transform(X))


def test_pipeline_routes_the_target_to_the_transport_step():
    rng = np.random.default_rng(10)
    X, target = gaussian_sample(rng, 400, 3), gaussian_sample(rng, 400, 3)
    pipeline = Pipeline([("scale", StandardScaler()), ("ot", GaussianOTTransformer())])
    pipeline.fit(X, ot__target=target)
    out = pipeline.transform(X)
    np.testing.assert_allclose(out.mean(0), target.mean(0), atol=1e-8)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(target, rowvar=False), rtol=1e-8)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X": [[0.0, np.nan], [1.0, 2.0]]}, ValueError, "X contains NaN or infinity"),
        ({"X": [[0.0, np.inf], [1.0, 2.0]]}, ValueError, "X contains NaN or infinity"),
        ({"X": [1.0, 2.0, 3.0]}, ValueError, "Expected 2D array"),
        ({"X": [[1.0, 2.0]]}, ValueError, "X has 1 sample"),
        ({"target": [[1.0, 2.0, 3.0]] * 3}, ValueError, "target has 3 features, but X has 2"),
        ({"target": [[1.0, 2.0]]}, ValueError, "target has 1 sample"),
        ({"target": [[1.0, np.nan]] * 3}, ValueError, "target contains NaN or infinity"),
    ],
)
def test_bad_fit_input_names_the_argument(kwargs, error, match):
    arguments = {"X": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], "target": None, **kwargs}
    with pytest.raises(error, match=match):
        GaussianOTTransformer().fit(arguments["X"], target=arguments["target"])


RANDOM_STATE_MESSAGE = (
    r"random_state must be None, an int in \[0, 4294967295\], a RandomState or a Generator, got "
)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"alpha": float("nan")}, ValueError, r"alpha must be a number in \[-10, 10\], got nan"),
        ({"alpha": float("inf")}, ValueError, r"alpha must be a number in \[-10, 10\], got inf"),
        ({"alpha": 1e308}, ValueError, r"alpha must be a number in \[-10, 10\], got 1e\+308"),
        ({"alpha": "half"}, TypeError, r"alpha must be a number in \[-10, 10\], got 'half'"),
        ({"alpha": None}, TypeError, r"alpha must be a number in \[-10, 10\], got None"),
        ({"alpha": True}, TypeError, r"alpha must be a number in \[-10, 10\], got True"),
        (
            {"stochastic": "maybe"},
            ValueError,
            "stochastic must be one of 'always', 'auto', 'never', got 'maybe'",
        ),
        ({"rtol": -1.0}, ValueError, r"rtol must be None or a number in \[0, 1\), got -1.0"),
        ({"random_state": 1.5}, TypeError, RANDOM_STATE_MESSAGE + "1.5"),
        ({"random_state": 2**64}, ValueError, RANDOM_STATE_MESSAGE + "18446744073709551616"),
        ({"random_state": -1}, ValueError, RANDOM_STATE_MESSAGE + "-1"),
        ({"random_state": "seed"}, TypeError, RANDOM_STATE_MESSAGE + "'seed'"),
    ],
)
def test_bad_parameters_are_named(params, error, match):
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(error, match=match):
        GaussianOTTransformer(**params).fit(X)
    fitted = GaussianOTTransformer().fit(X)
    with pytest.raises(error, match=match):
        fitted.set_params(**params).transform(X)
    if "alpha" in params:
        with pytest.raises(error, match=match):
            GaussianOTTransformer().fit(X).interpolate(params["alpha"])


@pytest.mark.parametrize(
    "random_state", [None, 0, 2**32 - 1, np.random.RandomState(0), np.random.default_rng(0)]
)
def test_every_kind_of_random_state_seeds_the_noise(random_state):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 1)) @ np.ones((1, 3))  # singular: the stochastic map draws noise
    ot = GaussianOTTransformer(random_state=random_state).fit(X, target=rng.normal(size=(200, 3)))
    assert ot.noise_cov_ is not None
    Y = ot.transform(X)
    assert Y.shape == X.shape and np.isfinite(Y).all()
    if isinstance(random_state, int):  # an int: the same noise on every call
        assert np.array_equal(ot.transform(X), Y)
    else:  # None or a generator: new noise on every call
        assert not np.array_equal(ot.transform(X), Y)


def test_transform_before_fit_and_with_wrong_width():
    with pytest.raises(NotFittedError):
        GaussianOTTransformer().transform(np.ones((2, 2)))
    fitted = GaussianOTTransformer().fit(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(ValueError, match="X has 3 features"):
        fitted.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="partial_fit needs X, target or both"):
        GaussianOTTransformer().partial_fit()


def test_save_and_load_a_safe_file_round_trip_bitwise(tmp_path):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, 1)) @ np.ones((1, 3))  # singular: the stochastic map is saved too
    fitted = GaussianOTTransformer(alpha=0.25, random_state=5).fit(
        X, target=rng.normal(size=(200, 3))
    )
    fitted.save(tmp_path / "ot.safetensors")
    loaded = GaussianOTTransformer.load(tmp_path / "ot.safetensors")
    assert loaded.get_params() == fitted.get_params()
    assert np.array_equal(loaded.transform(X), fitted.transform(X))
    assert np.array_equal(loaded.noise_cov_, fitted.noise_cov_) and loaded.w2_ == fitted.w2_
    with pytest.raises(TypeError, match="random_state"):
        fitted.set_params(random_state=np.random.RandomState(0)).save(
            tmp_path / "other.safetensors"
        )
