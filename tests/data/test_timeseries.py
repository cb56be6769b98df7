"""CSV time series: column checks, time order, the gap policy, the embedded dataset."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lstmkit.data.timeseries import (
    TimeSeriesError, apply_gap_policy, load_csv, load_dataset, parse_columns, seasonal_period,
)

# ../shared/data beside the repository root, as CI lays it out.
SHARED = Path(__file__).resolve().parents[2].parent / "shared/data/timeseries"
POLLUTION = SHARED / "pollution.csv"
MELBOURNE = SHARED / "daily-min-temperatures.csv"


def write(tmp_path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """date,temp,wind,label
2020-01-01,1.0,5,a
2020-01-02,2.0,6,b
2020-01-03,4.0,7,c
2020-01-04,8.0,8,d
"""


def test_inline_csv_target_first_then_features(tmp_path):
    s = load_csv(write(tmp_path, GOOD), "temp", ["wind"])
    assert s.columns == ["temp", "wind"] and s.target == "temp"
    np.testing.assert_array_equal(s.values, [[1, 5], [2, 6], [4, 7], [8, 8]])
    assert str(s.times[0]) == "2020-01-01 00:00:00"
    assert s.report["missing_values"] == 0 and s.report["step"] == "1 days 00:00:00"
    assert load_csv(write(tmp_path, GOOD), "temp").columns == ["temp"]  # the target alone by default
    assert load_csv(write(tmp_path, GOOD), "temp", ["all"]).columns == ["temp", "wind"]  # numeric ones only


def test_series_keep_the_sha256_of_the_bytes_read(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_csv(path, "temp").sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert load_csv(write(tmp_path, GOOD.replace("8.0", "8000.0")), "temp").sha256 != \
        hashlib.sha256(GOOD.encode()).hexdigest()


def test_missing_column_is_named(tmp_path):
    with pytest.raises(TimeSeriesError, match=r"no column\(s\) \['pressure'\]; columns are"):
        load_csv(write(tmp_path, GOOD), "temp", ["pressure"])
    with pytest.raises(TimeSeriesError, match="no column"):
        load_csv(write(tmp_path, GOOD), "nope")


def test_non_numeric_value_gives_column_line_and_value(tmp_path):
    bad = GOOD.replace("2020-01-03,4.0", "2020-01-03,?4.0")
    with pytest.raises(TimeSeriesError, match=r"column 'temp' is not numeric: line 4 holds '\?4.0'"):
        load_csv(write(tmp_path, bad), "temp")
    with pytest.raises(TimeSeriesError, match="column 'label' is not numeric"):
        load_csv(write(tmp_path, GOOD), "temp", ["label"])


def test_time_order_is_checked_never_resorted(tmp_path):
    swapped = GOOD.replace("2020-01-02", "2020-01-09")
    with pytest.raises(TimeSeriesError, match="goes back in time at line 4"):
        load_csv(write(tmp_path, swapped), "temp")
    repeated = GOOD.replace("2020-01-02", "2020-01-01")
    with pytest.raises(TimeSeriesError, match="time repeats at line 3"):
        load_csv(write(tmp_path, repeated), "temp")
    with pytest.raises(TimeSeriesError, match="line 3: 'yesterday' is not a date"):
        load_csv(write(tmp_path, GOOD.replace("2020-01-02", "yesterday")), "temp")


def test_unreadable_and_absent_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        load_csv(tmp_path / "absent.csv", "temp")
    with pytest.raises(TimeSeriesError, match="no data rows"):
        load_csv(write(tmp_path, "date,temp\n"), "temp")


GAPPY = """date,temp,wind
2020-01-01,,1
2020-01-02,1.0,2
2020-01-03,NA,3
2020-01-04,NA,4
2020-01-05,4.0,5
2020-01-07,6.0,NA
2020-01-08,7.0,8
2020-01-09,NA,9
"""


def test_gaps_error_refuses_and_says_where(tmp_path):
    with pytest.raises(TimeSeriesError, match=r"'temp': 4 missing in 3 run\(s\), first at line 2, lines 4-5"):
        load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="error")


def test_gaps_interpolate_fills_linearly_in_time_and_reports_trimmed_edges(tmp_path):
    s = load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="interpolate")
    rep = s.report
    # Row 1 (no temp before it) and row 8 (no temp after it) cannot be interpolated: trimmed, counted.
    assert rep["trimmed_leading_rows"] == 1 and rep["trimmed_trailing_rows"] == 1
    assert [str(t.date()) for t in s.times] == ["2020-01-02", "2020-01-03", "2020-01-04", "2020-01-05",
                                                "2020-01-07", "2020-01-08"]
    # temp 1.0 on the 2nd and 4.0 on the 5th: 2.0 and 3.0 between; wind on the 7th between 5 (5th) and 8 (8th),
    # in time (2 of 3 days), not in rows.
    np.testing.assert_allclose(s.values[:, 0], [1, 2, 3, 4, 6, 7])
    np.testing.assert_allclose(s.values[:, 1], [2, 3, 4, 5, 7, 8])
    assert rep["filled_values"] == 3 and rep["filled_runs"] == 2 and rep["longest_filled_run"] == 2
    assert rep["time_gaps"] == 1  # the 6th is absent from the file, and stays absent
    assert not np.isnan(s.values).any()


def test_gaps_interpolate_refuses_runs_longer_than_max_gap(tmp_path):
    with pytest.raises(TimeSeriesError, match=r"2 missing values in a row .*\(more than --max-gap 1\)"):
        load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="interpolate", max_gap=1)
    assert len(load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="interpolate", max_gap=2)) == 6


def test_gap_policy_name_is_checked():
    with pytest.raises(TimeSeriesError, match="gaps: expected one of"):
        apply_gap_policy(None, np.zeros((2, 1)), ["a"], "drop")


def test_parse_columns():
    assert parse_columns("a, b,c") == ["a", "b", "c"] and parse_columns(None) == []
    with pytest.raises(TimeSeriesError, match="empty column name"):
        parse_columns("a,,b")


def test_pollution_gaps(tmp_path):
    """pollution.csv: hourly, time from year/month/day/hour, 2067 NA in pm2.5 (24 of them leading)."""
    if not POLLUTION.is_file():
        pytest.skip(f"shared data absent: {POLLUTION}")
    with pytest.raises(TimeSeriesError, match=r"'pm2.5': 2067 missing in 214 run\(s\), first at lines 2-25"):
        load_csv(POLLUTION, "pm2.5", ["DEWP", "TEMP"], gaps="error")
    s = load_csv(POLLUTION, "pm2.5", ["DEWP", "TEMP", "PRES", "Iws"], gaps="interpolate")
    assert s.report["time_columns"] == ["year", "month", "day", "hour"]
    assert s.report["trimmed_leading_rows"] == 24 and s.report["trimmed_trailing_rows"] == 0
    assert len(s) == 43824 - 24 and s.report["filled_values"] == 2067 - 24
    assert s.report["step"] == "0 days 01:00:00" and s.report["time_gaps"] == 0
    assert not np.isnan(s.values).any()
    assert seasonal_period(s) == 24
    with pytest.raises(TimeSeriesError, match="column 'cbwd' is not numeric: line 2 holds 'NW'"):
        load_csv(POLLUTION, "pm2.5", ["cbwd"], gaps="interpolate")


def test_melbourne_two_absent_days_are_reported_not_invented():
    if not MELBOURNE.is_file():
        pytest.skip(f"shared data absent: {MELBOURNE}")
    s = load_csv(MELBOURNE, "Temp")
    assert len(s) == 3650 and s.report["time_gaps"] == 2 and seasonal_period(s) == 365


def test_seattle_weather_embedded():
    s = load_dataset("seattle-weather")
    assert len(s) == 1461 and s.columns == ["temp_max", "precipitation", "temp_min", "wind"]
    assert seasonal_period(s) == 365
    assert load_dataset("seattle-weather", "wind", []).columns == ["wind"]
    from vega_datasets import local_data
    assert s.sha256 == hashlib.sha256(local_data.seattle_weather.raw()).hexdigest()
    with pytest.raises(TimeSeriesError, match="dataset: expected one of"):
        load_dataset("nope")
