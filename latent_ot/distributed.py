"""Fitting and transforming across processes, GPUs and nodes with ``torch.distributed``.

Inside an initialised process group (``torchrun``, ``accelerate launch``, or your own
``init_process_group``), every rank fits on its own shard of the images; within
:func:`synchronize_fit`, each ``fit`` / ``partial_fit`` call ends by exchanging the
statistics that the call accumulated on every rank, and merging them in rank order. The
merge is exact (see :class:`~latent_ot.stats.GaussianStats`) and done in the same order, on
the CPU, everywhere, so every rank ends with bitwise the same statistics and the same
operator. Without :func:`synchronize_fit` nothing is exchanged, process group or not.

Each exchange has two steps of fixed shape: every rank first says whether it succeeded, and
only then are the statistics exchanged. A rank whose share failed (an unreadable image, out
of memory) says so with :func:`report_failure`, and the others raise
:class:`DistributedFitError` naming it at once; a rank that crashed or stopped responding
is noticed when its connection closes or after ``timeout`` seconds.

:func:`transform_dataset` transforms a list of image files, each rank its share, each
output written exactly once.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from math import inf
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sklearn.utils.validation import check_is_fitted

from .devices import resolve_device
from .images import FolderReport, expand_inputs, transform_files
from .stats import GaussianStats

__all__ = [
    "DistributedFitError",
    "gather_stats",
    "rank_and_world_size",
    "report_failure",
    "sum_counts",
    "synchronize_fit",
    "synchronizing",
    "transform_dataset",
]

# How much longer than the collective's own timeout a rank waits for it to end.
_WAIT_MARGIN = timedelta(seconds=10)

# Room for the error message a failed rank sends to the others (UTF-8, truncated).
_MESSAGE_BYTES = 1024


class DistributedFitError(RuntimeError):
    """The ranks of a distributed fit or transform could not exchange what they must.

    Another rank failed, crashed or timed out, or the ranks disagree on their inputs.
    """


@dataclass(frozen=True)
class _Sync:
    group: dist.ProcessGroup | None
    timeout: timedelta


_ACTIVE: contextvars.ContextVar[_Sync | None] = contextvars.ContextVar(
    "latent_ot_sync", default=None
)


# -- where this process stands ------------------------------------------------------------------


def rank_and_world_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """This process's rank in ``group`` and the group's size; ``(0, 1)`` without a process group.

    Examples
    --------
    >>> rank_and_world_size()  # no process group initialised
    (0, 1)
    """
    if not dist.is_available() or not dist.is_initialized():
        if group is not None:
            raise RuntimeError("group was given, but no torch.distributed process group is set up")
        return 0, 1
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(f"group: this process (global rank {dist.get_rank()}) is not a member")
    return rank, dist.get_world_size(group)


# -- the opt-in --------------------------------------------------------------------------------


@contextlib.contextmanager
def synchronize_fit(
    group: dist.ProcessGroup | None = None, *, timeout: float | timedelta = 1800.0
) -> Iterator[None]:
    """Within this block, ``fit`` and ``partial_fit`` reduce their statistics across ranks.

    Every rank of ``group`` must make the same sequence of ``fit`` / ``partial_fit`` calls
    (collectives); each passes its own images (possibly none: an empty list).

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        The ranks to fit across; the default process group when None.
    timeout : float or timedelta, default=1800
        Seconds a rank waits for the others at each exchange: it must exceed the time by which
        the slowest rank finishes its share after the fastest. A rank that crashed or stopped
        responding never arrives: the others then raise :class:`DistributedFitError` instead
        of hanging. A rank whose share raised an error tells the others at once (see
        :func:`report_failure`), whatever the timeout. With the NCCL backend, the process
        group's own timeout (``init_process_group(timeout=...)``) bounds the wait as well.

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
    sync = _Sync(group, _as_timedelta(timeout))
    rank_and_world_size(group)  # refuses a group this process is not part of
    token = _ACTIVE.set(sync)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _as_timedelta(timeout: float | timedelta) -> timedelta:
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < seconds < inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timedelta(seconds=float(seconds))


