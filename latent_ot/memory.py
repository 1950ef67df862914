"""The allocator policy: CPU autoencoder passes reuse the memory they free (glibc only).

This is the one module of latent-ot that changes native, process-wide state, and it says so.

Why: a CPU autoencoder frees and allocates each layer's activations, tens of megabytes, many
times per image. glibc's ``malloc`` returns blocks that large to the system as soon as they
are freed, so every new one arrives as fresh pages that the kernel must zero: on a 2-core
machine about a third of a TAESD-family pass (see ``benchmarks/README.md`` for the numbers,
with the policy on and off).

What: :class:`~latent_ot.LatentOTTransformer`'s ``fit``, ``partial_fit``, ``transform`` and
``sweep`` run inside :func:`reusing_freed_memory`, which, for autoencoders that it suits,
raises glibc's mmap and trim thresholds (``mallopt``) so that freed blocks are reused, and at
its end calls ``malloc_trim(0)`` so that the process does not stay at its peak. It suits the
TAESD family and the pixel identity; not the Stable Diffusion VAE, whose kept heap would grow
past what its tiling saves (:func:`suits`). A loop of calls runs in one block with
``LatentOTTransformer.reusing_freed_memory()``, as ``latent-ot transform`` runs its files.

What it leaves behind: glibc's thresholds cannot be read back, so they cannot be restored
exactly. After a block they are left where glibc's own adaptation takes them during an
autoencoder pass outside any block: a block of 32 MiB or more is mapped on its own, and free
heap above 64 MiB is trimmed (:data:`MMAP_THRESHOLD_AFTER`, :data:`TRIM_THRESHOLD_AFTER`).

How to decline: set the environment variable ``LATENT_OT_REUSE_FREED_MEMORY=0``
(:data:`REUSE_ENV`): no ``mallopt`` or ``malloc_trim`` call is then made at all. Nothing is
changed either off the CPU, off glibc (macOS, Windows, musl), or where the user chose glibc's
malloc settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``
or ``glibc.malloc`` tunables). :func:`keep_freed_cpu_memory` makes reuse permanent for the
whole process instead, for users who want it for every autoencoder and between calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "MMAP_THRESHOLD_AFTER",
    "REUSE_ENV",
    "TRIM_THRESHOLD_AFTER",
    "keep_freed_cpu_memory",
    "reusing_freed_cpu_memory",
    "reusing_freed_memory",
    "suits",
]

REUSE_ENV = "LATENT_OT_REUSE_FREED_MEMORY"
"""Environment variable; ``0``, ``false``, ``no`` or ``off`` turn the policy off entirely."""

# mallopt parameters, from glibc's <malloc.h>, and the largest value they take (a C int).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_C_INT_MAX = 2**31 - 1

MMAP_THRESHOLD_AFTER = 32 * 2**20
"""glibc's mmap threshold after a block: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems, the
most its own adaptation grows it to, which the blocks an autoencoder pass frees take it to."""
TRIM_THRESHOLD_AFTER = 2 * MMAP_THRESHOLD_AFTER
"""glibc's trim threshold after a block: twice the mmap threshold, as glibc's adaptation sets."""

# Settings by which a user chooses glibc's allocator behaviour; where one is set, it stays.
_MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# Autoencoder classes whose kept heap outgrows what tiling saves (checked by name, so that this
# module does not import the adapters).
_UNSUITED = frozenset({"DiffusersKLAutoencoder"})

_lock = threading.Lock()
_depth = 0
_applied_for_blocks = False
_kept_process_wide = False


def declined() -> bool:
    """Whether the user turned the policy off with :data:`REUSE_ENV`."""
    return os.environ.get(REUSE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def suits(autoencoder: Any) -> bool:
    """Whether reusing freed memory suits ``autoencoder`` (not the Stable Diffusion VAE).

    Measured with reuse, the SD VAE's tiled 1024 px ``transform`` took 3.6 GB above the model
    instead of 1.3 GB: tiles in diffusers' own loop grow the heap tile after tile.
    """
    return not any(cls.__name__ in _UNSUITED for cls in type(autoencoder).__mro__)


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (Linux), else None (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl has no such symbol)
    except (OSError, AttributeError):
        return None
    return libc


def _user_chose_malloc_settings() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc." in tunables or any(name in os.environ for name in _MALLOC_ENVIRONMENT)


def _set_thresholds(libc: Any, mmap_threshold: int, trim_threshold: int) -> bool:
    # A high mmap threshold serves every block from the heap; the trim threshold then keeps
    # freed heap memory instead of releasing it. Either alone changes nothing.
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def keep_freed_cpu_memory() -> bool:
    """Keep memory that torch frees for reuse, for the whole process and every autoencoder.

    The same as setting the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` at start-up. The library already reuses freed memory while its
    calls run (:func:`reusing_freed_memory`); this makes it permanent, so that memory also
    stays between calls and the Stable Diffusion VAE reuses it too. The cost is that resident
    memory stays at its peak instead of shrinking between images, and with the SD VAE that
    peak grows (``benchmarks/README.md``). Never called by the library itself.

    Returns
    -------
    bool
        True if applied; False off glibc, when refused, or when :data:`REUSE_ENV` declines.

    Examples
    --------
    >>> keep_freed_cpu_memory()  # doctest: +SKIP
    True
    """
    global _kept_process_wide
    libc = None if declined() else _glibc()
    if libc is None:
        return False
    with _lock:
        _kept_process_wide = _set_thresholds(libc, _C_INT_MAX, _C_INT_MAX)
        return _kept_process_wide


@contextlib.contextmanager
def reusing_freed_cpu_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Within the block, keep memory that is freed for reuse; give it back to the system after.

    Blocks nest, also across threads: the first to start sets glibc's thresholds, the last to
    end trims and leaves them at :data:`MMAP_THRESHOLD_AFTER` / :data:`TRIM_THRESHOLD_AFTER`.
    Nothing is changed off the CPU, off glibc, where the user chose glibc's malloc settings,
    after :func:`keep_freed_cpu_memory`, or when :data:`REUSE_ENV` declines the policy.

    Parameters
    ----------
    device : torch.device or str, default="cpu"
        Where the computation in the block runs (the GPU's own allocator caches).

    Yields
    ------
    bool
        Whether freed memory is kept for reuse inside the block.

    Examples
    --------
    >>> with reusing_freed_cpu_memory():
    ...     activations = torch.zeros(2**23)
    """
    global _depth, _applied_for_blocks
    off = torch.device(device).type != "cpu" or declined() or _user_chose_malloc_settings()
    libc = None if off else _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            _applied_for_blocks = not _kept_process_wide and _set_thresholds(
                libc, _C_INT_MAX, _C_INT_MAX
            )
        _depth += 1
        reusing = _kept_process_wide or _applied_for_blocks
    try:
        yield reusing
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _applied_for_blocks and not _kept_process_wide:
                _set_thresholds(libc, MMAP_THRESHOLD_AFTER, TRIM_THRESHOLD_AFTER)
                libc.malloc_trim(0)


def reusing_freed_memory(autoencoder: Any) -> contextlib.AbstractContextManager[bool]:
    """The policy for work with ``autoencoder``: a reuse block where it suits, else nothing.

    What the estimators wrap around ``fit``, ``transform`` and ``sweep``; wrap your own loop
    of encode/decode calls in it to get the same speed.

    Examples
    --------
    >>> from latent_ot.autoencoders import load_autoencoder
    >>> with reusing_freed_memory(load_autoencoder("pixel")):
    ...     pass
    """
    if not suits(autoencoder):
        return contextlib.nullcontext(False)
    return reusing_freed_cpu_memory(autoencoder.device)
