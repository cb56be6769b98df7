"""Chronological split, sliding windows inside each part, and scaling fitted on the training part.

Rows [0, N) are cut in time order into train [0, b1), validation [b1, b2) and test [b2, N).
A window with origin `o` (the last input row) reads rows o-window+1 .. o and predicts the
target at rows o+1 .. o+horizon. Windows are made inside one part only: no window's inputs
or targets cross a boundary, so the test targets are never seen, not even as inputs, before
the test part, and validation never sees the test part. A window whose targets hold a value the
gap policy filled in is left out of every part: a made-up value is neither trained on nor scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Row boundaries of the three parts: train [0, b1), val [b1, b2), test [b2, n)."""

    n: int
    b1: int
    b2: int

    def bounds(self, part: str) -> tuple[int, int]:
        return {"train": (0, self.b1), "val": (self.b1, self.b2), "test": (self.b2, self.n)}[part]


def chronological_split(n: int, val_fraction: float, test_fraction: float, window: int, horizon: int) -> Split:
    """Cut n rows by time; refuses (clearly) when a part cannot hold one window."""
    need = window + horizon
    if n < need:
        raise ValueError(f"series: {n} rows are too few for one window (--window {window} + --horizon {horizon} "
                         f"= {need} rows)")
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    split = Split(n, n - n_val - n_test, n - n_test)
    for part in PARTS:
        s, e = split.bounds(part)
        if e - s < need:
            raise ValueError(
                f"series: the {part} part has {e - s} rows ({n} rows in all), too few for one window "
                f"(--window {window} + --horizon {horizon} = {need} rows); use a longer series, a shorter "
                f"window or other --val-fraction/--test-fraction")
    return split


def window_origins(start: int, end: int, window: int, horizon: int, filled: np.ndarray | None = None) -> np.ndarray:
    """Every origin o with inputs [o-window+1, o] and targets [o+1, o+horizon] inside [start, end),
    but those whose targets hold a filled-in value (`filled`: (N,) bool, True at the target's filled rows)."""
    origin = np.arange(start + window - 1, end - horizon, dtype=np.int64)
    if filled is None:
        return origin
    seen = np.r_[0, np.cumsum(filled)]  # seen[r]: filled rows before row r
    return origin[seen[origin + horizon + 1] == seen[origin + 1]]


@dataclass
class Windows:
    x: np.ndarray  # (n, window, F): inputs, all columns, target first
    y: np.ndarray  # (n, horizon): the target at origin+1 .. origin+horizon
    origin: np.ndarray  # (n,) row index of each window's last input row

    def __len__(self) -> int:
        return len(self.origin)


def make_windows(values: np.ndarray, start: int, end: int, window: int, horizon: int,
                 filled: np.ndarray | None = None) -> Windows:
    """Windows of `values` (N, F, target first) lying entirely inside rows [start, end), without
    those whose targets hold a filled-in value (see `window_origins`)."""
    origin = window_origins(start, end, window, horizon, filled)
    idx_x = origin[:, None] + np.arange(-window + 1, 1)[None, :]  # (n, window)
    idx_y = origin[:, None] + np.arange(1, horizon + 1)[None, :]  # (n, horizon)
    return Windows(values[idx_x], values[idx_y, 0], origin)


@dataclass
class Scaler:
    """Per-column standardisation (x - mean) / std, fitted on the training rows only."""

    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)

    @classmethod
    def fit(cls, train_values: np.ndarray) -> "Scaler":
        mean = train_values.mean(axis=0)
        std = train_values.std(axis=0)
        return cls(mean, np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse_target(self, y: np.ndarray) -> np.ndarray:
        """Target values (column 0) back in the series' units."""
        return y * self.std[0] + self.mean[0]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["mean"], dtype=float), np.asarray(d["std"], dtype=float))


@dataclass
class Prepared:
    """Everything a run needs from a series: split, scaler, and windows of each part."""

    split: Split
    scaler: Scaler
    raw: dict[str, Windows]  # in the series' units
    scaled: dict[str, Windows]  # standardised with the training statistics
    dropped: dict[str, int]  # windows of each part left out because their targets hold filled-in values


def prepare(values: np.ndarray, val_fraction: float, test_fraction: float, window: int, horizon: int,
            filled: np.ndarray | None = None) -> Prepared:
    """filled: (N,) bool, True where the target was filled in (`Series.filled[:, 0]`); None: nowhere."""
    split = chronological_split(len(values), val_fraction, test_fraction, window, horizon)
    scaler = Scaler.fit(values[: split.b1])
    scaled_values = scaler.transform(values)
    raw, scaled, dropped = {}, {}, {}
    for part in PARTS:
        s, e = split.bounds(part)
        raw[part] = make_windows(values, s, e, window, horizon, filled=filled)
        scaled[part] = make_windows(scaled_values, s, e, window, horizon, filled=filled)
        dropped[part] = len(window_origins(s, e, window, horizon)) - len(raw[part])
        if not len(raw[part]):
            use = "train on" if part == "train" else "score"
            raise ValueError(f"series: all {dropped[part]} {part} windows have a filled-in value among their "
                             f"--horizon {horizon} targets; nothing is left to {use}")
    return Prepared(split, scaler, raw, scaled, dropped)
