"""MAE, RMSE, MASE on hand-computed cases; the baselines on series where the answer is known."""

import numpy as np
import pytest

from lstmkit.apps.forecast import baselines
from lstmkit.apps.forecast.metrics import mae, mase, naive_scale, rmse, scores, table
from lstmkit.apps.forecast.windows import make_windows


def test_mase_hand_computed():
    train = np.array([1.0, 3.0, 2.0, 5.0])  # one-step naive errors |2|, |-1|, |3|: scale 2
    y = np.array([4.0, 6.0])
    pred = np.array([5.0, 3.0])  # errors 1 and 3: MAE 2, squared 1 and 9: RMSE sqrt(5)
    assert naive_scale(train) == 2.0
    assert mae(y, pred) == 2.0
    assert rmse(y, pred) == pytest.approx(np.sqrt(5.0))
    assert mase(y, pred, train) == 1.0
    assert mase(y, np.array([5.0, 5.0]), train) == 0.5
    assert scores(y, pred, train) == {"mae": 2.0, "rmse": pytest.approx(np.sqrt(5.0)), "mase": 1.0}
    with pytest.raises(ValueError, match="^train_target: MASE needs at least 2 values of the training span, got 1$"):
        naive_scale(np.array([1.0]))


def test_naive_scale_counts_only_pairs_of_observed_values():
    # Rows 2 and 3 were filled in (3.0 carried forward): their steps, 0, 0 and 4, are no one-step naive
    # errors of observed values. Left: |3 - 1| and |5 - 7|, scale 2 (all five steps would give 1.6).
    train = np.array([1.0, 3.0, 3.0, 3.0, 7.0, 5.0])
    filled = np.array([False, False, True, True, False, False])
    assert naive_scale(train, filled) == 2.0 and naive_scale(train) == pytest.approx(1.6)
    y, pred = np.array([4.0, 6.0]), np.array([5.0, 3.0])  # MAE 2
    assert mase(y, pred, train, filled) == 1.0
    assert scores(y, pred, train, filled)["mase"] == 1.0
    with pytest.raises(ValueError, match=r"^filled: expected one flag per training value, shape \(6,\), "
                                         r"got shape \(5,\)$"):
        naive_scale(train, filled[:5])


def test_mase_is_undefined_when_no_two_observed_values_follow_each_other():
    train = np.array([1.0, 1.0, 4.0, 4.0, 2.0])
    filled = np.array([False, True, False, True, False])
    assert np.isnan(naive_scale(train, filled))
    assert np.isnan(mase(np.array([1.0]), np.array([2.0]), train, filled))
    assert np.isnan(mase(np.array([1.0]), np.array([1.0]), train, filled))  # undefined even for an exact forecast
    assert "| LSTM | 1.0000 | 1.0000 | nan | - |" in table({"LSTM": scores(np.array([1.0]), np.array([2.0]),
                                                                               train, filled)})


def test_table_says_how_the_lstm_compares():
    md = table({"LSTM": {"mae": 1, "rmse": 0.9, "mase": 0.5}, "persistence": {"mae": 1, "rmse": 1.0, "mase": 0.6}})
    assert "| persistence | 1.0000 | 1.0000 | 0.6000 | -10.0% |" in md


def test_table_with_an_exact_baseline_has_no_ratio_to_divide_by():
    exact = {"mae": 0.0, "rmse": 0.0, "mase": 0.0}
    md = table({"LSTM": {"mae": 0.1, "rmse": 0.2, "mase": 0.3}, "persistence": exact})
    assert "| persistence | 0.0000 | 0.0000 | 0.0000 | +inf% |" in md
    assert "| persistence | 0.0000 | 0.0000 | 0.0000 | +0.0% |" in table({"LSTM": exact, "persistence": exact})


def test_persistence_and_seasonal_naive():
    target = np.arange(20, dtype=float) ** 2
    origin = np.array([10, 15])
    np.testing.assert_array_equal(baselines.persistence(target, origin, 2), [[100, 100], [225, 225]])
    # period 4, horizon 6: k=1..4 look back 4 rows, k=5,6 look back 8.
    got = baselines.seasonal_naive(target, origin, 6, 4)
    np.testing.assert_array_equal(got[0], target[[7, 8, 9, 10, 7, 8]])
    assert (got[1] <= target[15]).all()  # never reads after the origin
    with pytest.raises(ValueError, match="reaches before the first row"):
        baselines.seasonal_naive(target, origin, 1, 12)


def test_linear_ar_recovers_an_autoregression():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, size=2000)
    y = np.zeros(2000)
    for t in range(2, 2000):
        y[t] = 0.6 * y[t - 1] - 0.3 * y[t - 2] + 0.1 + noise[t]  # AR(2)
    values = y[:, None]
    train = make_windows(values, 0, 1500, window=2, horizon=1)
    coef = baselines.fit_linear(train)
    np.testing.assert_allclose(coef[:, 0], [-0.3, 0.6, 0.1], atol=0.05)  # lags t-2, t-1, constant
    test = make_windows(values, 1500, 2000, window=2, horizon=1)
    assert rmse(test.y, baselines.predict_linear(coef, test)) < 0.11  # the noise, no more
