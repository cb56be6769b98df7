"""Time series from CSV files (a date/time column and numeric columns) or the embedded default.

Everything is checked before anything is used, and nothing is dropped or made up silently:

- the time column is parsed as dates, all in one format: `time_format` (strftime codes) where
  given, else the one inferred from the first value (a date written otherwise than the others is
  refused, never read on its own); times must be strictly increasing (a file out of
  order or with a repeated time is refused, never re-sorted);
- a column name may appear once in the header, and every line has a field for each named
  column (a line cut short is refused; an empty cell is a missing value); the chosen columns
  must exist and hold numbers;
  a value that is not a number is reported with its column, its line in the file and the value itself;
- missing values (`NA`, empty cells) follow an explicit policy, `gaps`:
  "error" refuses the file and says where the first gaps are; "ffill" gives each missing value
  the column's last observation before it (runs longer than `max_gap` rows are refused) and,
  because nothing can be carried into the rows before a column's first observation, trims those
  leading rows. A filled value never comes from a later row, so nothing at or before a row
  depends on the rows after it. `Series.filled` marks every filled cell (a forecaster must not
  score on them), and every filled run and trimmed row is counted in `Series.report`, which the
  apps print and save.
- line numbers in messages are the file's own lines, blank lines and cells quoted across
  lines included.

Rows that are missing altogether (a day absent from a daily file) are never invented: the
series keeps the rows it has, and `Series.report` counts those gaps in time (`time_gaps`).

The embedded default, "seattle-weather", is the copy that ships inside `vega_datasets`
(`vega_datasets.local_data.seattle_weather()`: daily 2012-2015, NOAA, public domain); its
downloading loaders are never used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from lstmkit.data.csvfields import long_fields

GAP_POLICIES = ("error", "ffill")
DATASETS = ("seattle-weather",)
# Column names taken as the time column when --time-col is not given (case-insensitive).
TIME_NAMES = ("date", "datetime", "time", "timestamp", "ds", "month", "day", "period")
# Columns that together make a timestamp (pollution.csv's layout), when no time column exists.
CALENDAR_PARTS = ("year", "month", "day", "hour", "minute")


class TimeSeriesError(ValueError):
    """A time series that cannot be used as asked; the message says what and where."""


@dataclass
class Series:
    """Rows in time order: `values[i, j]` is column `columns[j]` at time `times[i]`."""

    times: pd.DatetimeIndex
    values: np.ndarray  # (N, F) float64, no NaN
    filled: np.ndarray  # (N, F) bool: True where a missing value was filled by the gap policy
    columns: list[str]  # the target first, then the other features
    source: str  # the file path or the dataset name
    report: dict = field(default_factory=dict)  # gaps filled, rows trimmed, time steps
    sha256: str | None = None  # of the bytes the series was read from; None for a DataFrame given directly

    @property
    def target(self) -> str:
        return self.columns[0]

    def __len__(self) -> int:
        return len(self.values)


def parse_columns(text: str | None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; None or '' -> []."""
    if not text:
        return []
    cols = [c.strip() for c in text.split(",")]
    if any(not c for c in cols):
        raise TimeSeriesError(f"--features: empty column name in {text!r}")
    return cols


def check_gap_policy(gaps: str) -> None:
    if gaps == "interpolate":  # the name configs written before ffill carry
        raise TimeSeriesError("gaps: 'interpolate' was removed: it filled a gap from the observation after it, so "
                              "windows read values from their future; use 'ffill' (the last observation carried "
                              "forward)")
    if gaps not in GAP_POLICIES:
        raise TimeSeriesError(f"gaps: expected one of {list(GAP_POLICIES)}, got {gaps!r}")


def _lines(n: int, lines: np.ndarray | None) -> np.ndarray:
    """The file line of each of n rows: `lines`, or one header line then a line per row."""
    return np.arange(n) + 2 if lines is None else np.asarray(lines)


def check_time_format(time_format: str | None) -> None:
    """Refuse a --time-format that reads no time: one without a % code (%% aside), with a code
    strptime lacks, or with a code twice."""
    if time_format is None:
        return
    if not isinstance(time_format, str) or not re.search("%[^%]", time_format.replace("%%", "")):
        raise TimeSeriesError(f"--time-format: expected strftime codes such as '%d/%m/%Y', got {time_format!r}")
    try:
        pd.to_datetime(pd.Series(["2000"]), errors="coerce", format=time_format)
    except (ValueError, re.error) as e:  # re.error: pandas builds a regular expression, a group per code
        raise TimeSeriesError(f"--time-format {time_format!r}: {e}") from None


