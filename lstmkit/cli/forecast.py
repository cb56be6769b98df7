"""`lstmkit forecast`: train an LSTM forecaster on a CSV or the embedded seattle-weather series."""

from __future__ import annotations

import argparse
import dataclasses

from lstmkit.apps.forecast.config import DEVICES, RESUMABLE, ForecastConfig
from lstmkit.cells import LSTM_CELLS
from lstmkit.data.timeseries import DATASETS, slug
from lstmkit.kernels import BACKEND_NAMES

HELP = ("Forecast a time series with an LSTM; score it against persistence, seasonal naive and a linear "
        "autoregression (MAE, RMSE, MASE) on a chronological test span.")

D = ForecastConfig()
FIELDS = {f.name for f in dataclasses.fields(ForecastConfig)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Flags left out are absent from the namespace (SUPPRESS): the config's defaults apply, and
    # --resume can tell a flag that was given from one that was not.
    def opt(group, flag: str, help: str = "", default_text: str | None = None, **kw) -> None:
        name = flag[2:].replace("-", "_")
        shown = default_text if default_text is not None else getattr(D, name, None)
        if kw.get("action") is not argparse.BooleanOptionalAction:
            help = f"{help} (default: {shown})".strip()
        else:
            help = f"{help} (default: {'on' if shown else 'off'})".strip()
        group.add_argument(flag, default=argparse.SUPPRESS, help=help, **kw)

    g = p.add_argument_group("data")
    opt(g, "--csv", "a CSV file with a header, a date/time column and numeric columns", "the embedded --dataset",
        metavar="PATH")
    opt(g, "--dataset", "embedded series used without --csv (daily 2012-2015, shipped inside vega_datasets)",
        choices=DATASETS)
    opt(g, "--target", "the column to forecast; required with --csv", "temp_max for seattle-weather", metavar="COL")
    opt(g, "--features", "comma-separated input columns besides the target, or 'all' (every numeric column)",
        "the target alone for --csv, all four numeric columns for seattle-weather", metavar="COLS")
    opt(g, "--time-col", "the date/time column", "found by name, or built from year/month/day/hour columns",
        metavar="COL")
    # No argparse choices: the config's check explains what became of the old 'interpolate'.
    opt(g, "--gaps", "missing values (NA, empty): 'error' refuses the file; 'ffill' gives each the last observation "
        "before it and trims leading rows with none before them; windows with a filled-in target are neither "
        "trained on nor scored (all reported)", metavar="{error,ffill}")
    opt(g, "--max-gap", "with --gaps ffill: refuse runs of more missing values than this; 0: no limit", type=int)
    g = p.add_argument_group("windows and split (chronological: train | validation | test)")
    opt(g, "--window", "input time steps per example", type=int)
    opt(g, "--horizon", "steps ahead predicted at once", type=int)
    opt(g, "--val-fraction", "validation part, after the training part", type=float)
    opt(g, "--test-fraction", "test part, the last rows", type=float)
    opt(g, "--season", "seasonal-naive period in rows; 0: from the time step (365 daily, 24 hourly, 12 monthly)",
        type=int)
    g = p.add_argument_group("model")
    opt(g, "--hidden-size", type=int)
    opt(g, "--num-layers", type=int)
    opt(g, "--cell", choices=LSTM_CELLS)
    opt(g, "--dropout", "between stacked layers", type=float)
    opt(g, "--residual", "predict the change from the last observed target value",
        action=argparse.BooleanOptionalAction)
    opt(g, "--backend", "lstmkit.LSTM backend", choices=BACKEND_NAMES)
    g = p.add_argument_group("training")
    opt(g, "--epochs", "maximum epochs in all (resumes included)", type=int)
    opt(g, "--max-time", "seconds of training in this invocation; 0: no limit", type=float)
    opt(g, "--batch-size", type=int)
    opt(g, "--lr", "Adam learning rate", type=float)
    opt(g, "--weight-decay", type=float)
    opt(g, "--clip", "max gradient norm; 0: none", type=float)
    opt(g, "--patience", "stop after this many epochs without a better validation RMSE; 0: never", type=int)
    opt(g, "--seed", type=int)
    opt(g, "--device", choices=DEVICES)
    g = p.add_argument_group("output")
    opt(g, "--out", "run directory", "runs/forecast/<series>-<target>", metavar="DIR")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; its config is kept, and only "
                        f"{', '.join('--' + n.replace('_', '-') for n in RESUMABLE)} may change")
    opt(g, "--progress", "progress bar", action=argparse.BooleanOptionalAction)


def given(args: argparse.Namespace) -> dict:
    """The config fields named on the command line."""
    return {k: v for k, v in vars(args).items() if k in FIELDS}


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.forecast.run import read_config, train_and_evaluate

    out = getattr(args, "out", None)
    if args.resume:
        if out is None:
            raise ValueError("--resume: name the run directory with --out")
        cfg = read_config(out)
        for name, value in given(args).items():
            if name in RESUMABLE:
                setattr(cfg, name, value)
            elif getattr(cfg, name) != value:
                raise ValueError(f"--resume: the run in {out!r} has {name}={getattr(cfg, name)!r}; only "
                                 f"{', '.join(RESUMABLE)} may change when resuming")
    else:
        cfg = ForecastConfig(**given(args))
    cfg.validate()
    out = out or f"runs/forecast/{slug(cfg.csv or cfg.dataset)}-{slug(cfg.target or 'temp_max')}"
    train_and_evaluate(cfg, out, resume=args.resume)
    print(f"run directory: {out}")
    return 0
