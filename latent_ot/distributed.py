"""Fitting across processes, GPUs and nodes with ``torch.distributed``.

Inside an initialised process group (``torchrun``, ``accelerate launch``, or your own
``init_process_group``), every rank fits on its own shard of the images; within
:func:`synchronize_fit`, each ``fit`` / ``partial_fit`` call ends by exchanging the
statistics that the call accumulated on every rank, and merging them in rank order. The
merge is exact (see :class:`~latent_ot.stats.GaussianStats`) and done in the same order
everywhere, so every rank ends with bitwise the same statistics and the same operator.

Without :func:`synchronize_fit` nothing is exchanged, process group or not.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .stats import GaussianStats

__all__ = [
    "DistributedFitError",
    "gather_stats",
    "sum_counts",
    "synchronize_fit",
    "synchronizing",
]


class DistributedFitError(RuntimeError):
    """The ranks of a synchronised fit could not exchange their statistics."""


@dataclass(frozen=True)
class _Sync:
    group: dist.ProcessGroup | None
    timeout: timedelta


_ACTIVE: contextvars.ContextVar[_Sync | None] = contextvars.ContextVar(
    "latent_ot_sync", default=None
)


@contextlib.contextmanager
def synchronize_fit(
    group: dist.ProcessGroup | None = None, *, timeout: float | timedelta = 300.0
) -> Iterator[None]:
    """Within this block, ``fit`` and ``partial_fit`` reduce their statistics across ranks.

    Every rank of ``group`` must make the same sequence of ``fit`` / ``partial_fit`` calls
    (collectives); each passes its own images.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        The ranks to fit across; the default process group when None.
    timeout : float or timedelta, default=300
        Seconds to wait for the other ranks at each exchange. A rank that failed never
        arrives: the others then raise :class:`DistributedFitError` instead of hanging.

    Examples
    --------
    Run with ``torchrun --nproc-per-node 2 fit.py``::

        import torch.distributed as dist
        from latent_ot import LatentOTTransformer
        from latent_ot.distributed import synchronize_fit

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        dot = LatentOTTransformer(vae="taef2")
        with synchronize_fit():
            dot.fit(restored_files[rank::world], natural_files[rank::world])
        # every rank now holds the operator fitted on all the images
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "synchronize_fit needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group, or a launch with torchrun)"
        )
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    token = _ACTIVE.set(_Sync(group, timedelta(seconds=seconds)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def synchronizing() -> bool:
    """Whether the caller runs inside :func:`synchronize_fit`."""
    return _ACTIVE.get() is not None


def gather_stats(stats: Sequence[GaussianStats]) -> list[GaussianStats]:
    """Merge each of ``stats`` over all ranks, in rank order; copies outside a sync block.

    Parameters
    ----------
    stats : sequence of GaussianStats
        This rank's statistics (the same number, with the same dimensions, on every rank).

    Returns
    -------
    list of GaussianStats
        For each input, the merge of every rank's, on the input's device; bitwise the same
        on every rank.
    """
    sync = _ACTIVE.get()
    if sync is None:
        return [s.copy() for s in stats]
    merged = []
    for local in stats:
        state = torch.cat(
            [local.mean.new_tensor([local.count]), local.mean, local.scatter.reshape(-1)]
        )
        total = GaussianStats(local.n_features, device=local.device)
        d = local.n_features
        for rank_state in _all_gather(state, sync):
            rank_state = rank_state.to(local.device)
            count, mean, scatter = rank_state[0], rank_state[1 : 1 + d], rank_state[1 + d :]
            total.merge(GaussianStats.from_state(int(count.item()), mean, scatter.reshape(d, d)))
        merged.append(total)
    return merged


def sum_counts(counts: Sequence[int]) -> list[int]:
    """Sum integer counts over all ranks; the counts themselves outside a sync block."""
    sync = _ACTIVE.get()
    if sync is None:
        return list(counts)
    local = torch.tensor(list(counts), dtype=torch.float64)
    return [int(v) for v in torch.stack(_all_gather(local, sync)).sum(0).tolist()]


def _all_gather(tensor: torch.Tensor, sync: _Sync) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape everywhere), in rank order, with a timeout."""
    # NCCL exchanges CUDA tensors only; gloo takes CPU ones.
    on_cuda = dist.get_backend(sync.group) == "nccl"
    tensor = tensor.to("cuda" if on_cuda else "cpu").contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(sync.group))]
    work = dist.all_gather(gathered, tensor, group=sync.group, async_op=True)
    try:
        completed = work.wait(timeout=sync.timeout)
    except RuntimeError as err:
        raise DistributedFitError(
            f"rank {dist.get_rank(sync.group)}: no statistics from the other ranks within "
            f"{sync.timeout.total_seconds():.0f} s; another rank probably failed (see its "
            "error) or made a different number of fit/partial_fit calls"
        ) from err
    if completed is False:
        raise DistributedFitError(
            f"rank {dist.get_rank(sync.group)}: the exchange of statistics did not complete"
        )
    return gathered
