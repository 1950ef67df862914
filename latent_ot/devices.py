"""Where and in what precision computations run: ``device`` and ``dtype`` arguments resolved."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["AUTO_DTYPES", "check_device_available", "resolve_device", "resolve_dtype"]

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
    resolved = dtype
    if isinstance(dtype, str):
        if dtype == "auto":
            return AUTO_DTYPES.get(torch.device(device).type, torch.float32)
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(
            f"{name} must be one of 'auto', 'float32', 'float16', 'bfloat16', None or a "
            f"floating point torch.dtype, got {dtype!r}"
        )
    return resolved


def check_device_available(device: torch.device, *, name: str = "device") -> torch.device:
    """``device`` if this torch build and machine can run on it, else a ``ValueError`` naming
    ``name``: a CUDA device asked of a torch built without CUDA, or of a machine without one.

    Examples
    --------
    >>> check_device_available(torch.device("cpu"))
    device(type='cpu')
    """
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(
                f"{name}={str(device)!r} but this torch build has no CUDA; use 'cpu' or "
                "'auto', or install a CUDA build of torch"
            )
        if not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={str(device)!r} but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA "
                "device(s) available; use 'cpu' or 'auto'"
            )
    return device
