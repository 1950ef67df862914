"""Checks of arguments and parameters, with one message shape and one error type per mistake.

A value of the wrong kind raises ``TypeError``; a value of the right kind but outside what is
allowed raises ``ValueError``. Every message reads ``"<name> must be <what>, got <value>"``, so
it names the argument at fault and what was expected. Estimators, metrics, patches and the
command line all check through these functions.

Estimators declare their parameters the way scikit-learn's do, in ``_parameter_constraints``
(scikit-learn's ``Interval``, ``StrOptions``, types, ``None``...), and :func:`check_params`
checks them all at once with this module's message shape; it raises scikit-learn's
``InvalidParameterError``, which is both a ``ValueError`` and a ``TypeError``.

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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    make_constraint,
)

__all__ = [
    "ALPHA",
    "ALPHA_RANGE",
    "RANDOM_STATE",
    "check_bool",
    "check_choice",
    "check_constraints",
    "check_int",
    "check_params",
    "check_real",
    "torch_generator",
]

ALPHA_RANGE = (-10.0, 10.0)
"""The ``alpha`` an estimator accepts. ``alpha`` outside ``[0, 1]`` extrapolates along the line
from the transported output to the input; far beyond it the outputs are saturated noise and,
in latent space, overflow the decoder, so a typo fails at once instead of at ``transform``."""

ALPHA = [Interval(numbers.Real, *ALPHA_RANGE, closed="both")]
"""The constraint of ``alpha``, in :data:`ALPHA_RANGE`."""

RANDOM_STATE = [
    None,
    Interval(numbers.Integral, 0, 2**32 - 1, closed="both"),
    np.random.RandomState,
    np.random.Generator,
]
"""What ``random_state`` may be: None, an int in numpy's seed range, a RandomState or a
Generator (see :func:`torch_generator`)."""


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
        return f"a number {'>=' if closed in ('both', 'left') else '>'} {_number(low)}"
    if low is None:
        return f"a number {'<=' if closed in ('both', 'right') else '<'} {_number(high)}"
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    return f"a number in {left}{_number(low)}, {_number(high)}{right}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def check_params(estimator: Any) -> None:
    """Check every parameter of ``estimator`` against its ``_parameter_constraints``.

    Raises scikit-learn's ``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) on
    the first parameter that satisfies none of its constraints, with the message
    ``"<name> must be <what>, got <value>"``. A bool is not taken for a number.

    Examples
    --------
    >>> from latent_ot import GaussianOTTransformer
    >>> check_params(GaussianOTTransformer(random_state=1.5))
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: random_state must be None, an int \
in [0, 4294967295], a RandomState or a Generator, got 1.5
    """
    params = estimator.get_params(deep=False)
    constraints: Mapping[str, list] = estimator._parameter_constraints
    for name, allowed in constraints.items():
        check_constraints(params[name], name, allowed)


def check_constraints(value: Any, name: str, constraints: list) -> Any:
    """``value`` if it satisfies one of scikit-learn style ``constraints``, else raise
    ``InvalidParameterError`` (see :func:`check_params`).

    Examples
    --------
    >>> check_constraints(0.5, "alpha", ALPHA)
    0.5
    """
    made = [make_constraint(constraint) for constraint in constraints]
    if not any(_satisfies(constraint, value) for constraint in made):
        raise InvalidParameterError(f"{name} must be {_describe_all(made)}, got {value!r}")
    return value


def _satisfies(constraint: Any, value: Any) -> bool:
    if isinstance(value, bool | np.bool_) and isinstance(constraint, Interval | Options):
        return False
    return constraint.is_satisfied_by(value)


def _describe_all(constraints: list) -> str:
    shown = [_describe(constraint) for constraint in constraints]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _describe(constraint: Any) -> str:
    if isinstance(constraint, Interval):
        kind = "an int" if constraint.type is numbers.Integral else "a number"
        closed = constraint.closed
        bounds = _interval(constraint.left, constraint.right, closed)
        return bounds.replace("a number", kind, 1)
    if isinstance(constraint, Options):
        options = sorted(constraint.options)
        return repr(options[0]) if len(options) == 1 else "one of " + ", ".join(map(repr, options))
    kind = getattr(constraint, "type", None)
    if isinstance(kind, type):
        name = kind.__name__
        return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"
    text = str(constraint)
    return {"None": "None", "an instance of 'bool' or an instance of 'numpy.bool'": "a bool"}.get(
        text, text
    )


def torch_generator(random_state: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded from a scikit-learn style ``random_state``.

    An int seeds it directly (the same int gives the same noise on every call); None draws
    fresh entropy; a ``numpy.random.RandomState`` or ``Generator`` gives a seed drawn from it
    (so each call draws new noise, as scikit-learn's estimators do with one).

    Examples
    --------
    >>> a, b = torch_generator(0), torch_generator(0)
    >>> bool(torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b)))
    True
    """
    generator = torch.Generator(device=device)
    if random_state is None:
        generator.seed()
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        generator.manual_seed(int(random_state))
    elif isinstance(random_state, np.random.Generator):
        generator.manual_seed(int(random_state.integers(0, 2**31 - 1)))
    else:
        generator.manual_seed(int(check_random_state(random_state).randint(0, 2**31 - 1)))
    return generator
