"""Streaming, mergeable estimation of a mean and a covariance.

:class:`GaussianStats` takes batches of vectors one at a time and never holds more than the
current batch: it keeps the count, the mean and the centred scatter matrix
``sum_i (v_i - mu)(v_i - mu)^T`` in float64 on its device. Batches are folded in with the
pairwise update of Chan, Golub and LeVeque, which adds *centred* sums, so data with a large
mean loses no precision (a raw sum of outer products would cancel catastrophically). Two
accumulators merge exactly as if all their data had gone through one; this is what
distributed fitting builds on.

References
----------
.. [1] Chan, Golub, LeVeque. "Updating formulae and a pairwise algorithm for computing
   sample variances", Stanford CS tech. report STAN-CS-79-773, 1979.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor

__all__ = ["GaussianStats"]


class GaussianStats:
    """Running count, mean and covariance of a stream of vectors.

    Parameters
    ----------
    n_features : int
        Length ``d`` of the vectors.
    device : str or torch.device, default="cpu"
        Where the float64 state lives; batches are moved there.

    Attributes
    ----------
    count : int
        Number of vectors seen.
    mean : Tensor of shape (d,), float64
    scatter : Tensor of shape (d, d), float64
        Centred sum of outer products.

    Examples
    --------
    >>> stats = GaussianStats(2)
    >>> _ = stats.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    >>> _ = stats.update(torch.tensor([[4.0, 4.0]]))
    >>> stats.count, stats.mean
    (3, tensor([2., 2.], dtype=torch.float64))
    >>> stats.covariance
    tensor([[4., 4.],
            [4., 4.]], dtype=torch.float64)
    """

    def __init__(self, n_features: int, *, device: str | torch.device = "cpu") -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        self.n_features = n_features
        self.count = 0
        self.mean = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(n_features, n_features, dtype=torch.float64, device=device)

    @classmethod
    def from_samples(
        cls, samples: Tensor, *, device: str | torch.device | None = None, name: str = "samples"
    ) -> GaussianStats:
        """Statistics of the rows of a 2-D tensor (on ``device``, default: the tensor's).

        ``name`` is what error messages call the samples.
        """
        samples = torch.as_tensor(samples)
        if samples.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(samples.shape)}")
        stats = cls(samples.shape[1], device=samples.device if device is None else device)
        return stats.update(samples, name=name)

    @classmethod
    def from_state(cls, count: int, mean: Tensor, scatter: Tensor) -> GaussianStats:
        """Statistics from their state: a count, a mean and a centred scatter matrix.

        The inverse of reading ``(stats.count, stats.mean, stats.scatter)``: used to ship
        statistics between processes and files.
        """
        mean = torch.as_tensor(mean, dtype=torch.float64)
        scatter = torch.as_tensor(scatter, dtype=torch.float64, device=mean.device)
        if mean.ndim != 1 or scatter.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"mean must be (d,) and scatter (d, d), got {tuple(mean.shape)} and "
                f"{tuple(scatter.shape)}"
            )
        if isinstance(count, bool) or int(count) != count or count < 0:
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        stats = cls(mean.shape[0], device=mean.device)
        stats.count, stats.mean, stats.scatter = int(count), mean.clone(), scatter.clone()
        return stats

    @property
    def device(self) -> torch.device:
        """The device of the state tensors."""
        return self.mean.device

    @property
    def covariance(self) -> Tensor:
        """Unbiased covariance ``scatter / (count - 1)``; needs at least two vectors."""
        if self.count < 2:
            raise ValueError(
                f"a covariance needs at least 2 samples, these statistics have {self.count}"
            )
        return self.scatter / (self.count - 1)

    def update(self, batch: Tensor, *, name: str = "batch") -> GaussianStats:
        """Add the rows of ``batch`` (n, d), called ``name`` in error messages. Returns ``self``.

        The batch is read in chunks of bounded size (its float64 copy is never made whole),
        so a float32 batch of any length costs no more than itself plus one chunk. The state
        is changed only once the whole batch has been checked and reduced: a batch that
        raises (wrong shape, NaN or inf) leaves the statistics as they were.
        """
        batch = torch.as_tensor(batch)
        if batch.ndim != 2 or batch.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (n, {self.n_features}), got {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            return self
        scatter, residual, shift = _shifted_sums(batch, self.device)
        # A NaN or infinity anywhere in the batch reaches this sum: checking d numbers, not n d.
        if not bool(torch.isfinite(residual).all()):
            raise ValueError(f"{name} contains NaN or infinity")
        # The shift is close to the mean, not the mean: correct both, as the two-pass
        # algorithm does, with no second pass over the data.
        count = batch.shape[0]
        correction = residual / count
        scatter -= torch.outer(correction, correction) * count
        if not bool(torch.isfinite(scatter).all()):
            raise ValueError(f"{name} values are too large: their scatter overflows float64")
        self._combine(count, shift + correction, scatter)
        return self

    def merge(self, other: GaussianStats) -> GaussianStats:
        """Fold ``other``'s data into ``self`` (in place), as if it had been streamed here."""
        if not isinstance(other, GaussianStats):
            raise TypeError(f"other must be GaussianStats, got {type(other).__name__}")
        if other.n_features != self.n_features:
            raise ValueError(
                f"cannot merge statistics of {other.n_features} features into {self.n_features}"
            )
        self._combine(other.count, other.mean.to(self.device), other.scatter.to(self.device))
        return self

    def __add__(self, other: GaussianStats) -> GaussianStats:
        if not isinstance(other, GaussianStats):
            return NotImplemented
        return self.copy().merge(other)

    def _combine(self, count: int, mean: Tensor, scatter: Tensor) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        new_mean = self.mean + delta * (count / total)
        new_scatter = (
            self.scatter + scatter + torch.outer(delta, delta) * (self.count * count / total)
        )
        self.mean, self.scatter, self.count = new_mean, new_scatter, total

    def copy(self) -> GaussianStats:
        """An independent copy."""
        return copy.deepcopy(self)

    def to(self, device: str | torch.device) -> GaussianStats:
        """Move the state to ``device`` (in place). Returns ``self``."""
        self.mean, self.scatter = self.mean.to(device), self.scatter.to(device)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GaussianStats):
            return NotImplemented
        return (
            self.count == other.count
            and torch.equal(self.mean.cpu(), other.mean.cpu())
            and torch.equal(self.scatter.cpu(), other.scatter.cpu())
        )

    __hash__ = None

    def __repr__(self) -> str:
        return (
            f"GaussianStats(n_features={self.n_features}, count={self.count}, device={self.device})"
        )


