"""The streaming accumulator: exact merges, stability with a large mean, atomic updates."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import latent_ot.stats
from latent_ot.stats import GaussianStats


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.fixture
def seven_batches():
    rng = np.random.default_rng(0)
    sizes = [1, 2, 50, 7, 300, 3, 33]
    return [torch.from_numpy(rng.normal(2.0, 3.0, size=(n, 5))) for n in sizes]


def test_streaming_equals_numpy_on_all_data(seven_batches):
    data = torch.cat(seven_batches)
    stats = GaussianStats(5)
    for batch in seven_batches:
        stats.update(batch)

    assert stats.count == data.shape[0]
    expected_cov = torch.from_numpy(np.cov(data.numpy(), rowvar=False))
    assert relative_error(stats.mean, data.mean(0)) < 1e-12
    assert relative_error(stats.covariance, expected_cov) < 1e-12


def test_merging_seven_batches_in_any_order_equals_one_pass(seven_batches):
    one_pass = GaussianStats.from_samples(torch.cat(seven_batches))
    parts = [GaussianStats.from_samples(batch) for batch in seven_batches]
    rng = np.random.default_rng(1)
    orders = [rng.permutation(7) for _ in range(10)] + [list(range(7))[::-1]]
    for order in orders:
        merged = GaussianStats(5)
        for index in order:
            merged.merge(parts[index])
        assert merged.count == one_pass.count
        assert relative_error(merged.mean, one_pass.mean) < 1e-12
        assert relative_error(merged.covariance, one_pass.covariance) < 1e-12


def test_pairwise_tree_merge_and_add_operator_equal_one_pass(seven_batches):
    one_pass = GaussianStats.from_samples(torch.cat(seven_batches))
    parts = [GaussianStats.from_samples(batch) for batch in seven_batches]
    while len(parts) > 1:
        parts = [sum(parts[i + 1 : i + 2], parts[i]) for i in range(0, len(parts), 2)]
    assert relative_error(parts[0].covariance, one_pass.covariance) < 1e-12
    # `+` does not change its operands.
    left = GaussianStats.from_samples(seven_batches[0])
    _ = left + GaussianStats.from_samples(seven_batches[1])
    assert left.count == 1


def test_large_mean_keeps_covariance_precision():
    rng = np.random.default_rng(2)
    true_cov = np.array([[1.0, 0.3], [0.3, 1.0]])
    data = rng.multivariate_normal([0.0, 0.0], true_cov, size=20000)
    expected = np.cov(data, rowvar=False)  # computed on centred data: the exact answer
    shifted = torch.from_numpy(data + 1e6)
    stats = GaussianStats(2)
    for batch in torch.split(shifted, 1000):
        stats.update(batch)
    assert relative_error(stats.covariance, torch.from_numpy(expected)) < 1e-9
    # A raw sum of outer products loses everything here; the test would catch it.
    naive = (shifted.T @ shifted - shifted.shape[0] * torch.outer(stats.mean, stats.mean)) / (
        shifted.shape[0] - 1
    )
    assert relative_error(naive, torch.from_numpy(expected)) > 1e-6


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    dim=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_any_split_of_the_data_gives_the_same_statistics(sizes, dim, seed):
    rng = np.random.default_rng(seed)
    batches = [torch.from_numpy(rng.normal(size=(n, dim))) for n in sizes]
    data = torch.cat(batches)
    stats = GaussianStats(dim)
    for batch in batches:
        stats.update(batch)
    assert stats.count == data.shape[0]
    if data.shape[0] >= 2:
        torch.testing.assert_close(stats.covariance, torch.cov(data.T).reshape(dim, dim))


def test_a_bad_batch_leaves_the_statistics_unchanged():
    stats = GaussianStats.from_samples(torch.randn(10, 3, dtype=torch.float64))
    before = stats.copy()
    bad = torch.randn(4, 3, dtype=torch.float64)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        stats.update(bad)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        stats.update(torch.randn(4, 2))
    assert stats == before


def test_covariance_needs_two_samples_and_merge_checks_its_argument():
    stats = GaussianStats.from_samples(torch.ones(1, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = stats.covariance
    with pytest.raises(ValueError, match="3 features into 2"):
        stats.merge(GaussianStats(3))
    with pytest.raises(TypeError, match="GaussianStats"):
        stats.merge(np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_features"):
        GaussianStats(0)


def test_float32_batches_are_accumulated_in_float64():
    batch = torch.tensor([[16777216.0], [16777218.0], [16777220.0]], dtype=torch.float32)
    stats = GaussianStats(1).update(batch)
    assert stats.mean.dtype == torch.float64 and stats.scatter.dtype == torch.float64
    assert float(stats.mean) == 16777218.0
    assert float(stats.covariance) == 4.0


def test_a_batch_read_in_many_chunks_equals_numpy(monkeypatch):
    monkeypatch.setitem(latent_ot.stats._CHUNK_BYTES, "cpu", 8 * 3 * 7)  # 7 rows of 3 per chunk
    rng = np.random.default_rng(3)
    data = rng.normal(1e4, 2.0, size=(100, 3)).astype(np.float32)  # float32 mean is inexact
    stats = GaussianStats(3).update(torch.from_numpy(data))
    exact = data.astype(np.float64)
    assert relative_error(stats.mean, torch.from_numpy(exact.mean(0))) < 1e-15
    assert relative_error(stats.covariance, torch.from_numpy(np.cov(exact, rowvar=False))) < 1e-10


def test_a_nan_in_a_later_chunk_is_caught(monkeypatch):
    monkeypatch.setitem(latent_ot.stats._CHUNK_BYTES, "cpu", 8 * 2 * 4)
    batch = torch.randn(40, 2, dtype=torch.float64)
    batch[37, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        GaussianStats(2).update(batch)


def test_a_float32_batch_whose_own_sum_overflows_is_still_exact():
    batch = torch.full((64, 2), 3e37, dtype=torch.float32)
    batch[::2] = 1e37
    assert not torch.isfinite(batch.sum(dim=0)).all()  # float32 arithmetic overflows here
    stats = GaussianStats(2).update(batch)
    data = batch.double().numpy()
    assert relative_error(stats.mean, torch.from_numpy(data.mean(0))) < 1e-15
    assert relative_error(stats.covariance, torch.from_numpy(np.cov(data, rowvar=False))) < 1e-12


@pytest.mark.parametrize("dim", [64, 130, 288])
def test_the_blocked_gram_matrix_equals_numpy(dim):
    # From 64 features on, the scatter is built from column blocks (uneven ones for 130).
    data = np.random.default_rng(dim).normal(size=(500, dim)) @ np.diag(np.arange(1, dim + 1))
    stats = GaussianStats.from_samples(torch.from_numpy(data))
    covariance = stats.covariance.numpy()
    assert np.array_equal(covariance, covariance.T)
    np.testing.assert_allclose(covariance, np.cov(data, rowvar=False), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dim", [3, 31, 32, 63, 64, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_scatter_is_exactly_symmetric_after_updates_and_merges(dim, dtype):
    # A BLAS product's two triangles may differ in the last bit on some CPUs; the statistics
    # (and every file and map built from them) rely on exact symmetry.
    rng = np.random.default_rng(dim)
    batches = [torch.from_numpy(rng.normal(1.0, 2.0, size=(n, dim))).to(dtype) for n in (5, 97)]
    stats = GaussianStats(dim)
    for batch in batches:
        stats.update(batch)
    merged = GaussianStats.from_samples(batches[0]).merge(GaussianStats.from_samples(batches[1]))
    for scatter in (stats.scatter, merged.scatter, stats.covariance):
        assert torch.equal(scatter, scatter.mT)