def _one_format(text: pd.Series, utc: bool, time_format: str | None) -> pd.Series:
    """Every value read in one format: `time_format` where given; else the one pandas infers from the
    first value, or ISO 8601 (one convention whatever the precision: 2020-01-01, 2020-01-01 06:00)
    where that reads more of them; NaT where a value is not in it."""
    if time_format is not None:
        return pd.to_datetime(text, errors="coerce", format=time_format, utc=utc)
    parsed = pd.to_datetime(text, errors="coerce", utc=utc)
    if parsed.isna().any():
        iso = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=utc)
        if iso.notna().sum() > parsed.notna().sum():
            return iso
    return parsed


def _parse_times(text: pd.Series, col: str, where: str, lines: np.ndarray, time_format: str | None) -> pd.Series:
    """Parsed times, all in one format (`_one_format`), NaT where a value is not a date/time."""
    try:
        parsed, utc = _one_format(text, False, time_format), False
    except ValueError:  # pandas' "Mixed timezones detected": UTC offsets differ between rows (summer time, say)
        # Times with an offset name instants, which compare and order in UTC; one without an offset
        # among them names none. A --time-format with %z reads none without an offset.
        parsed, utc = _one_format(text, True, time_format), True
        for row in np.flatnonzero(parsed.notna().to_numpy()) if time_format is None else ():
            if pd.Timestamp(text.iloc[row]).tz is None:
                raise TimeSeriesError(f"{where}: time column {col!r}, line {lines[row]}: {text.iloc[row]!r} has no "
                                      "UTC offset while other times have one, so it names no instant among them")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad) and time_format is not None:
        raise TimeSeriesError(f"{where}: time column {col!r}, line {lines[bad[0]]}: {text.iloc[bad[0]]!r} is not "
                              f"written as --time-format {time_format!r}")
    # A date written otherwise than the others is refused, not read on its own: day-first dates
    # would then be read month-first where the day is 12 or less, and day-first elsewhere.
    if len(bad) and not pd.isna(pd.to_datetime(text.iloc[bad[0]], errors="coerce", format="mixed", utc=utc)):
        fmt = guess_datetime_format(text.iloc[0])
        raise TimeSeriesError(
            f"{where}: time column {col!r}, line {lines[bad[0]]}: {text.iloc[bad[0]]!r} is not written like line "
            f"{lines[0]} ({text.iloc[0]!r}{f', read as {fmt}' if fmt else ''}); write every time in one format "
            "(ISO 8601, such as 2020-02-13, reads one way only), give the format with --time-format "
            "(such as %d/%m/%Y), or name the time column with --time-col")
    return parsed


def _refuse_empty(df: pd.DataFrame, cols: list[str], where: str, lines: np.ndarray) -> None:
    """Refuse an empty cell in the time column(s), naming the first: read as NaT, it would pass
    unseen in a one-row file, and otherwise the time-order check would blame the line after it."""
    empty = df[cols].isna().to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty.any(axis=1))[0])
        col = cols[int(np.flatnonzero(empty[row])[0])]
        raise TimeSeriesError(f"{where}: time column {col!r} is empty at line {lines[row]}")


