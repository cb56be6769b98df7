"""Numeric option checks: NaN and infinities refused, bounds inclusive or not, seeds in range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmkit.utils.options import check_number, check_seed


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match=f"clip: expected a finite number >= 0, got {value}"):
        check_number("clip", value, 0)
    with pytest.raises(ValueError, match=f"forget_bias: expected a finite number, got {value}"):
        check_number("forget_bias", value)


def test_bounds():
    check_number("clip", 0, 0)
    check_number("lr", np.float32(1e-3), 0, above=True)
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got 0"):
        check_number("lr", 0, 0, above=True)
    with pytest.raises(TypeError, match="lr: expected a number, got str '0.1'"):
        check_number("lr", "0.1", 0)
    with pytest.raises(TypeError, match="expected a number, got bool"):
        check_number("lr", True, 0)


def test_seeds():
    check_seed("--seed", 0)
    check_seed("--seed", 2**32 - 1)
    for bad in (-1, 2**32, 10**20, 1.0):
        with pytest.raises(ValueError, match=r"--seed: expected an integer in \[0, 2\*\*32\)"):
            check_seed("--seed", bad)