def synchronizing() -> bool:
    """Whether the caller runs inside :func:`synchronize_fit`."""
    return _ACTIVE.get() is not None


# -- the exchanges -----------------------------------------------------------------------------


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

    Raises
    ------
    DistributedFitError
        When another rank reported a failure (:func:`report_failure`), crashed, or did not
        arrive within the timeout of :func:`synchronize_fit`.

    Examples
    --------
    Outside :func:`synchronize_fit` it only copies:

    >>> local = GaussianStats.from_samples(torch.eye(3, dtype=torch.float64))
    >>> gather_stats([local])[0] == local
    True
    """
    sync = _ACTIVE.get()
    if sync is None:
        return [s.copy() for s in stats]
    _exchange_status(sync, error=None)
    _check_same_dimensions(stats, sync)
    return [_merge_over_ranks(local, sync) for local in stats]


def report_failure(error: BaseException) -> None:
    """Tell the other ranks, waiting in :func:`gather_stats`, that this rank's share failed.

    Call it in place of :func:`gather_stats` when computing this rank's statistics raised,
    then re-raise ``error``: the other ranks raise :class:`DistributedFitError` naming this
    rank and ``error``, at once, and every rank has made the same collectives, so the
    process group stays usable. Does nothing outside :func:`synchronize_fit`, and never
    raises itself: a rank that cannot tell the others still raises its own error.

    Parameters
    ----------
    error : BaseException
        Why this rank failed; its type and message are sent to the others.

    Examples
    --------
    The pattern, inside a synchronised fit::

        try:
            local = compute_local_stats()
        except BaseException as error:
            report_failure(error)
            raise
        merged = gather_stats(local)
    """
    sync = _ACTIVE.get()
    if sync is None:
        return
    with contextlib.suppress(DistributedFitError):
        _exchange_status(sync, error=error)


def sum_counts(counts: Sequence[int]) -> list[int]:
    """Sum integer counts over all ranks; the counts themselves outside a sync block.

    Examples
    --------
    >>> sum_counts([3, 4])  # outside synchronize_fit
    [3, 4]
    """
    sync = _ACTIVE.get()
    if sync is None:
        return list(counts)
    local = torch.tensor(list(counts), dtype=torch.int64)
    gathered = _all_gather(local, sync, "image counts")
    return [int(v) for v in torch.stack(gathered).sum(0).tolist()]


def _exchange_status(sync: _Sync, error: BaseException | None) -> None:
    """Every rank says whether it failed, and why; raise on the others when one did."""
    message = "" if error is None else f"{type(error).__name__}: {error}"
    encoded = message.encode("utf-8")[: _MESSAGE_BYTES - 1]
    status = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
    status[0] = 0 if error is None else 1
    status[1 : 1 + len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    gathered = _all_gather(status, sync, "fit status")
    failures = {
        rank: bytes(state[1:].tolist()).rstrip(b"\0").decode("utf-8", errors="replace")
        for rank, state in enumerate(gathered)
        if state[0] != 0
    }
    me = dist.get_rank(sync.group)
    others = {rank: text for rank, text in failures.items() if rank != me}
    if others:
        lines = "; ".join(f"rank {rank} failed with {text}" for rank, text in others.items())
        raise DistributedFitError(
            f"rank {me}: the synchronised fit stops because {lines} (see that rank's "
            "traceback). No rank has changed its statistics in this call."
        )


def _check_same_dimensions(stats: Sequence[GaussianStats], sync: _Sync) -> None:
    """Refuse to merge statistics of different dimensions (ranks fitting differently)."""
    local = torch.tensor([s.n_features for s in stats], dtype=torch.int64)
    gathered = _all_gather(local, sync, "dimensions of the statistics")
    if any(not torch.equal(other, gathered[0]) for other in gathered):
        dimensions = ", ".join(f"rank {r}: {d.tolist()}" for r, d in enumerate(gathered))
        raise DistributedFitError(
            f"rank {dist.get_rank(sync.group)}: the ranks fit patch vectors of different "
            f"lengths ({dimensions}); every rank must use the same vae and patch_size"
        )


def _merge_over_ranks(local: GaussianStats, sync: _Sync) -> GaussianStats:
    d = local.n_features
    state = torch.cat([local.mean.new_tensor([local.count]), local.mean, local.scatter.reshape(-1)])
    # Merged on the CPU: the same operations on the same hardware give every rank bitwise
    # the same result, whichever accelerators the ranks use.
    total = GaussianStats(d)
    for rank_state in _all_gather(state, sync, "statistics"):
        rank_state = rank_state.cpu()
        count, mean, scatter = rank_state[0], rank_state[1 : 1 + d], rank_state[1 + d :]
        total.merge(GaussianStats.from_state(int(count.item()), mean, scatter.reshape(d, d)))
    return total.to(local.device)


def _all_gather(tensor: torch.Tensor, sync: _Sync, what: str) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape everywhere), in rank order, with a timeout."""
    # The options object that torch.distributed.all_gather itself builds: the only way to
    # give one collective its own timeout. Imported here: some torch builds lack distributed.
    from torch.distributed.distributed_c10d import AllgatherOptions

    group = sync.group if sync.group is not None else dist.group.WORLD
    tensor = tensor.to(_exchange_device(tensor, sync.group)).contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(sync.group))]
    # The timeout goes into the collective itself, so that gloo abandons it in its own
    # thread: a timeout on work.wait() only would leave the collective pending, and the
    # process unable to exit until the missing rank does. The wait's own timeout, later, is
    # a backstop for backends that ignore the collective's.
    options = AllgatherOptions()
    options.timeout = sync.timeout
    try:
        work = group.allgather([gathered], [tensor], options)
        work.wait(sync.timeout + _WAIT_MARGIN)
    except RuntimeError as err:
        _destroy_at_exit(sync.group)
        raise DistributedFitError(
            f"rank {dist.get_rank(sync.group)}: exchanging the {what} with the other ranks "
            f"failed ({_short_reason(err)}). Another rank probably crashed (see its error), "
            f"stopped responding for more than {sync.timeout.total_seconds():g} s, or made a "
            "different sequence of fit/partial_fit calls; this process group cannot be used "
            "for further collectives."
        ) from err
    return gathered


