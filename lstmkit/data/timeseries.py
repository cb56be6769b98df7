"""Time series from CSV files (a date/time column and numeric columns) or the embedded default.

Everything is checked before anything is used, and nothing is dropped or made up silently:

- the time column is parsed as dates; times must be strictly increasing (a file out of order
  or with a repeated time is refused, never re-sorted);
- the chosen columns must exist and hold numbers; a value that is not a number is reported
  with its column, its line in the file and the value itself;
- missing values (`NA`, empty cells) follow an explicit policy, `gaps`:
  "error" refuses the file and says where the first gaps are; "interpolate" fills each run of
  missing values linearly in time between the observations around it (runs longer than
  `max_gap` rows are refused) and, because nothing can be interpolated before a column's first
  observation or after its last, trims those leading/trailing rows. Every filled run and trimmed
  row is counted in `Series.report`, which the apps print and save.

Rows that are missing altogether (a day absent from a daily file) are never invented: the
series keeps the rows it has, and `Series.report` counts those gaps in time (`time_gaps`).

The embedded default, "seattle-weather", is the copy that ships inside `vega_datasets`
(`vega_datasets.local_data.seattle_weather()`: daily 2012-2015, NOAA, public domain); its
downloading loaders are never used.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

GAP_POLICIES = ("error", "interpolate")
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


def _line(row: int) -> int:
    """The 1-based line of data row `row` in a CSV file with one header line."""
    return row + 2


def _time_index(df: pd.DataFrame, time_col: str | None, where: str) -> tuple[pd.DatetimeIndex, list[str]]:
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
    raw = df[col]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise TimeSeriesError(f"{where}: time column {col!r} is empty at line {_line(row)}")
    text = raw.astype(str)
    parsed = pd.to_datetime(text, errors="coerce")
    if parsed.isna().any():  # not one format throughout: parse each value on its own
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TimeSeriesError(f"{where}: time column {col!r}, line {_line(row)}: {raw.iloc[row]!r} is not a date/time")
    return pd.DatetimeIndex(parsed).as_unit("ns"), [col]


def _check_order(times: pd.DatetimeIndex, where: str) -> None:
    steps = np.diff(times.asi8)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "repeats" if steps[row - 1] == 0 else "goes back in time"
        raise TimeSeriesError(
            f"{where}: time {what} at line {_line(row)} ({times[row]} after {times[row - 1]}); "
            "rows must be in strictly increasing time order (the file is never re-sorted)")


def _numeric(df: pd.DataFrame, columns: list[str], where: str) -> np.ndarray:
    """The columns as float64 with NaN where the file had NA / empty cells; refuses non-numbers."""
    out = np.empty((len(df), len(columns)))
    for j, col in enumerate(columns):
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna().to_numpy() & ~raw.isna().to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)
            raise TimeSeriesError(
                f"{where}: column {col!r} is not numeric: line {_line(int(rows[0]))} holds {raw.iloc[rows[0]]!r}"
                + (f" ({len(rows)} such values)" if len(rows) > 1 else ""))
        values = num.to_numpy(dtype=float)
        inf = np.isinf(values)
        if inf.any():
            raise TimeSeriesError(f"{where}: column {col!r}, line {_line(int(np.flatnonzero(inf)[0]))}: infinite value")
        out[:, j] = values
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in a 1-D mask."""
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def apply_gap_policy(times: pd.DatetimeIndex, values: np.ndarray, columns: list[str], gaps: str,
                     max_gap: int = 0, where: str = "series") -> tuple[pd.DatetimeIndex, np.ndarray, dict]:
    """Apply `gaps` ("error" | "interpolate") to NaN cells; returns (times, values, report).

    interpolate: interior runs of NaN are filled linearly in time (runs longer than `max_gap`
    rows are refused when max_gap > 0); rows before a column's first or after its last
    observation cannot be interpolated and are trimmed, and counted in the report.
    """
    if gaps not in GAP_POLICIES:
        raise TimeSeriesError(f"gaps: expected one of {list(GAP_POLICIES)}, got {gaps!r}")
    missing = np.isnan(values)
    report: dict = {"gap_policy": gaps, "missing_values": int(missing.sum()), "filled_runs": 0,
                    "filled_values": 0, "longest_filled_run": 0, "trimmed_leading_rows": 0,
                    "trimmed_trailing_rows": 0}
    if not missing.any():
        return times, values, report
    if gaps == "error":
        parts = []
        for j, col in enumerate(columns):
            runs = _runs(missing[:, j])
            if runs:
                first = ", ".join(f"lines {_line(s)}-{_line(e - 1)}" if e - s > 1 else f"line {_line(s)}"
                                  for s, e in runs[:3])
                parts.append(f"{col!r}: {int(missing[:, j].sum())} missing in {len(runs)} run(s), first at {first}")
        raise TimeSeriesError(f"{where}: missing values (NA or empty) with --gaps error: " + "; ".join(parts)
                              + ". Use --gaps interpolate to fill them linearly in time")
    observed = ~missing
    if not observed.any(axis=0).all():
        empty = [c for c, ok in zip(columns, observed.any(axis=0)) if not ok]
        raise TimeSeriesError(f"{where}: column(s) {empty} have no value at all")
    first = int(max(np.argmax(observed[:, j]) for j in range(len(columns))))
    last = int(min(len(values) - 1 - np.argmax(observed[::-1, j]) for j in range(len(columns))))
    if first > last:
        raise TimeSeriesError(f"{where}: the columns {columns} are never all observed in the same span")
    report["trimmed_leading_rows"] = first
    report["trimmed_trailing_rows"] = len(values) - 1 - last
    times, values = times[first:last + 1], values[first:last + 1].copy()
    t = times.asi8.astype(float)
    for j, col in enumerate(columns):
        col_missing = np.isnan(values[:, j])
        runs = _runs(col_missing)
        for s, e in runs:
            if max_gap and e - s > max_gap:
                raise TimeSeriesError(
                    f"{where}: column {col!r} has {e - s} missing values in a row from {times[s]} "
                    f"(more than --max-gap {max_gap}); refusing to interpolate that far")
        if runs:
            ok = ~col_missing
            values[col_missing, j] = np.interp(t[col_missing], t[ok], values[ok, j])
            report["filled_runs"] += len(runs)
            report["filled_values"] += int(col_missing.sum())
            report["longest_filled_run"] = max(report["longest_filled_run"], max(e - s for s, e in runs))
    return times, values, report


