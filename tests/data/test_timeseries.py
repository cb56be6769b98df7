"""CSV time series: column checks, time order, the gap policy, the embedded dataset."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
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


def test_features_all_reports_a_stray_text_cell_and_leaves_out_only_columns_without_numbers(tmp_path):
    typo = "Date,Temp,Hum\n1981-01-01,20.7,50\n1981-01-02,17.9,5O\n1981-01-03,18.8,52\n"
    with pytest.raises(TimeSeriesError, match=r"^\S+: column 'Hum' is not numeric: line 3 holds '5O'$"):
        load_csv(write(tmp_path, typo), "Temp", ["all"])
    s = load_csv(write(tmp_path, GOOD), "temp", ["all"])
    assert s.columns == ["temp", "wind"] and s.report["excluded_columns"] == ["label"]
    assert load_csv(write(tmp_path, GOOD), "temp", ["wind"]).report["excluded_columns"] == []


def test_messages_name_the_file_line_after_blank_lines_and_multi_line_cells(tmp_path):
    blank = "date,temp\n2020-01-01,1\n\n   \n2020-01-02,x\n"
    with pytest.raises(TimeSeriesError, match="column 'temp' is not numeric: line 5 holds 'x'"):
        load_csv(write(tmp_path, blank), "temp")
    quoted = 'date,note,temp\n2020-01-01,"two\nlines",1\n\n2020-01-03,c,NA\n2020-01-04,d,3\n'
    with pytest.raises(TimeSeriesError, match="'temp': 1 missing in 1 run\\(s\\), first at line 5"):
        load_csv(write(tmp_path, quoted), "temp")
    with pytest.raises(TimeSeriesError, match="time goes back in time at line 6"):
        load_csv(write(tmp_path, quoted.replace("2020-01-04", "2020-01-02")), "temp")


def test_trailing_commas_and_ragged_rows(tmp_path):
    trail = "Date,Temp\n1981-01-01,20.7,\n1981-01-02,17.9,\n1981-01-03,1, \n"
    s = load_csv(write(tmp_path, trail), "Temp")
    np.testing.assert_array_equal(s.values[:, 0], [20.7, 17.9, 1.0])
    assert [str(t.date()) for t in s.times] == ["1981-01-01", "1981-01-02", "1981-01-03"]
    ragged = "Date,Temp\n1981-01-01,20.7\n\n1981-01-02,17.9,5\n"
    with pytest.raises(TimeSeriesError, match=r"line 4: 3 fields, the header has 2 \('5' lies past the last column\)"):
        load_csv(write(tmp_path, ragged), "Temp")
    short = "date,v,w\n2020-01-01,1,5\n2020-01-02,2,6\n2020-01-03,3\n"  # cut short, not a missing value
    with pytest.raises(TimeSeriesError, match=r"line 4: 2 fields, the header has 3 \(no 'w'\); write an empty cell"):
        load_csv(write(tmp_path, short), "v", ["w"], gaps="ffill")
    # Empty names ending the header name nothing: a line need not have their fields.
    s = load_csv(write(tmp_path, "Date,Temp,\n1981-01-01,20.7\n1981-01-02,17.9,\n"), "Temp")
    np.testing.assert_array_equal(s.values[:, 0], [20.7, 17.9])


def test_utc_offsets_that_change_are_compared_as_instants(tmp_path):
    # The night summer time starts in Berlin: consecutive hours, though the clock jumps from 01:59 to 03:00.
    dst = "time,v\n2020-03-29T01:00+01:00,1\n2020-03-29T03:00+02:00,2\n2020-03-29T04:00+02:00,3\n"
    s = load_csv(write(tmp_path, dst), "v")
    assert [str(t) for t in s.times] == ["2020-03-29 00:00:00+00:00", "2020-03-29 01:00:00+00:00",
                                         "2020-03-29 02:00:00+00:00"]
    assert s.report["step"] == "0 days 01:00:00" and s.report["time_gaps"] == 0
    same = "Date,Temp\n2020-01-01T00:00+01:00,1\n2020-01-01T01:00+02:00,2\n"  # one instant, twice
    with pytest.raises(TimeSeriesError, match="time repeats at line 3"):
        load_csv(write(tmp_path, same), "Temp")
    naive = "Date,Temp\n2020-01-01T00:00+01:00,1\n\n2020-01-01T02:00,2\n"
    with pytest.raises(TimeSeriesError, match=r"time column 'Date', line 4: '2020-01-01T02:00' has no UTC offset"):
        load_csv(write(tmp_path, naive), "Temp")


def test_values_in_messages_are_printed_plainly(tmp_path):
    years = "YEAR,v\n1700.0,0\n1701.0,1\n"
    with pytest.raises(TimeSeriesError) as e:
        load_csv(write(tmp_path, years), "v", time_col="YEAR")
    assert str(e.value).endswith("time column 'YEAR', line 2: '1700.0' is not a date/time")


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"Date,Temp\n1981-01-01,20.7\n1981-01-02,caf\xe9\n")
    with pytest.raises(TimeSeriesError, match=r"line 3: not UTF-8 text"):
        load_csv(path, "Temp")


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


def test_gaps_ffill_carries_the_last_observation_and_reports_trimmed_rows(tmp_path):
    s = load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="ffill")
    rep = s.report
    # Row 1 has no temp before it: nothing to carry, trimmed and counted. The last row's missing
    # temp takes the one before it.
    assert rep["trimmed_leading_rows"] == 1
    assert [str(t.date()) for t in s.times] == ["2020-01-02", "2020-01-03", "2020-01-04", "2020-01-05",
                                                "2020-01-07", "2020-01-08", "2020-01-09"]
    # temp 1.0 on the 2nd carried over the 3rd and 4th; wind 5 of the 5th carried to the 7th; temp 7.0 to the 9th.
    np.testing.assert_array_equal(s.values[:, 0], [1, 1, 1, 4, 6, 7, 7])
    np.testing.assert_array_equal(s.values[:, 1], [2, 3, 4, 5, 5, 8, 9])
    np.testing.assert_array_equal(s.filled, [[0, 0], [1, 0], [1, 0], [0, 0], [0, 1], [0, 0], [1, 0]])
    assert rep["filled_values"] == 4 and rep["filled_runs"] == 3 and rep["longest_filled_run"] == 2
    assert rep["time_gaps"] == 1  # the 6th is absent from the file, and stays absent
    assert not np.isnan(s.values).any()


def test_gaps_ffill_never_reads_a_later_row():
    """Whatever the rows after row k hold (values, gaps, where the gaps are), rows 0..k come out the same."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2020-01-01", periods=60, freq="h")
    values = rng.normal(size=(60, 2))
    values[rng.random((60, 2)) < 0.3] = np.nan
    values[0] = [1.0, 2.0]
    _, base, base_filled, _ = apply_gap_policy(times, values, ["a", "b"], "ffill")
    for k in (5, 20, 41):
        later = values.copy()
        later[k + 1:] = rng.normal(size=(60 - k - 1, 2))
        later[k + 1:][rng.random((60 - k - 1, 2)) < 0.5] = np.nan
        _, got, got_filled, _ = apply_gap_policy(times, later, ["a", "b"], "ffill")
        np.testing.assert_array_equal(got[:k + 1], base[:k + 1])
        np.testing.assert_array_equal(got_filled[:k + 1], base_filled[:k + 1])


