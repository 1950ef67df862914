"""Where and in what precision computations run: ``device`` and ``dtype`` arguments resolved,
and how CPU autoencoders get their memory from the C library (:func:`reusing_freed_cpu_memory`
around each pass, :func:`keep_freed_cpu_memory` for a whole process)."""

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
    "AUTO_DTYPES",
    "keep_freed_cpu_memory",
    "resolve_device",
    "resolve_dtype",
    "reusing_freed_cpu_memory",
]

AUTO_DTYPES = {"cuda": torch.float16}
"""Autoencoder compute dtype that ``dtype="auto"`` gives per device type (others: float32).

Half precision roughly halves the time and memory of a GPU autoencoder; where float16
overflows (the Stable Diffusion VAE decoder can), the autoencoder retries in float32.
"""


def resolve_device(device: Any, *, name: str = "device") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), a device string, or a ``torch.device``.

    Under ``torchrun`` or ``accelerate launch`` (``LOCAL_RANK`` set), ``"auto"`` picks the
    process's own GPU, ``cuda:LOCAL_RANK``, so that ranks do not all share GPU 0.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{name} must be 'auto', a device string or a torch.device, got {device!r}")
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = os.environ.get("LOCAL_RANK", "")
        return torch.device(f"cuda:{int(local_rank)}" if local_rank.isdigit() else "cuda")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"{name}: {device!r} is not a torch device ('cpu', 'cuda:0', ...)"
        ) from err


def resolve_dtype(dtype: Any, device: torch.device | str, *, name: str = "dtype") -> torch.dtype:
    """``"auto"`` (:data:`AUTO_DTYPES` for the device), None (float32), a name or a dtype.

    Examples
    --------
    >>> resolve_dtype("auto", "cpu"), resolve_dtype("auto", "cuda"), resolve_dtype(None, "cuda")
    (torch.float32, torch.float16, torch.float32)
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype == "auto":
            return AUTO_DTYPES.get(torch.device(device).type, torch.float32)
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"{name} must be 'auto', None or a floating point torch.dtype (float32, float16, "
            f"bfloat16), got {dtype!r}"
        )
    return dtype


# mallopt parameters, from glibc's <malloc.h>, and the largest value they take (a C int).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_C_INT_MAX = 2**31 - 1
# The most that glibc's adaptive thresholds grow to (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
# systems, and twice that), near where the blocks an autoencoder pass frees take them.
_MMAP_THRESHOLD_GROWN = 32 * 2**20
_TRIM_THRESHOLD_GROWN = 2 * _MMAP_THRESHOLD_GROWN
# Settings by which a user chooses glibc's allocator behaviour; where one is set, it stays.
_MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_reuse_lock = threading.Lock()
_reuse_depth = 0
_applied_for_blocks = False
_kept_process_wide = False


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


def _set_thresholds(libc: ctypes.CDLL, mmap_threshold: int, trim_threshold: int) -> bool:
    # A high mmap threshold serves every block from the heap; the trim threshold then keeps
    # freed heap memory instead of releasing it. Either alone changes nothing.
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def keep_freed_cpu_memory() -> bool:
    """Keep memory that torch frees for reuse instead of returning it to the system (glibc).

    A CPU autoencoder frees and allocates each layer's activations, tens of megabytes, many
    times per image. glibc's ``malloc`` gives blocks that large back to the system at once,
    so every new one arrives as fresh pages that the kernel must zero: on a 2-core machine a
    third of the autoencoder's time (TAEF2 at 1024 px, encode + decode: 16.6 s with glibc's
    defaults, 9.3 s with this setting). This call sets the two thresholds that decide it, as
    the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do,
    so that freed blocks are reused.

    The library already does this while its calls run, for the TAESD-family autoencoders
    (:func:`reusing_freed_cpu_memory`), and gives the memory back after them; this call
    makes it permanent for the whole process and every autoencoder, so that memory also
    stays between calls. The cost is that resident memory stays at its peak instead of
    shrinking between images, and with the Stable Diffusion VAE that peak grows: 3.6 GB
    above the model instead of 1.3 GB for a tiled 1024 px image. Elsewhere (macOS, Windows,
    musl) it does nothing; where jemalloc or tcmalloc is preloaded, it has no effect.

    Returns
    -------
    bool
        True if the setting was applied; False where the C library is not glibc or refused.

    Examples
    --------
    >>> keep_freed_cpu_memory()  # doctest: +SKIP
    True
    """
    global _kept_process_wide
    libc = _glibc()
    if libc is None:
        return False
    with _reuse_lock:
        _kept_process_wide = _set_thresholds(libc, _C_INT_MAX, _C_INT_MAX)
        return _kept_process_wide


@contextlib.contextmanager
def reusing_freed_cpu_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Within the block, keep memory that is freed for reuse; give it back to the system after.

    Autoencoder passes on the CPU run inside this block, and so do the ``fit`` and
    ``transform`` calls of :class:`~latent_ot.LatentOTTransformer` as a whole
    (:meth:`~latent_ot.autoencoders.Autoencoder.reusing_freed_memory`: all adapters but the
    Stable Diffusion VAE's, whose heap would grow too large). Without it, glibc returns each
    freed activation of more than 32 MiB to the system, and the next one arrives as fresh
    pages that the kernel zeroes: millions of page faults per large image (see
    :func:`keep_freed_cpu_memory`). Inside it, freed memory is reused; at the end,
    ``malloc_trim`` returns what is free to the system, so the process does not stay at its
    peak.

    glibc's allocator adapts its thresholds to the blocks a program frees, and no call
    restores that adaptation once they are set: after the block they are left where it
    takes them during an autoencoder pass outside this block (a block of 32 MiB or more is
    mapped on its own; free heap above 64 MiB is trimmed). Nothing changes where the C
    library is not glibc, where the user chose glibc's malloc settings
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
    ``glibc.malloc`` tunables), or after :func:`keep_freed_cpu_memory`. Blocks nest, also
    across threads: the last one to end restores.

    Parameters
    ----------
    device : torch.device or str, default="cpu"
        Where the computation in the block runs; for any device but the CPU the block does
        nothing (the GPU's own allocator caches).

    Yields
    ------
    bool
        Whether freed memory is kept for reuse inside the block.

    Examples
    --------
    >>> with reusing_freed_cpu_memory():
    ...     activations = torch.zeros(2**23)
    """
    global _reuse_depth, _applied_for_blocks
    libc = _glibc()
    if torch.device(device).type != "cpu" or libc is None or _user_chose_malloc_settings():
        yield False
        return
    with _reuse_lock:
        if _reuse_depth == 0:
            _applied_for_blocks = not _kept_process_wide and _set_thresholds(
                libc, _C_INT_MAX, _C_INT_MAX
            )
        _reuse_depth += 1
        reusing = _kept_process_wide or _applied_for_blocks
    try:
        yield reusing
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0 and _applied_for_blocks and not _kept_process_wide:
                _set_thresholds(libc, _MMAP_THRESHOLD_GROWN, _TRIM_THRESHOLD_GROWN)
                libc.malloc_trim(0)
