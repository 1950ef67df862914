"""What an estimator puts in an operator file: its parameters as JSON, its statistics as
tensors, and the check that a file's parameters are exactly the class's.

:mod:`latent_ot.serialization` writes and reads the file itself; this module is the shape both
estimators give their state inside it.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..exceptions import OperatorFileError
from ..stats import GaussianStats

__all__ = ["json_params", "params_from_file", "stats_from_tensors", "stats_tensors"]


def json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values for an operator file; refuses what a file cannot hold.

    Examples
    --------
    >>> json_params({"device": torch.device("cpu"), "alpha": 0.5})
    {'device': 'cpu', 'alpha': 0.5}
    """
    plain = {}
    for name, value in params.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            value = str(value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        if value is not None and not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"{name}: a {type(value).__name__} cannot be written to an operator file; use a "
                "name, a path or a number (an instance needs joblib, which pickles it)"
            )
        plain[name] = value
    return plain


def params_from_file(estimator_class: type, params: Any, path: Any) -> dict[str, Any]:
    """The constructor parameters a file stored, refused unless they are exactly the class's.

    An operator file stores every parameter of the class that wrote it; a file whose names
    differ was written by another version of latent-ot, whose outputs this one cannot promise.
    """
    expected = set(estimator_class().get_params(deep=False))
    if not isinstance(params, dict) or set(params) != expected:
        found = sorted(params) if isinstance(params, dict) else params
        raise OperatorFileError(
            f"{os.fspath(path)}: this {estimator_class.__name__} file was written by another "
            f"version of latent-ot (its parameters are {found}, this version's are "
            f"{sorted(expected)}); fit and save it again with this version"
        )
    return params


def stats_tensors(name: str, stats: GaussianStats) -> dict[str, torch.Tensor]:
    """The tensors of :class:`~latent_ot.GaussianStats` ``stats``, named ``<name>.mean`` and
    ``<name>.scatter``; the count goes to the metadata."""
    return {f"{name}.mean": stats.mean, f"{name}.scatter": stats.scatter}


def stats_from_tensors(tensors: Mapping[str, torch.Tensor], name: str, count: int) -> GaussianStats:
    """The :class:`~latent_ot.GaussianStats` that :func:`stats_tensors` stored as ``name``."""
    return GaussianStats.from_state(count, tensors[f"{name}.mean"], tensors[f"{name}.scatter"])