def test_gaps_ffill_refuses_runs_longer_than_max_gap(tmp_path):
    with pytest.raises(TimeSeriesError, match=r"2 missing values in a row .*\(more than --max-gap 1\)"):
        load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="ffill", max_gap=1)
    assert len(load_csv(write(tmp_path, GAPPY), "temp", ["wind"], gaps="ffill", max_gap=2)) == 7


def test_gap_policy_name_is_checked(tmp_path):
    with pytest.raises(TimeSeriesError, match="gaps: expected one of"):
        apply_gap_policy(None, np.zeros((2, 1)), ["a"], "drop")
    # The removed name says what to use instead, before the file is read.
    with pytest.raises(TimeSeriesError, match=r"gaps: 'interpolate' was removed: .* use 'ffill'"):
        load_csv(tmp_path / "absent.csv", "temp", gaps="interpolate")


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
    s = load_csv(POLLUTION, "pm2.5", ["DEWP", "TEMP", "PRES", "Iws"], gaps="ffill")
    assert s.report["time_columns"] == ["year", "month", "day", "hour"]
    assert s.report["trimmed_leading_rows"] == 24
    assert len(s) == 43824 - 24 and s.report["filled_values"] == 2067 - 24 == s.filled.sum()
    assert s.filled[:, 1:].sum() == 0 and not s.filled[0, 0]  # only pm2.5 has gaps
    assert s.report["step"] == "0 days 01:00:00" and s.report["time_gaps"] == 0
    assert not np.isnan(s.values).any()
    assert seasonal_period(s) == 24
    with pytest.raises(TimeSeriesError, match="column 'cbwd' is not numeric: line 2 holds 'NW'"):
        load_csv(POLLUTION, "pm2.5", ["cbwd"], gaps="ffill")
    every = load_csv(POLLUTION, "pm2.5", ["all"], gaps="ffill")
    assert "cbwd" not in every.columns and every.report["excluded_columns"] == ["cbwd"]


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


