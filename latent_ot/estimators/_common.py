"""What both estimators share: parameter checks, seeding, the alpha blend, file state."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state

from ..gaussian import STOCHASTIC_MODES
from ..stats import GaussianStats
from ..validation import check_real

__all__ = [
    "STOCHASTIC_MODES",
    "check_alpha",
    "check_rtol",
    "in_place_blend",
    "json_params",
    "make_generator",
    "stats_from",
    "stats_tensors",
]


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}: {alpha!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return float(alpha)


def check_rtol(rtol: Any) -> float | None:
    if rtol is None:
        return None
    return check_real(rtol, "rtol", low=0, high=1, closed="left")


def make_generator(random_state: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from a scikit-learn style ``random_state``.

    An int seeds it directly (same int, same noise); None draws fresh entropy; a
    ``numpy.random.RandomState`` gives a seed drawn from it.
    """
    generator = torch.Generator(device=device)
    if random_state is None:
        generator.seed()
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        generator.manual_seed(int(random_state))
    else:
        generator.manual_seed(int(check_random_state(random_state).randint(0, 2**31 - 1)))
    return generator


def in_place_blend(transported: torch.Tensor, original: torch.Tensor, alpha: float) -> torch.Tensor:
    """:func:`latent_ot.transport.blend`, written into ``transported``: for a caller that
    owns it."""
    if alpha == 0.0:
        return transported
    return transported.lerp_(original.to(transported.dtype), alpha)


def stats_tensors(name: str, stats: GaussianStats) -> dict[str, torch.Tensor]:
    return {f"{name}.mean": stats.mean, f"{name}.scatter": stats.scatter}


def stats_from(tensors: dict, name: str, count: int) -> GaussianStats:
    return GaussianStats.from_state(count, tensors[f"{name}.mean"], tensors[f"{name}.scatter"])


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values for an operator file; refuses what a file cannot hold."""
    plain = {}
    for name, value in params.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        elif isinstance(value, np.integer):
            value = int(value)
        if value is not None and not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"{name}: a {type(value).__name__} cannot be written to an operator file; use a "
                "name, a path or a number (an instance needs joblib, which pickles it)"
            )
        plain[name] = value
    return plain
