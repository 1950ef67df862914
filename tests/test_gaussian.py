"""The Gaussian math against independent references (POT, scipy) and its defining properties."""

import numpy as np
import ot
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latent_ot.gaussian import (
    GaussianMap,
    default_rtol,
    fit_gaussian_map,
    is_singular,
    psd_inv_sqrt,
    psd_pinv,
    psd_sqrt,
    stochastic_transport,
    transport_matrix,
    w2_distance,
)


def random_spd(rng: np.random.Generator, dim: int, n_samples: int | None = None) -> np.ndarray:
    """A Wishart-like SPD matrix: the scatter of more samples than dimensions."""
    n_samples = n_samples or 2 * dim + 5
    factor = rng.normal(size=(n_samples, dim)) * rng.uniform(0.5, 2.0, size=dim)
    return factor.T @ factor / n_samples


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def scipy_transport_matrix(cov_s: np.ndarray, cov_t: np.ndarray) -> np.ndarray:
    """The map of the Method page (docs: method-map) with scipy's Schur-based sqrtm."""
    sqrt_s = scipy.linalg.sqrtm(cov_s).real
    inv_sqrt_s = np.linalg.inv(sqrt_s)
    return inv_sqrt_s @ scipy.linalg.sqrtm(sqrt_s @ cov_t @ sqrt_s).real @ inv_sqrt_s


@pytest.mark.parametrize("dim", [1, 2, 7, 36, 120, 300])
def test_transport_matrix_matches_pot_and_scipy(dim):
    rng = np.random.default_rng(dim)
    cov_s, cov_t = random_spd(rng, dim), random_spd(rng, dim)
    mean_s, mean_t = rng.normal(size=dim), rng.normal(size=dim)

    matrix = transport_matrix(torch.from_numpy(cov_s), torch.from_numpy(cov_t)).numpy()

    pot_matrix, _ = ot.gaussian.bures_wasserstein_mapping(mean_s, mean_t, cov_s, cov_t)
    assert relative_error(matrix, pot_matrix) < 1e-9
    assert relative_error(matrix, scipy_transport_matrix(cov_s, cov_t)) < 1e-9


@pytest.mark.parametrize("dim", [1, 5, 36, 300])
def test_w2_distance_matches_pot(dim):
    rng = np.random.default_rng(100 + dim)
    cov_s, cov_t = random_spd(rng, dim), random_spd(rng, dim)
    mean_s, mean_t = rng.normal(size=dim), rng.normal(size=dim)
    args = [torch.from_numpy(a) for a in (mean_s, cov_s, mean_t, cov_t)]

    expected = ot.gaussian.bures_wasserstein_distance(mean_s, mean_t, cov_s, cov_t)

    assert abs(float(w2_distance(*args)) - float(expected)) < 1e-9 * float(expected)


