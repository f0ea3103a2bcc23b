"""Parameter checks shared by every estimator, oracle and loader.

One place decides what a valid int, number, fraction or choice is, so every
message has the same shape: ``"<name> must be <what>, got <value>"``.

``True`` and ``False`` are refused where a number is expected: ``bool`` is an
``int`` subclass in Python, but ``n_step=True`` is a mistake, not a 1.
scikit-learn's private ``_parameter_constraints`` machinery accepts booleans as
ints and is not a public API, hence this small module.

Values are shown with :func:`plain`, which prints numpy scalars and arrays as
plain Python values (``1.5``, not ``np.float64(1.5)``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["LATENCY_RANGE_MS", "check_choice", "check_fraction", "check_int", "check_latencies",
           "check_real", "plain"]

# Plausible latencies of one inference, in ms: 1 ns .. about 2.8 hours. Values
# outside (1e-320, 1e308, ...) are typing or unit errors and would overflow the
# relative losses and accuracies downstream.
LATENCY_RANGE_MS = (1e-6, 1e7)


def plain(value: Any) -> str:
    """``repr`` of ``value`` with numpy scalars and arrays shown as Python values.

    Examples
    --------
    >>> import numpy as np
    >>> plain(np.float64(2.0)), plain(np.array([1, 2])), plain("cpu")
    ('2.0', '[1, 2]', "'cpu'")
    """
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """Return ``value`` as an ``int`` within ``[low, high]`` or raise ``ValueError``.

    Examples
    --------
    >>> check_int(3, "n_step", low=1)
    3
    >>> check_int(True, "n_step", low=1)
    Traceback (most recent call last):
    ...
    ValueError: n_step must be an int >= 1, got True
    """
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, (bool, np.bool_))
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        if low is not None and high is not None:
            what = f"an int in {low}..{high}"
        elif low is not None:
            what = f"an int >= {low}"
        elif high is not None:
            what = f"an int <= {high}"
        else:
            what = "an int"
        if allow_none:
            what += " or None"
        raise ValueError(f"{name} must be {what}, got {plain(value)}")
    return int(value)


def check_real(value: Any, name: str, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, allow_none: bool = False,
               hint: str = "") -> float | None:
    """Return ``value`` as a finite ``float`` within the given bounds or raise ``ValueError``.

    ``low_open``/``high_open`` exclude the bound itself. NaN and infinities are
    always refused.

    Examples
    --------
    >>> check_real(0.5, "alpha", low=0)
    0.5
    >>> check_real(float("nan"), "alpha", low=0)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be a finite number >= 0, got nan
    """
    if value is None and allow_none:
        return None
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        if allow_none:
            what += " or None"
        raise ValueError(f"{name} must be {what}, got {plain(value)}{hint}")
    return float(value)


def check_fraction(value: Any, name: str, include_one: bool = True,
                   allow_none: bool = False) -> float | None:
    """A fraction in ``(0, 1]`` (or ``(0, 1)``); the message says ``0.95 is 95%``.

    Examples
    --------
    >>> check_fraction(10, "acc_threshold")
    Traceback (most recent call last):
    ...
    ValueError: acc_threshold must be a finite number > 0 and <= 1, got 10 (a fraction: 0.95 is 95%)
    """
    return check_real(value, name, low=0, high=1, low_open=True, high_open=not include_one,
                      allow_none=allow_none, hint=" (a fraction: 0.95 is 95%)")


def check_choice(value: Any, name: str, choices: Iterable) -> Any:
    """Return ``value`` if it is one of ``choices`` or raise ``ValueError`` listing them.

    Examples
    --------
    >>> check_choice("cv", "test", ("holdout", "cv"))
    'cv'
    """
    choices = tuple(choices)
    try:
        if value in choices:
            return value
    except TypeError:  # unhashable or incomparable values are simply not choices
        pass
    raise ValueError(f"{name} must be one of {list(choices)}, got {plain(value)}")


def check_latencies(y, n: int) -> np.ndarray:
    """``y`` as a float vector of ``n`` latencies; NaN and inf are allowed (failed
    measurements), numbers too large for arithmetic are not."""
    try:
        y = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("y must hold numeric latencies in ms") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"y must hold one latency per architecture of X: got shape {y.shape} for {n} architectures"
        )
    low, high = LATENCY_RANGE_MS
    with np.errstate(invalid="ignore"):
        implausible = np.isfinite(y) & (y > 0) & ((y < low) | (y > high))
    if implausible.any():
        i = int(np.flatnonzero(implausible)[0])
        raise ValueError(
            f"y[{i}] = {float(y[i]):g} ms is outside the plausible latency range "
            f"{low:g}..{high:g} ms; give latencies in milliseconds"
        )
    return y