def _time_index(df: pd.DataFrame, time_col: str | None, where: str, lines: np.ndarray,
                time_format: str | None) -> tuple[pd.DatetimeIndex, list[str]]:
    """The parsed time of every row and the columns it was made from."""
    if time_col is not None:
        if time_col not in df.columns:
            raise TimeSeriesError(f"{where}: no time column {time_col!r}; columns are {list(df.columns)}")
        candidates = [time_col]
    else:
        lower = {str(c).lower(): c for c in df.columns}
        candidates = [lower[n] for n in TIME_NAMES if n in lower]
        parts = [lower[p] for p in CALENDAR_PARTS if p in lower]
        if "year" in lower and len(parts) >= 2 and (not candidates or candidates[0] in parts):
            # year, month[, day[, hour[, minute]]] columns: build the timestamp from them.
            if time_format is not None:
                raise TimeSeriesError(f"{where}: --time-format reads one time column, and the times here are built "
                                      f"from columns {parts}; name the column it reads with --time-col")
            _refuse_empty(df, parts, where, lines)
            frame = {p: df[lower[p]] for p in CALENDAR_PARTS if p in lower}
            frame.setdefault("month", 1)
            frame.setdefault("day", 1)
            try:
                times = pd.to_datetime(pd.DataFrame(frame), errors="raise")
            except (ValueError, TypeError) as e:
                raise TimeSeriesError(f"{where}: columns {parts} do not make valid dates ({e})") from None
            return pd.DatetimeIndex(times).as_unit("ns"), parts
        if not candidates:
            first = df.columns[0]
            if df[first].dtype == object or pd.api.types.is_string_dtype(df[first]):
                candidates = [first]
        if not candidates:
            raise TimeSeriesError(
                f"{where}: no date/time column found (looked for {', '.join(TIME_NAMES)} or year/month/day "
                f"columns); name it with --time-col. Columns are {list(df.columns)}")
    col = candidates[0]
    _refuse_empty(df, [col], where, lines)
    text = df[col].astype(str)
    parsed = _parse_times(text, col, where, lines, time_format)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TimeSeriesError(f"{where}: time column {col!r}, line {lines[row]}: {text.iloc[row]!r} is not a date/time")
    return pd.DatetimeIndex(parsed).as_unit("ns"), [col]


def _check_order(times: pd.DatetimeIndex, where: str, lines: np.ndarray) -> None:
    steps = np.diff(times.asi8)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "repeats" if steps[row - 1] == 0 else "goes back in time"
        raise TimeSeriesError(
            f"{where}: time {what} at line {lines[row]} ({times[row]} after {times[row - 1]}); "
            "rows must be in strictly increasing time order (the file is never re-sorted)")