def _step_report(times: pd.DatetimeIndex) -> dict:
    """The usual time step, and how many steps are longer than 1.5 of it (rows absent from the file)."""
    if len(times) < 2:
        return {"step": None, "time_gaps": 0}
    steps = pd.Series(np.diff(times.asi8))
    usual = int(steps.mode().iloc[0])
    return {"step": str(pd.Timedelta(usual)), "time_gaps": int((steps > 1.5 * usual).sum()),
            "largest_step": str(pd.Timedelta(int(steps.max())))}


def from_frame(df: pd.DataFrame, target: str, features: list[str] | None = None, *, time_col: str | None = None,
               gaps: str = "error", max_gap: int = 0, source: str = "frame", sha256: str | None = None) -> Series:
    """A `Series` from a DataFrame of raw columns (what `load_csv` reads), with every check applied.

    features: the input columns besides the target (the target is always an input);
    None or []: the target alone; ["all"]: every numeric column but the time column(s).
    sha256: the hash of the bytes `df` was read from, kept in the Series (resumed runs compare it).
    """
    where = source
    times, time_cols = _time_index(df, time_col, where)
    if target in time_cols:
        raise TimeSeriesError(f"{where}: --target {target!r} is the time column")
    features = list(features or [])
    if features == ["all"]:
        features = [c for c in df.columns if c not in time_cols and c != target
                    and pd.api.types.is_numeric_dtype(df[c])]
    columns = [target] + [c for c in features if c != target]
    if len(set(columns)) != len(columns):
        raise TimeSeriesError(f"{where}: --features names a column twice: {features}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TimeSeriesError(f"{where}: no column(s) {missing}; columns are {list(df.columns)}")
    if any(c in time_cols for c in columns):
        raise TimeSeriesError(f"{where}: --features includes the time column(s) {time_cols}")
    values = _numeric(df, columns, where)
    _check_order(times, where)
    times, values, report = apply_gap_policy(times, values, columns, gaps, max_gap, where)
    report.update(_step_report(times), rows=len(values), time_columns=time_cols)
    return Series(times, values, columns, source, report, sha256)


def load_csv(path: str | Path, target: str, features: list[str] | None = None, *, time_col: str | None = None,
             gaps: str = "error", max_gap: int = 0) -> Series:
    """Read a CSV file (header line, a date/time column, numeric columns) into a checked `Series`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv: no file at {str(path)!r}")
    # One read: the hash is of exactly the bytes parsed, even if the file changes meanwhile.
    raw = path.read_bytes()
    try:
        df = pd.read_csv(io.BytesIO(raw), skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TimeSeriesError(f"{path}: not a readable CSV file ({str(e).strip()})") from None
    if df.empty:
        raise TimeSeriesError(f"{path}: no data rows")
    return from_frame(df, target, features, time_col=time_col, gaps=gaps, max_gap=max_gap, source=str(path),
                      sha256=hashlib.sha256(raw).hexdigest())


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