def _destroy_at_exit(group: dist.ProcessGroup | None) -> None:
    """Destroy ``group`` when the interpreter exits, before its own teardown.

    After a collective failed, gloo's teardown during the interpreter's own (its objects
    destroyed in whatever order) sometimes aborts the process (``terminate called without
    an active exception``); destroyed first, it exits cleanly.
    """

    def destroy() -> None:
        if dist.is_initialized():
            with contextlib.suppress(Exception):  # destroyed already by the caller
                dist.destroy_process_group(group)

    atexit.register(destroy)


def _short_reason(err: BaseException) -> str:
    """The gist of a backend's error: its last line's first sentence, without a source path."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    gist = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])  # gloo's "[path/pair.cc:553] "
    return gist.split(". ", 1)[0]


def _exchange_device(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.device:
    # NCCL exchanges CUDA tensors only, on this rank's GPU: the statistics' own, else the GPU
    # that device="auto" gives this rank (cuda:LOCAL_RANK under torchrun). Every other
    # backend (gloo, and gloo's CPU half of "cpu:gloo,cuda:nccl") takes CPU tensors.
    if dist.get_backend(group) != "nccl":
        return torch.device("cpu")
    return tensor.device if tensor.is_cuda else resolve_device("auto")


# -- transforming a dataset ---------------------------------------------------------------------


def transform_dataset(
    operator: Any,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    skip_existing: bool = False,
    group: dist.ProcessGroup | None = None,
    timeout: float | timedelta = 300.0,
    on_file: Callable[[Path], None] | None = None,
) -> FolderReport:
    """Transform image files on all ranks, each rank its share, and save each output once.

    Every rank must call it with the same ``inputs``; rank ``r`` of ``n`` transforms files
    ``r, r + n, r + 2n, ...`` (see :func:`latent_ot.images.folders.shard`), so the shares are
    disjoint and cover the inputs. Without a process group the one process does them all.
    Outputs are written as :func:`latent_ot.images.folders.transform_files` does: under the input's
    name, atomically, with unreadable inputs reported rather than raised.

    Parameters
    ----------
    operator : fitted estimator
        Anything whose ``transform`` maps an image file path to a PIL image, e.g. a fitted
        :class:`~latent_ot.LatentOTTransformer` (the same on every rank).
    inputs : path, pattern, or iterable of them
        Files, directories and glob patterns (see :func:`latent_ot.images.folders.expand_inputs`).
    output_dir : path
        Created if missing; must be the same folder (a shared file system) for all ranks.
    skip_existing : bool, default=False
        Leave files whose output exists alone, to resume an interrupted run.
    group : torch.distributed.ProcessGroup, optional
        The ranks to share the work with; the default process group when None.
    timeout : float or timedelta, default=300
        Seconds to wait for the other ranks when checking, before any work, that they all
        see the same list of files.
    on_file : callable, optional
        Called with each input path of this rank's share once it is done.

    Returns
    -------
    FolderReport
        What all ranks did, in rank order (the same on every rank): the ranks wait for each
        other at the end, within the process group's own timeout.

    Raises
    ------
    DistributedFitError
        Before any work, when the ranks see different lists of files (which would write
        some outputs twice and others never).

    Examples
    --------
    Run with ``torchrun --nproc-per-node 4 enhance.py``::

        import torch.distributed as dist
        from latent_ot import LatentOTTransformer
        from latent_ot.distributed import transform_dataset

        dist.init_process_group("gloo")
        dot = LatentOTTransformer.load("operator.safetensors")
        report = transform_dataset(dot, "restored/", "enhanced/", skip_existing=True)
        if dist.get_rank() == 0:
            print(len(report.written), "written,", len(report.failed), "failed")
    """
    if not callable(getattr(operator, "transform", None)):
        raise TypeError(f"operator must have a transform method, got {type(operator).__name__}")
    if hasattr(operator, "fit"):
        check_is_fitted(operator)
    rank, world_size = rank_and_world_size(group)
    sync = _Sync(group, _as_timedelta(timeout))
    files = expand_inputs(inputs)
    if world_size > 1:
        _check_same_files(files, sync)
    report = transform_files(
        operator.transform,
        files,
        output_dir,
        rank=rank,
        world_size=world_size,
        skip_existing=skip_existing,
        on_file=on_file,
    )
    if world_size == 1:
        return report
    reports: list[FolderReport | None] = [None] * world_size
    # all_gather_object exchanges through the current CUDA device under NCCL: make it this
    # rank's own, as the statistics' exchange does, whether or not the script set it.
    nccl = dist.get_backend(group) == "nccl"
    with torch.cuda.device(resolve_device("auto")) if nccl else contextlib.nullcontext():
        dist.all_gather_object(reports, report, group=group)
    return _combine_reports(reports)


def _check_same_files(files: list[Path], sync: _Sync) -> None:
    """Refuse to start when the ranks would shard different lists of files."""
    # Outputs are named after the inputs' file names: the ordered names are what must agree.
    digest = hashlib.sha256("\n".join(path.name for path in files).encode("utf-8")).digest()
    fingerprint = torch.tensor([len(files), *digest], dtype=torch.int64)
    gathered = _all_gather(fingerprint, sync, "lists of input files")
    differing = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if differing:
        counts = ", ".join(f"rank {rank}: {int(gathered[rank][0])}" for rank in [0, *differing])
        raise DistributedFitError(
            f"rank {dist.get_rank(sync.group)}: ranks {differing} see other input files than "
            f"rank 0 (numbers of files: {counts}); every rank must see the same files, in the "
            "same order, or some outputs would be written twice and others never"
        )


def _combine_reports(reports: Sequence[FolderReport]) -> FolderReport:
    combined = FolderReport()
    for report in reports:
        combined.written.extend(report.written)
        combined.skipped.extend(report.skipped)
        combined.failed.extend(report.failed)
    return combined
