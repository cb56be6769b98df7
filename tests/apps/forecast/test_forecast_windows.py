"""Chronological split, windows inside one part, targets at the horizon, scaling from train only."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmkit.apps.forecast.windows import PARTS, Scaler, chronological_split, make_windows, prepare, window_origins
from lstmkit.data.timeseries import apply_gap_policy


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


def test_windows_with_a_filled_in_target_are_left_out_of_every_part():
    rng = np.random.default_rng(2)
    n, window, horizon = 300, 5, 3
    values = rng.normal(size=(n, 2))
    filled = np.arange(n) % 17 == 0
    prep = prepare(values, 0.2, 0.2, window, horizon, filled=filled)
    for part in PARTS:
        lo, hi = prep.split.bounds(part)
        every = window_origins(lo, hi, window, horizon)
        clean = [o for o in every if not filled[o + 1:o + horizon + 1].any()]
        w = prep.raw[part]
        np.testing.assert_array_equal(w.origin, clean)
        assert prep.dropped[part] == len(every) - len(clean) > 0
        np.testing.assert_array_equal(prep.scaled[part].origin, clean)
        assert not any(filled[o + 1:o + horizon + 1].any() for o in w.origin)
    # A filled input is kept: only the targets decide.
    assert any(filled[o - window + 1:o + 1].any() for o in prep.raw["test"].origin)
    assert prepare(values, 0.2, 0.2, window, horizon).dropped == {p: 0 for p in PARTS}


def test_a_part_left_with_no_window_is_a_clear_error():
    filled = np.zeros(100, dtype=bool)
    filled[85:] = True  # every test target
    with pytest.raises(ValueError, match="all 10 test windows have a filled-in value among their --horizon 1 targets"):
        prepare(np.ones((100, 1)), 0.15, 0.15, 5, 1, filled=filled)


def test_window_inputs_do_not_change_when_later_rows_change():
    """ffill then windows: a window's inputs read nothing after its origin, gaps included."""
    rng = np.random.default_rng(3)
    n = 200
    times = pd.date_range("2021-01-01", periods=n, freq="D")
    values = rng.normal(size=(n, 2))
    values[rng.random((n, 2)) < 0.2] = np.nan
    values[0] = 0.0
    _, base, base_filled, _ = apply_gap_policy(times, values, ["a", "b"], "ffill")
    before = prepare(base, 0.2, 0.2, 10, 2, filled=base_filled[:, 0])
    test = before.raw["test"]
    for k in test.origin[10::10]:
        later = values.copy()
        later[k + 1:] = np.where(np.isnan(later[k + 1:]), 100.0, np.nan)  # gaps where values were, and back
        _, changed, changed_filled, _ = apply_gap_policy(times, later, ["a", "b"], "ffill")
        after = prepare(changed, 0.2, 0.2, 10, 2, filled=changed_filled[:, 0])
        new = after.raw["test"]
        # Changed rows may change which windows have a filled-in target; those kept in both read the same.
        both = np.intersect1d(test.origin[test.origin <= k], new.origin)
        assert len(both)
        for o in both:
            np.testing.assert_array_equal(new.x[new.origin == o][0], test.x[test.origin == o][0])
