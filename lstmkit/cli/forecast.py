"""`lstmkit forecast`: train an LSTM forecaster on a CSV or the embedded seattle-weather series."""

from __future__ import annotations

import argparse
import dataclasses

from lstmkit.apps.forecast.config import RESUMABLE, ForecastConfig
# Imported with the parser, not when a run starts: the epilog is run.py's RUN_FILES, and the torch
# and pandas it needs are loaded by lstmkit.cells and lstmkit.data.timeseries below anyway.
from lstmkit.apps.forecast.run import (
    RUN_FILES, absolute_csv, load_series, read_config, resolve_data_fields, train_and_evaluate,
)
from lstmkit.cells import LSTM_CELLS
from lstmkit.data.timeseries import DATASETS, slug
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import add_field_flag, flag, given
from lstmkit.utils.runs import DEVICES

HELP = ("Forecast a time series with an LSTM; score it against persistence, seasonal naive and a linear "
        "autoregression (MAE, RMSE, MASE) on a chronological test span.")

D = ForecastConfig()
FIELDS = {f.name for f in dataclasses.fields(ForecastConfig)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = RUN_FILES.strip()  # a table: cli.main.HelpFormatter keeps its lines

    def opt(group, option: str, help: str = "", default_text: str | None = None, **kw) -> None:
        name = option[2:].replace("-", "_")
        if default_text is None and isinstance(getattr(D, name), bool):
            default_text = "on" if getattr(D, name) else "off"
        add_field_flag(group, D, name, help, default_text=default_text, **kw)

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
    opt(g, "--time-format", "strftime codes every time is written in, such as %%d/%%m/%%Y or '%%Y-%%m-%%d %%H:%%M'",
        "inferred from the first time", metavar="FMT")
    # No argparse choices: the config's check explains what became of the old 'interpolate'.
    opt(g, "--gaps", "missing values (NA, empty): 'error' refuses the file; 'ffill' gives each the last observation "
        "before it and trims leading rows with none before them; windows with a filled-in target are neither "
        "trained on nor scored (all reported)", metavar="{error,ffill}")
    opt(g, "--max-gap", "with --gaps ffill: refuse runs of more missing values than this; 0: no limit")
    g = p.add_argument_group("windows and split (chronological: train | validation | test)")
    opt(g, "--window", "input time steps per example")
    opt(g, "--horizon", "steps ahead predicted at once")
    opt(g, "--val-fraction", "validation part, after the training part")
    opt(g, "--test-fraction", "test part, the last rows")
    opt(g, "--season", "seasonal-naive period in rows; 0: from the time step (365 daily, 24 hourly, 12 monthly)")
    g = p.add_argument_group("model")
    opt(g, "--hidden-size")
    opt(g, "--num-layers")
    opt(g, "--cell", choices=LSTM_CELLS)
    opt(g, "--dropout", "between stacked layers")
    opt(g, "--residual", "predict the change from the last observed target value")
    opt(g, "--backend", "lstmkit.LSTM backend", choices=BACKEND_NAMES)
    g = p.add_argument_group("training")
    opt(g, "--epochs", "maximum epochs in all (resumes included)")
    opt(g, "--max-time", "seconds of training in this invocation, checked before every optimizer step: an "
        "epoch they stop is checkpointed at that step and --resume finishes it; 0: no limit")
    opt(g, "--batch-size")
    opt(g, "--lr", "Adam learning rate")
    opt(g, "--weight-decay")
    opt(g, "--clip", "max gradient norm; 0: none")
    opt(g, "--patience", "stop after this many epochs without a better validation RMSE; 0: never")
    opt(g, "--seed")
    opt(g, "--device", "cpu unless named: auto takes cuda where there is one (train and sentiment default "
        "to auto)", choices=DEVICES)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=argparse.SUPPRESS, metavar="DIR",
                   help="run directory, new or empty (default: runs/forecast/<series>-<target>, <series> the "
                        "CSV's name without .csv or the --dataset; no date in it, so the same command again is "
                        "refused: --resume continues that run, another --out starts a new one)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; its config is kept, and only "
                        f"{', '.join(map(flag, RESUMABLE))} may change (another flag is accepted where it "
                        "resolves to the run's value, as --features all or --season 0 may); a run that "
                        "stopped early goes on where a new --patience allows it, one that ran all its epochs "
                        "where a larger --epochs does")
    opt(g, "--progress", "progress bar")


def resumed_config(out: str, flags: dict) -> ForecastConfig:
    """The run's config.json with the flags given on resume: those of RESUMABLE replace the saved
    values; any other must resolve, the way a fresh run resolves it, to the saved value."""
    cfg = read_config(out)
    for name in RESUMABLE:
        if name in flags:
            setattr(cfg, name, flags[name])
    asked = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if k not in RESUMABLE})
    if "csv" in flags:
        asked.csv = absolute_csv(asked.csv)
    differ = [name for name in flags if getattr(asked, name) != getattr(cfg, name)]
    if differ and set(differ) <= {"features", "season"}:
        # --features all (or a list with spaces, or naming the target) and --season 0 stand for what the
        # data resolves them to; every other field of `asked` is the run's here, so this reads the run's data.
        resolve_data_fields(asked, load_series(asked))
        differ = [name for name in differ if getattr(asked, name) != getattr(cfg, name)]
    if differ:
        name = differ[0]
        raise ValueError(f"--resume: the run in {out!r} has {name}={getattr(cfg, name)!r}; only "
                         f"{', '.join(RESUMABLE)} may change when resuming")
    return cfg


def run(args: argparse.Namespace) -> int:
    out = getattr(args, "out", None)
    if args.resume:
        if out is None:
            raise ValueError("--resume: name the run directory with --out")
        cfg = resumed_config(out, given(args, FIELDS))
    else:
        cfg = ForecastConfig(**given(args, FIELDS))
    cfg.validate()
    out = out or f"runs/forecast/{slug(cfg.csv or cfg.dataset)}-{slug(cfg.target or 'temp_max')}"
    train_and_evaluate(cfg, out, resume=args.resume)
    print(f"run directory: {out}")
    return 0
