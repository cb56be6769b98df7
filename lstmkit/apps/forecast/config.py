"""The one configuration of a forecasting run: data, windows, model, training.

Every field has a command-line flag of the same name (`--hidden-size` for `hidden_size`); the
resolved config is saved as `config.json` in the run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lstmkit.cells import LSTM_CELLS
from lstmkit.data.timeseries import DATASETS, check_gap_policy, check_time_format
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import check_number, check_seed, check_types
from lstmkit.utils.runs import DEVICES, RESUMABLE as RUN_RESUMABLE, config_from_dict

# What --resume may change: patience decides when training stops, not what any epoch computes.
RESUMABLE = (*RUN_RESUMABLE, "patience")


@dataclass
class ForecastConfig:
    # --- data ---
    csv: str | None = None  # a CSV file; None: the embedded dataset below
    dataset: str = "seattle-weather"  # an embedded series (DATASETS), used without csv
    target: str | None = None  # the column to forecast; None: the dataset's default (temp_max)
    features: str | None = None  # comma-separated input columns besides the target; "all"; None: default
    time_col: str | None = None  # None: found by name (date, time, ...) or built from year/month/day/hour
    time_format: str | None = None  # strftime codes of the time column (%d/%m/%Y); None: inferred from the first
    gaps: str = "error"  # missing values: "error" refuses, "ffill" carries the last observation forward
    max_gap: int = 0  # fill at most this many missing values in a row; 0: no limit
    # --- windows and split ---
    window: int = 30  # input time steps per example
    horizon: int = 1  # steps ahead predicted at once (multi-step output)
    val_fraction: float = 0.15  # chronological: train | validation | test, no window crosses a boundary
    test_fraction: float = 0.15  # the last rows; the scores are computed on them
    season: int = 0  # seasonal-naive period in rows; 0: from the time step (365 for daily, 24 hourly, ...)
    # --- model ---
    hidden_size: int = 64  # LSTM hidden units per layer
    num_layers: int = 1  # stacked LSTM layers
    cell: str = "lstm"  # the LSTM variant (LSTM_CELLS)
    dropout: float = 0.0  # between stacked LSTM layers
    residual: bool = True  # the head predicts the change from the last observed target value
    backend: str = "auto"  # lstmkit.LSTM backend
    # --- training ---
    epochs: int = 60  # maximum epochs in all, resumes included
    # Seconds of training in this invocation, checked before every optimizer step (an epoch they
    # stop is checkpointed where it stopped, and --resume finishes it); 0: no limit.
    max_time: float = 0.0
    batch_size: int = 64  # training windows per optimizer step
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam's L2 penalty
    clip: float = 1.0  # max global gradient norm; 0: no clipping
    patience: int = 12  # early stopping: epochs without a better validation RMSE; 0: never
    seed: int = 0  # initialisation and batch order
    device: str = "cpu"  # auto, cpu or cuda
    progress: bool = True  # a progress bar per epoch

    def validate(self) -> "ForecastConfig":
        check_types(self)

        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")

        if self.csv is None:
            one_of("dataset", DATASETS)
            if self.time_format is not None:
                raise ValueError("--time-format: reads a --csv file's time column; the embedded dataset's dates "
                                 "are ISO 8601")
        elif not self.target:
            raise ValueError("--target: required with --csv (the column to forecast)")
        check_gap_policy(self.gaps)
        check_time_format(self.time_format)
        one_of("cell", LSTM_CELLS)
        one_of("backend", BACKEND_NAMES)
        one_of("device", DEVICES)
        for name in ("window", "horizon", "hidden_size", "num_layers", "epochs", "batch_size"):
            check_number(name, getattr(self, name), 1)
        for name in ("max_gap", "season", "max_time", "weight_decay", "clip", "patience"):
            check_number(name, getattr(self, name), 0)
        check_number("lr", self.lr, 0, above=True)
        check_seed("seed", self.seed)
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}: expected a fraction in (0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction: expected < 1, got {self.val_fraction + self.test_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ForecastConfig":
        return config_from_dict(cls, d)