def _numeric(df: pd.DataFrame, columns: list[str], where: str, lines: np.ndarray) -> np.ndarray:
    """The columns as float64 with NaN where the file had NA / empty cells; refuses non-numbers."""
    out = np.empty((len(df), len(columns)))
    for j, col in enumerate(columns):
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna().to_numpy() & ~raw.isna().to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)
            raise TimeSeriesError(
                f"{where}: column {col!r} is not numeric: line {lines[rows[0]]} holds {str(raw.iloc[rows[0]])!r}"
                + (f" ({len(rows)} such values)" if len(rows) > 1 else ""))
        values = num.to_numpy(dtype=float)
        inf = np.isinf(values)
        if inf.any():
            raise TimeSeriesError(f"{where}: column {col!r}, line {lines[np.flatnonzero(inf)[0]]}: infinite value")
        out[:, j] = values
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in a 1-D mask."""
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def apply_gap_policy(times: pd.DatetimeIndex, values: np.ndarray, columns: list[str], gaps: str,
                     max_gap: int = 0, where: str = "series", lines: np.ndarray | None = None,
                     ) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, dict]:
    """Apply `gaps` ("error" | "ffill") to NaN cells; returns (times, values, filled, report).

    ffill: every missing value takes its column's last observation before it, never a later
    one (runs longer than `max_gap` rows are refused when max_gap > 0); rows before every column
    has been observed have nothing to carry and are trimmed, and counted in the report.
    `filled` (N, F) is True at the cells that were filled. `lines`: the file line of each row,
    for messages (default: one header line, then a line per row).
    """
    check_gap_policy(gaps)
    lines = _lines(len(values), lines)
    missing = np.isnan(values)
    report: dict = {"gap_policy": gaps, "missing_values": int(missing.sum()), "filled_runs": 0,
                    "filled_values": 0, "longest_filled_run": 0, "trimmed_leading_rows": 0}
    if not missing.any():
        return times, values, missing, report
    if gaps == "error":
        parts = []
        for j, col in enumerate(columns):
            runs = _runs(missing[:, j])
            if runs:
                first = ", ".join(f"lines {lines[s]}-{lines[e - 1]}" if e - s > 1 else f"line {lines[s]}"
                                  for s, e in runs[:3])
                parts.append(f"{col!r}: {int(missing[:, j].sum())} missing in {len(runs)} run(s), first at {first}")
        raise TimeSeriesError(f"{where}: missing values (NA or empty) with --gaps error: " + "; ".join(parts)
                              + ". Use --gaps ffill to carry the last observation forward")
    observed = ~missing
    if not observed.any(axis=0).all():
        empty = [c for c, ok in zip(columns, observed.any(axis=0)) if not ok]
        raise TimeSeriesError(f"{where}: column(s) {empty} have no value at all")
    first_seen = observed.argmax(axis=0)
    first = int(first_seen.max())
    report["trimmed_leading_rows"] = first
    rows = np.arange(len(values))
    # The last observed row at or before each row, per column (-1 before the first observation);
    # from row `first` on, every column has one.
    last_seen = np.maximum.accumulate(np.where(observed, rows[:, None], -1), axis=0)
    for j, col in enumerate(columns):
        # Runs that end before `first` are trimmed away; the others have an observation before them.
        runs = [(s, e) for s, e in _runs(missing[:, j]) if e > first]
        for s, e in runs:
            if max_gap and e - s > max_gap:
                raise TimeSeriesError(
                    f"{where}: column {col!r} has {e - s} missing values in a row from {times[s]} "
                    f"(more than --max-gap {max_gap}); refusing to carry a value that far")
        if runs:
            report["filled_runs"] += len(runs)
            report["filled_values"] += int(missing[first:, j].sum())
            report["longest_filled_run"] = max(report["longest_filled_run"], max(e - s for s, e in runs))
    values = values[last_seen[first:], np.arange(len(columns))]
    return times[first:], values, missing[first:], report


def _step_report(times: pd.DatetimeIndex) -> dict:
    """The usual time step, and how many steps are longer than 1.5 of it (rows absent from the file)."""
    if len(times) < 2:
        return {"step": None, "time_gaps": 0}
    steps = pd.Series(np.diff(times.asi8))
    usual = int(steps.mode().iloc[0])
    return {"step": str(pd.Timedelta(usual)), "time_gaps": int((steps > 1.5 * usual).sum()),
            "largest_step": str(pd.Timedelta(int(steps.max())))}


def from_frame(df: pd.DataFrame, target: str, features: list[str] | None = None, *, time_col: str | None = None,
               time_format: str | None = None, gaps: str = "error", max_gap: int = 0, source: str = "frame",
               sha256: str | None = None, lines: np.ndarray | None = None) -> Series:
    """A `Series` from a DataFrame of raw columns (what `load_csv` reads), with every check applied.

    features: the input columns besides the target (the target is always an input);
    None or []: the target alone; ["all"]: every column but the time column(s) that holds at least
    one number (a column with none, such as a wind direction, is left out and named in
    `report["excluded_columns"]`; a stray non-number in the others is reported as for a named column).
    time_format: strftime codes every time is written in (such as "%d/%m/%Y"); None: inferred.
    sha256: the hash of the bytes `df` was read from, kept in the Series (resumed runs compare it).
    lines: the file line each row starts on, for messages (default: one header line, then a line per row).
    """
    where = source
    lines = _lines(len(df), lines)
    check_time_format(time_format)
    times, time_cols = _time_index(df, time_col, where, lines, time_format)
    if target in time_cols:
        raise TimeSeriesError(f"{where}: --target {target!r} is the time column")
    features = list(features or [])
    excluded = []
    if features == ["all"]:
        others = [c for c in df.columns if c not in time_cols and c != target]
        features = [c for c in others if pd.to_numeric(df[c], errors="coerce").notna().any()]
        excluded = [c for c in others if c not in features]
    columns = [target] + [c for c in features if c != target]
    if len(set(columns)) != len(columns):
        raise TimeSeriesError(f"{where}: --features names a column twice: {features}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TimeSeriesError(f"{where}: no column(s) {missing}; columns are {list(df.columns)}")
    if any(c in time_cols for c in columns):
        raise TimeSeriesError(f"{where}: --features includes the time column(s) {time_cols}")
    values = _numeric(df, columns, where, lines)
    _check_order(times, where, lines)
    times, values, filled, report = apply_gap_policy(times, values, columns, gaps, max_gap, where, lines)
    report.update(_step_report(times), rows=len(values), time_columns=time_cols, excluded_columns=excluded)
    return Series(times, values, filled, columns, source, report, sha256)


def _records(path: Path, raw: bytes) -> tuple[str, np.ndarray]:
    """The file's records rewritten one per line, and the line of the file each one starts on.

    pandas skips blank lines and reads quoted cells across lines, so its row numbers are not the
    file's lines; the csv module's reader says where every record starts. Empty fields past the
    header's (a comma at the end of each line) are dropped, so pandas never takes the first
    column for an index; a non-empty one is refused, and so is a record without a field for
    every named column (a line cut short)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TimeSeriesError(f"{path}: line {line}: not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header, records, lines = None, [], []
    start = 1
    with long_fields():  # a long text cell is still one valid field
        try:
            for record in reader:
                if record in ([], [""]):  # a blank line, or one of spaces
                    pass
                elif header is None:
                    header = record
                    # pandas would rename a second 'v' to 'v.1', a name the file does not have. Empty names
                    # (a comma ending the header) name nothing.
                    twice = [c for c in dict.fromkeys(header) if c and header.count(c) > 1]
                    if twice:
                        raise TimeSeriesError(f"{path}: line {start}: the header names column {twice[0]!r} "
                                              f"{header.count(twice[0])} times; give each column its own name")
                    named = max((k + 1 for k, c in enumerate(header) if c.strip()), default=0)
                else:
                    extra = [f for f in record[len(header):] if f.strip()]
                    if extra:
                        raise TimeSeriesError(f"{path}: line {start}: {len(record)} fields, the header has {len(header)} "
                                              f"({extra[0]!r} lies past the last column)")
                    if len(record) < named:  # a line cut short: its missing cells are not NA
                        raise TimeSeriesError(f"{path}: line {start}: {len(record)} fields, the header has {named} "
                                              f"(no {header[len(record)]!r}); write an empty cell for a missing value")
                    records.append(record[:len(header)])
                    lines.append(start)
                start = reader.line_num + 1
        except csv.Error as e:
            raise TimeSeriesError(f"{path}: line {start}: not a readable CSV record ({e})") from None
    if header is None:
        raise TimeSeriesError(f"{path}: the file is empty")
    out = io.StringIO()
    csv.writer(out).writerows([header, *records])
    return out.getvalue(), np.asarray(lines, dtype=np.int64)


def load_csv(path: str | Path, target: str, features: list[str] | None = None, *, time_col: str | None = None,
             time_format: str | None = None, gaps: str = "error", max_gap: int = 0) -> Series:
    """Read a CSV file (header line, a date/time column, numeric columns) into a checked `Series`."""
    check_gap_policy(gaps)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv: no file at {str(path)!r}")
    # One read: the hash is of exactly the bytes parsed, even if the file changes meanwhile.
    raw = path.read_bytes()
    text, lines = _records(path, raw)
    df = pd.read_csv(io.StringIO(text), index_col=False)
    if df.empty:
        raise TimeSeriesError(f"{path}: no data rows")
    return from_frame(df, target, features, time_col=time_col, time_format=time_format, gaps=gaps, max_gap=max_gap,
                      source=str(path), sha256=hashlib.sha256(raw).hexdigest(), lines=lines)


def load_dataset(name: str, target: str | None = None, features: list[str] | None = None, *,
                 gaps: str = "error", max_gap: int = 0) -> Series:
    """An embedded dataset by name. "seattle-weather": target temp_max, default features all four
    numeric columns (precipitation, temp_max, temp_min, wind)."""
    if name != "seattle-weather":
        raise TimeSeriesError(f"dataset: expected one of {list(DATASETS)}, got {name!r}")
    from vega_datasets import local_data  # the copy inside the package; never vega_datasets.data

    df = local_data.seattle_weather().drop(columns=["weather"])
    # The packaged file's bytes: a vega_datasets upgrade that changes them changes the data too.
    sha256 = hashlib.sha256(local_data.seattle_weather.raw()).hexdigest()
    target = target or "temp_max"
    if features is None:
        features = ["all"]
    return from_frame(df, target, features, time_col="date", gaps=gaps, max_gap=max_gap, source=name, sha256=sha256)


def seasonal_period(series: Series) -> int:
    """One year (or one day for sub-daily data) in rows, from the usual time step; 1 if unknown."""
    if len(series) < 2:
        return 1
    step = pd.Timedelta(int(pd.Series(np.diff(series.times.asi8)).mode().iloc[0]))
    day = pd.Timedelta(days=1)
    if step < day:
        return max(1, int(round(day / step)))  # hourly -> 24
    if step == day:
        return 365
    if step == pd.Timedelta(days=7):
        return 52
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        return 12
    if pd.Timedelta(days=89) <= step <= pd.Timedelta(days=92):
        return 4
    return 1


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    """A file-name-safe short form of a source name."""
    return _SAFE.sub("-", Path(text).stem if "/" in text or text.endswith(".csv") else text).strip("-") or "series"
