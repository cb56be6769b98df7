"""Chronological split, windows inside one part, targets at the horizon, scaling from train only."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.apps.forecast.windows import PARTS, Scaler, chronological_split, make_windows, prepare


@settings(max_examples=60, deadline=None)
@given(n=st.integers(30, 400), window=st.integers(1, 8), horizon=st.integers(1, 5),
       val=st.floats(0.1, 0.3), test=st.floats(0.1, 0.3))
def test_no_window_crosses_a_split_boundary(n, window, horizon, val, test):
    values = np.arange(n, dtype=float)[:, None]  # each row holds its own index
    try:
        prep = prepare(values, val, test, window, horizon)
    except ValueError as e:
        assert "too few for one window" in str(e)
        return
    split = prep.split
    assert 0 < split.b1 < split.b2 < split.n == n
    for part in PARTS:
        lo, hi = split.bounds(part)
        w = prep.raw[part]
        assert len(w) == hi - lo - window - horizon + 1 >= 1  # every window that fits, none more
        rows_in = w.x[..., 0]
        assert rows_in.min() >= lo and w.y.max() <= hi - 1  # inputs and targets stay inside the part
        assert (w.origin[1:] - w.origin[:-1] == 1).all()  # consecutive, in time order


def test_targets_line_up_with_the_horizon():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 3))
    w = make_windows(values, 5, 45, window=4, horizon=3)
    for i, o in enumerate(w.origin):
        np.testing.assert_array_equal(w.x[i], values[o - 3:o + 1])  # rows o-3..o, every column
        np.testing.assert_array_equal(w.y[i], values[o + 1:o + 4, 0])  # the target at o+1, o+2, o+3
    assert w.origin[0] == 5 + 3 and w.origin[-1] == 45 - 1 - 3


def test_scaling_uses_training_statistics_only():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, size=(200, 2))
    prep = prepare(values, 0.2, 0.2, window=5, horizon=1)
    b1 = prep.split.b1
    np.testing.assert_allclose(prep.scaler.mean, values[:b1].mean(0))
    np.testing.assert_allclose(prep.scaler.std, values[:b1].std(0))
    # Changing everything after the training part changes nothing in the scaler or the train windows.
    changed = values.copy()
    changed[b1:] = changed[b1:] * 100 + 50
    prep2 = prepare(changed, 0.2, 0.2, window=5, horizon=1)
    np.testing.assert_array_equal(prep2.scaler.mean, prep.scaler.mean)
    np.testing.assert_array_equal(prep2.scaler.std, prep.scaler.std)
    np.testing.assert_array_equal(prep2.scaled["train"].x, prep.scaled["train"].x)
    # The scaled test windows are the raw ones through the training statistics.
    np.testing.assert_allclose(prep2.scaled["test"].x, (prep2.raw["test"].x - prep.scaler.mean) / prep.scaler.std)
    np.testing.assert_allclose(prep2.scaler.inverse_target(prep2.scaled["test"].y), prep2.raw["test"].y)


def test_constant_column_scales_by_one():
    s = Scaler.fit(np.ones((10, 1)))
    assert s.std[0] == 1.0 and (s.transform(np.ones((3, 1))) == 0).all()


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match=r"5 rows are too few for one window \(--window 4 \+ --horizon 2 = 6 rows\)"):
        chronological_split(5, 0.15, 0.15, 4, 2)
    with pytest.raises(ValueError, match="the val part has 3 rows .* too few for one window"):
        chronological_split(20, 0.15, 0.15, 4, 2)
