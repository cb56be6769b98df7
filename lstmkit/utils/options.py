"""Checks of the numeric options every app's config and the CLI share (errors name the option)."""

from __future__ import annotations

import math
import numbers

SEEDS = 2**32  # numpy's seed range [0, 2**32), the narrowest of the RNGs a run seeds


def check_number(name: str, value: object, low: float | None = None, *, above: bool = False) -> None:
    """Refuse anything but a finite real number, >= low (> low with above=True).

    Written as what is accepted, not as `value < low`: every comparison with NaN is false, so a
    rejection test lets NaN through; and no option means anything at infinity (their "no limit"
    is spelled 0).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    bound = "" if low is None else f" {'>' if above else '>='} {low:g}"
    if not math.isfinite(value) or (low is not None and (value <= low if above else value < low)):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value}")


def check_seed(name: str, value: object) -> None:
    """A ValueError naming `name` unless `value` is an int every seeded RNG accepts."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < SEEDS:
        raise ValueError(f"{name}: expected an integer in [0, 2**32), got {value!r}")
