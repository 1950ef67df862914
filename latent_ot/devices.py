"""Where and in what precision computations run: ``device`` and ``dtype`` arguments resolved,
and the one process-wide setting that CPU autoencoders need (:func:`keep_freed_cpu_memory`)."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import torch

__all__ = ["AUTO_DTYPES", "keep_freed_cpu_memory", "resolve_device", "resolve_dtype"]

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


def keep_freed_cpu_memory() -> bool:
    """Keep memory that torch frees for reuse instead of returning it to the system (glibc).

    A CPU autoencoder frees and allocates each layer's activations, tens of megabytes, many
    times per image. glibc's ``malloc`` gives blocks that large back to the system at once,
    so every new one arrives as fresh pages that the kernel must zero: on a 2-core machine a
    third of the autoencoder's time (TAEF2 at 1024 px, encode + decode: 16.6 s before this
    call, 9.3 s after; ``benchmarks/README.md``). This call sets the two thresholds that
    decide it, as the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` do, so that freed blocks are reused.

    It changes the whole process, which is why the library never calls it by itself: the
    ``latent-ot`` command does, in its own process. The cost is that resident memory stays
    at its peak instead of shrinking between images. Elsewhere (macOS, Windows, musl) it
    does nothing; where jemalloc or tcmalloc is preloaded, the setting has no effect.

    Returns
    -------
    bool
        True if the setting was applied; False where the C library is not glibc or refused.

    Examples
    --------
    >>> keep_freed_cpu_memory()  # doctest: +SKIP
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl has no such symbol)
    except (OSError, AttributeError):
        return False
    # A threshold this high serves every block from the heap; the trim threshold then keeps
    # freed heap memory instead of releasing it. Either alone changes nothing.
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _C_INT_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, _C_INT_MAX)
    )