# Rows are shifted and converted to float64 this many bytes at a time: a bounded working set.
# On the CPU a chunk that stays in cache while its blocks are multiplied; on a GPU, where each
# kernel launch costs more than the arithmetic of a small chunk, few large chunks.
_CHUNK_BYTES = {"cpu": 4 * 2**20}
_DEVICE_CHUNK_BYTES = 256 * 2**20
# Column blocks of the Gram matrix on the CPU; narrower blocks lose more in efficiency than
# they save.
_GRAM_BLOCKS = 4
_MIN_BLOCK_COLUMNS = 32


def _shifted_sums(batch: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``sum (v - s)(v - s)^T``, ``sum (v - s)`` and the shift ``s``, in float64 on ``device``.

    The shift is the mean of the first chunk of rows. The error of the shifted sums grows
    with ``|mean - s|^2 / variance``, which a shift taken from the data keeps small: at
    most the number of chunks, whatever the offset of the data.
    """
    count, dim = batch.shape
    chunk_bytes = _CHUNK_BYTES.get(torch.device(device).type, _DEVICE_CHUNK_BYTES)
    rows_per_chunk = max(1, chunk_bytes // (8 * dim))
    shift = batch[:rows_per_chunk].to(device, torch.float64).mean(dim=0)
    buffer = torch.empty((min(rows_per_chunk, count), dim), dtype=torch.float64, device=device)
    scatter = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    residual = torch.zeros(dim, dtype=torch.float64, device=device)
    for start in range(0, count, rows_per_chunk):
        rows = batch[start : start + rows_per_chunk].to(device)
        shifted = torch.sub(rows, shift, out=buffer[: rows.shape[0]])
        residual += shifted.sum(dim=0)
        scatter += _gram(shifted)
    return scatter, residual, shift


def _gram(rows: Tensor) -> Tensor:
    """``rows^T rows``; on the CPU, computing only the column blocks on and above the diagonal.

    A symmetric rank-k update (BLAS ``syrk``) needs half the flops of a full product, but
    torch exposes none; four column blocks, ten products of the sixteen, get most of the way.
    A GPU gains more from one large product than from fewer flops. The result is exactly
    symmetric on every machine: a full product's two triangles may differ in the last bit
    (the BLAS kernel sums them in different orders), so the upper one is mirrored.
    """
    dim = rows.shape[1]
    blocks = min(_GRAM_BLOCKS, dim // _MIN_BLOCK_COLUMNS) if rows.device.type == "cpu" else 1
    if blocks < 2:
        gram = rows.mT @ rows
        return gram.triu() + gram.triu(1).mT
    edges = [dim * k // blocks for k in range(blocks + 1)]
    gram = torch.zeros(dim, dim, dtype=rows.dtype, device=rows.device)
    for start, stop in itertools.pairwise(edges):
        gram[start:stop, start:] = rows[:, start:stop].mT @ rows[:, start:]
    return gram.triu() + gram.triu(1).mT
