"""Where and in what precision computations run: ``device`` and ``dtype`` arguments resolved.

:func:`keep_freed_cpu_memory` and :func:`reusing_freed_cpu_memory` are importable here as
before; they live in :mod:`latent_ot.memory`, the one module that touches the C allocator."""

from __future__ import annotations

import os
from typing import Any

import torch

from .memory import keep_freed_cpu_memory, reusing_freed_cpu_memory

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