def test_times_are_read_in_one_format(tmp_path):
    # Day-first dates: read each on its own, 01/02 would be January 2nd and 13/02 February 13th.
    dayfirst = "date,v\n" + "".join(f"{d:02d}/02/2020,{d}\n" for d in range(1, 15))
    with pytest.raises(TimeSeriesError, match=r"^\S+: time column 'date', line 14: '13/02/2020' is not written like "
                                              r"line 2 \('01/02/2020', read as %m/%d/%Y\); write every time in one "
                                              r"format \(ISO 8601.*--time-col$"):
        load_csv(write(tmp_path, dayfirst), "v")
    with pytest.raises(TimeSeriesError, match="line 4: '13/02/2020' is not written like line 2"):
        load_csv(write(tmp_path, "date,v\n01/02/2020,1\n02/02/2020,2\n13/02/2020,3\n"), "v")
    # One format throughout: day-first is told by the first date; ISO 8601 at any precision.
    s = load_csv(write(tmp_path, "date,v\n13/02/2020,1\n14/02/2020,2\n01/03/2020,3\n"), "v")
    assert [str(t.date()) for t in s.times] == ["2020-02-13", "2020-02-14", "2020-03-01"]
    s = load_csv(write(tmp_path, "time,v\n2020-01-01,1\n2020-01-01 06:00,2\n2020-01-01T07:30:00.5,3\n"), "v")
    assert [str(t) for t in s.times] == ["2020-01-01 00:00:00", "2020-01-01 06:00:00", "2020-01-01 07:30:00.500000"]
    with pytest.raises(TimeSeriesError, match="line 3: 'soon' is not a date/time"):
        load_csv(write(tmp_path, "time,v\n2020-01-01,1\nsoon,2\n2020-01-01 06:00,3\n"), "v")


def test_time_format_reads_every_time_one_way(tmp_path):
    dayfirst = write(tmp_path, "date,v\n" + "".join(f"{d:02d}/02/2020,{d}\n" for d in range(1, 15)))
    s = load_csv(dayfirst, "v", time_format="%d/%m/%Y")
    assert str(s.times[0].date()) == "2020-02-01" and str(s.times[12].date()) == "2020-02-13"
    with pytest.raises(TimeSeriesError, match=r"line 3: '2020-02-02' is not written as --time-format '%d/%m/%Y'$"):
        load_csv(write(tmp_path, "date,v\n01/02/2020,1\n2020-02-02,2\n"), "v", time_format="%d/%m/%Y")
    # A format pandas cannot infer from the first value: dateutil would otherwise read each value alone.
    s = load_csv(write(tmp_path, "t,v\n2020.032 06h,1\n2020.033 06h,2\n"), "v", time_col="t", time_format="%Y.%j %Hh")
    assert [str(t) for t in s.times] == ["2020-02-01 06:00:00", "2020-02-02 06:00:00"]
    # Offsets that change (summer time) are compared in UTC, as without a format.
    dst = "time,v\n29.03.2020 01:00 +0100,1\n29.03.2020 03:00 +0200,2\n"
    s = load_csv(write(tmp_path, dst), "v", time_format="%d.%m.%Y %H:%M %z")
    assert s.report["step"] == "0 days 01:00:00"
    for bad, message in [("%Q", "'Q' is a bad directive"), ("dd/mm/yyyy", "expected strftime codes"),
                         ("100%%", "expected strftime codes"), ("%Y %Y", "redefinition of group name")]:
        with pytest.raises(TimeSeriesError, match=f"^--time-format.*{message}"):
            load_csv(dayfirst, "v", time_format=bad)
    calendar = write(tmp_path, "year,month,v\n2010,1,5\n2010,2,6\n")
    with pytest.raises(TimeSeriesError, match=r"--time-format reads one time column.*\['year', 'month'\]"):
        load_csv(calendar, "v", time_format="%Y")


@pytest.mark.parametrize("text, message", [
    ("No,year,month,day,hour,v\n1,2010,1,1,,5\n2,2010,1,1,1,6\n", "time column 'hour' is empty at line 2"),
    ("No,year,month,day,hour,v\n1,2010,1,1,0,5\n\n2,2010,1,,1,6\n3,2010,1,1,2,7\n", "time column 'day' is empty at line 4"),
    ("year,month,v\n2010,,5\n", "time column 'month' is empty at line 2"),
])
def test_an_empty_calendar_cell_is_named(tmp_path, text, message):
    with pytest.raises(TimeSeriesError, match=f"^\\S+: {message}$"):
        load_csv(write(tmp_path, text), "v")


def test_a_column_named_twice_is_refused(tmp_path):
    with pytest.raises(TimeSeriesError, match=r"^\S+: line 1: the header names column 'v' 2 times; give each column"):
        load_csv(write(tmp_path, "date,v,v\n2020-01-01,1,100\n2020-01-02,2,200\n"), "v", ["all"])
    s = load_csv(write(tmp_path, "date,v,,\n2020-01-01,1,,\n2020-01-02,2,,\n"), "v", ["all"])  # empty names: none
    assert s.columns == ["v"]


def test_a_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    import csv

    limit = csv.field_size_limit()
    note = "x" * (limit + 10)
    s = load_csv(write(tmp_path, f'date,note,v\n2020-01-01,"{note}",1\n2020-01-02,y,2\n'), "v")
    assert s.values[:, 0].tolist() == [1.0, 2.0]
    assert csv.field_size_limit() == limit  # put back for every other reader
