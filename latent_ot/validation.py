"""Checks of arguments and parameters, with one message shape and one error type per mistake.

A value of the wrong kind raises ``TypeError``; a value of the right kind but outside what is
allowed raises ``ValueError``. Every message reads ``"<name> must be <what>, got <value>"``, so
it names the argument at fault and what was expected. Estimators, metrics, patches and the
command line all check through these functions.

Examples
--------
>>> check_int(3, "patch_size")
3
>>> check_int(0, "patch_size")
Traceback (most recent call last):
...
ValueError: patch_size must be an int >= 1, got 0
>>> check_choice("never", "stochastic", ("auto", "never", "always"))
'never'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_real"]


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``minimum``."""
    expected = f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    closed: str = "both",
) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high``.

    ``closed`` says which ends belong to it: ``"both"``, ``"left"``, ``"right"`` or
    ``"neither"``; a missing end is unbounded.

    Examples
    --------
    >>> check_real(0.5, "rtol", low=0, high=1, closed="left")
    0.5
    >>> check_real(1, "rtol", low=0, high=1, closed="left")
    Traceback (most recent call last):
    ...
    ValueError: rtol must be a number in [0, 1), got 1
    """
    expected = _interval(low, high, closed)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
    left_ok = low is None or value > low or (value == low and closed in ("both", "left"))
    right_ok = high is None or value < high or (value == high and closed in ("both", "right"))
    if not (math.isfinite(value) and left_ok and right_ok):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool (numpy bools too)."""
    if not isinstance(value, bool | _numpy_bool()):
        raise TypeError(f"{name} must be a bool, got {_shown(value)}")
    return bool(value)


def _numpy_bool() -> type:
    import numpy as np

    return np.bool_


def _interval(low: float | None, high: float | None, closed: str) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a number {'>=' if closed in ('both', 'left') else '>'} {low:g}"
    if low is None:
        return f"a number {'<=' if closed in ('both', 'right') else '<'} {high:g}"
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    return f"a number in {left}{low:g}, {high:g}{right}"


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
