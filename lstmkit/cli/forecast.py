"""`lstmkit forecast`: train an LSTM forecaster on a CSV or the embedded seattle-weather series."""

from __future__ import annotations

import argparse
import dataclasses

from lstmkit.apps.forecast.config import DEVICES, ForecastConfig
from lstmkit.cells import LSTM_CELLS
from lstmkit.data.timeseries import DATASETS, GAP_POLICIES, slug
from lstmkit.kernels import BACKEND_NAMES

HELP = ("Forecast a time series with an LSTM; score it against persistence, seasonal naive and a linear "
        "autoregression (MAE, RMSE, MASE) on a chronological test span.")

D = ForecastConfig()
# Flags that --resume may change; every other setting comes from the run's config.json.
RESUMABLE = ("epochs", "max_time", "progress", "device", "backend")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", default=None, metavar="PATH",
                   help="a CSV file with a header, a date/time column and numeric columns (default: the embedded "
                        "--dataset)")
    g.add_argument("--dataset", default=D.dataset, choices=DATASETS,
                   help="embedded series used without --csv (seattle-weather: daily 2012-2015, from vega_datasets)")
    g.add_argument("--target", default=None, metavar="COL",
                   help="the column to forecast (required with --csv; seattle-weather: temp_max)")
    g.add_argument("--features", default=None, metavar="COLS",
                   help="comma-separated input columns besides the target, or 'all' (every numeric column); "
                        "default: the target alone for --csv, all four numeric columns for seattle-weather")
    g.add_argument("--time-col", default=None, metavar="COL",
                   help="the date/time column (default: found by name, or built from year/month/day/hour columns)")
    g.add_argument("--gaps", default=D.gaps, choices=GAP_POLICIES,
                   help="missing values (NA, empty): 'error' refuses the file; 'interpolate' fills them linearly in "
                        "time and trims leading/trailing rows that have nothing to interpolate from (both reported)")
    g.add_argument("--max-gap", type=int, default=D.max_gap,
                   help="with --gaps interpolate: refuse runs of more missing values than this (0: no limit)")
    g = p.add_argument_group("windows and split")
    g.add_argument("--window", type=int, default=D.window, help="input time steps per example")
    g.add_argument("--horizon", type=int, default=D.horizon, help="steps ahead predicted at once")
    g.add_argument("--val-fraction", type=float, default=D.val_fraction, help="validation part (after train)")
    g.add_argument("--test-fraction", type=float, default=D.test_fraction, help="test part (the last rows)")
    g.add_argument("--season", type=int, default=D.season,
                   help="seasonal-naive period in rows (0: 365 for daily data, 24 hourly, 12 monthly, ...)")
    g = p.add_argument_group("model")
    g.add_argument("--hidden-size", type=int, default=D.hidden_size)
    g.add_argument("--num-layers", type=int, default=D.num_layers)
    g.add_argument("--cell", default=D.cell, choices=LSTM_CELLS)
    g.add_argument("--dropout", type=float, default=D.dropout, help="between stacked layers")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=D.residual,
                   help="predict the change from the last observed target value")
    g.add_argument("--backend", default=None, choices=BACKEND_NAMES, help=f"lstmkit.LSTM backend (default {D.backend})")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help=f"maximum epochs in all (default {D.epochs})")
    g.add_argument("--max-time", type=float, default=None,
                   help=f"seconds of training in this invocation, 0: no limit (default {D.max_time:g})")
    g.add_argument("--batch-size", type=int, default=D.batch_size)
    g.add_argument("--lr", type=float, default=D.lr)
    g.add_argument("--weight-decay", type=float, default=D.weight_decay)
    g.add_argument("--clip", type=float, default=D.clip, help="max gradient norm (0: none)")
    g.add_argument("--patience", type=int, default=D.patience,
                   help="stop after this many epochs without a better validation RMSE (0: never)")
    g.add_argument("--seed", type=int, default=D.seed)
    g.add_argument("--device", default=None, choices=DEVICES, help=f"default {D.device}")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default runs/forecast/<series>-<target>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (its config is kept; --epochs, --max-time, "
                        "--device, --backend may change)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    names = {f.name for f in dataclasses.fields(ForecastConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return ForecastConfig(**values)


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.forecast.run import read_config, train_and_evaluate

    if args.resume:
        if args.out is None:
            raise ValueError("--resume: name the run directory with --out")
        cfg = read_config(args.out)
        for name in RESUMABLE:
            value = getattr(args, name)
            if value is not None:
                setattr(cfg, name, value)
    else:
        cfg = config_from_args(args)
    cfg.validate()
    out = args.out or f"runs/forecast/{slug(cfg.csv or cfg.dataset)}-{slug(cfg.target or 'temp_max')}"
    train_and_evaluate(cfg, out, resume=args.resume)
    print(f"run directory: {out}")
    return 0