def test_w2_distance_of_identical_gaussians_is_zero_and_of_shifted_is_the_shift():
    cov = torch.from_numpy(random_spd(np.random.default_rng(0), 10))
    mean = torch.arange(10.0, dtype=torch.float64)
    assert float(w2_distance(mean, cov, mean, cov)) < 1e-6
    shift = torch.full((10,), 0.5, dtype=torch.float64)
    assert float(w2_distance(mean, cov, mean + shift, cov)) == pytest.approx(
        float(shift.norm()), rel=1e-6
    )


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_transport_matrix_is_symmetric_psd_and_pushes_source_onto_target(dim, seed):
    rng = np.random.default_rng(seed)
    cov_s = torch.from_numpy(random_spd(rng, dim))
    cov_t = torch.from_numpy(random_spd(rng, dim))

    matrix = transport_matrix(cov_s, cov_t)

    assert torch.equal(matrix, matrix.mT)
    assert torch.linalg.eigvalsh(matrix).min() >= -1e-10 * torch.linalg.eigvalsh(matrix).max()
    torch.testing.assert_close(matrix @ cov_s @ matrix, cov_t, rtol=1e-7, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_equal_source_and_target_give_the_identity(dim, seed):
    cov = torch.from_numpy(random_spd(np.random.default_rng(seed), dim))
    torch.testing.assert_close(transport_matrix(cov, cov), torch.eye(dim, dtype=torch.float64))


def test_psd_sqrt_and_inverses_match_numpy():
    cov = random_spd(np.random.default_rng(1), 20)
    sqrt = psd_sqrt(torch.from_numpy(cov)).numpy()
    np.testing.assert_allclose(sqrt, scipy.linalg.sqrtm(cov).real, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        psd_inv_sqrt(torch.from_numpy(cov)).numpy(), np.linalg.inv(sqrt), rtol=1e-9, atol=1e-10
    )
    np.testing.assert_allclose(
        psd_pinv(torch.from_numpy(cov)).numpy(), np.linalg.pinv(cov), rtol=1e-9
    )


def test_psd_sqrt_clamps_round_off_negative_eigenvalues():
    # Rank 1 matrix with a -1e-17 round-off eigenvalue: no NaN, exact square root.
    vector = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    cov = vector @ vector.T - 1e-17 * torch.eye(3, dtype=torch.float64)
    sqrt = psd_sqrt(cov)
    assert torch.isfinite(sqrt).all()
    torch.testing.assert_close(sqrt @ sqrt, vector @ vector.T, rtol=1e-8, atol=1e-8)


def test_singularity_is_relative_not_absolute():
    # Tiny but well-conditioned: not singular. An absolute epsilon would say it is.
    assert not is_singular(1e-30 * torch.eye(4, dtype=torch.float64))
    # Condition number 1e12 is still invertible in float64.
    assert not is_singular(torch.diag(torch.tensor([1.0, 1e-12], dtype=torch.float64)))
    assert is_singular(torch.diag(torch.tensor([1.0, 1e-17], dtype=torch.float64)))
    assert is_singular(torch.zeros(3, 3, dtype=torch.float64))
    # The tolerance is a parameter.
    assert is_singular(torch.diag(torch.tensor([1.0, 1e-6], dtype=torch.float64)), rtol=1e-5)
    assert default_rtol(36) == 36 * np.finfo(np.float64).eps


def rank_deficient_cov(rng, dim: int, rank: int) -> torch.Tensor:
    factor = rng.normal(size=(dim, rank))
    return torch.from_numpy(factor @ factor.T / rank)


def test_stochastic_transport_restores_the_target_covariance_exactly():
    rng = np.random.default_rng(3)
    cov_s = rank_deficient_cov(rng, 36, 12)
    cov_t = torch.from_numpy(random_spd(rng, 36))

    matrix, noise_cov = stochastic_transport(cov_s, cov_t)

    assert torch.isfinite(matrix).all() and torch.isfinite(noise_cov).all()
    torch.testing.assert_close(matrix @ cov_s @ matrix.mT + noise_cov, cov_t, rtol=1e-8, atol=1e-9)
    eigvals = torch.linalg.eigvalsh(noise_cov)
    assert eigvals.min() >= -1e-12 * eigvals.max()  # PSD up to the round-off of eigvalsh itself


def test_stochastic_transport_of_a_regular_source_is_the_deterministic_map_without_noise():
    rng = np.random.default_rng(4)
    cov_s, cov_t = (torch.from_numpy(random_spd(rng, 9)) for _ in range(2))

    matrix, noise_cov = stochastic_transport(cov_s, cov_t)

    torch.testing.assert_close(matrix, transport_matrix(cov_s, cov_t), rtol=1e-8, atol=1e-10)
    assert float(noise_cov.abs().max()) < 1e-9


def test_stochastic_transport_of_zero_covariances_is_defined():
    zeros = torch.zeros(4, 4, dtype=torch.float64)
    matrix, noise_cov = stochastic_transport(zeros, zeros)
    assert torch.equal(matrix, zeros) and torch.equal(noise_cov, zeros)


def test_fit_gaussian_map_chooses_the_fallback_only_for_a_singular_source():
    rng = np.random.default_rng(5)
    cov_t = torch.from_numpy(random_spd(rng, 6))
    regular = torch.from_numpy(random_spd(rng, 6))
    singular = rank_deficient_cov(rng, 6, 2)
    mean = torch.zeros(6, dtype=torch.float64)

    assert not fit_gaussian_map(mean, regular, mean, cov_t).stochastic
    assert fit_gaussian_map(mean, singular, mean, cov_t).stochastic
    assert fit_gaussian_map(mean, regular, mean, cov_t, stochastic="always").stochastic
    with pytest.raises(ValueError, match=r"stochastic='never'.*singular"):
        fit_gaussian_map(mean, singular, mean, cov_t, stochastic="never")
    with pytest.raises(ValueError, match="stochastic must be"):
        fit_gaussian_map(mean, regular, mean, cov_t, stochastic="sometimes")


def test_gaussian_map_applies_the_affine_formula_and_requires_noise_when_stochastic():
    matrix = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    ot_map = GaussianMap(torch.ones(2), torch.zeros(2), matrix, torch.eye(2))
    samples = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
    noise = torch.tensor([[0.5, -0.5], [0.0, 1.0]])

    expected = (samples.double() - 1.0) @ matrix.T + noise.double()
    torch.testing.assert_close(ot_map(samples, noise), expected)
    with pytest.raises(ValueError, match="noise"):
        ot_map(samples)


def test_equal_gaussians_give_exactly_the_identity_even_when_ill_conditioned():
    eigvals = torch.logspace(0, -12, 8, dtype=torch.float64)
    basis, _ = torch.linalg.qr(
        torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    cov = (basis * eigvals) @ basis.T
    mean = torch.arange(8.0, dtype=torch.float64)
    for mode in ("auto", "always"):
        ot_map = fit_gaussian_map(mean, cov, mean.clone(), cov.clone(), stochastic=mode)
        assert torch.equal(ot_map.matrix, torch.eye(8, dtype=torch.float64))
        assert not ot_map.stochastic
    zeros = torch.zeros(3, 3, dtype=torch.float64)
    constant = fit_gaussian_map(torch.ones(3), zeros, torch.ones(3), zeros)
    assert torch.equal(constant(torch.ones(2, 3)), torch.ones(2, 3, dtype=torch.float64))
