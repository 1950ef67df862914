"""Where computations run: one rule for turning a ``device`` argument into a torch device."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["resolve_device"]


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
