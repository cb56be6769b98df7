"""One forecasting run: load and check the series, train the LSTM, score it and the baselines.

A run directory (--out) holds the files RUN_FILES lists (`lstmkit forecast --help` ends with it).

Everything that can be refused (a missing column, a non-number, too few rows,
a gap under --gaps error) is refused before the directory is touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lstmkit.apps.forecast import baselines, plots
from lstmkit.apps.forecast.config import RESUMABLE, ForecastConfig
from lstmkit.apps.forecast.metrics import naive_scale, scores, table
from lstmkit.apps.forecast.model import Forecaster
from lstmkit.apps.forecast.windows import PARTS, Prepared, Scaler, prepare
from lstmkit.data.timeseries import Series, load_csv, load_dataset, parse_columns, seasonal_period
from lstmkit.utils.checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint, save_checkpoint
from lstmkit.utils.runs import (
    CHECKPOINT, check_loss, check_new_out, make_out_dir, resolve_run, rng_state, save_config, saved_backend_name, seed_everything,
    set_rng_state,
)

MODEL = "model.safetensors"
MODEL_FORMAT = "lstmkit.forecast.model/1"
CHECKPOINT_FORMAT = "lstmkit.forecast.checkpoint/1"
MID_EPOCH = ("step", "epoch_loss")  # the checkpoint's fields on an epoch --max-time stopped
# A constant, not the docstring, so that `python -OO` (which drops docstrings) keeps the help.
RUN_FILES = """A run directory (--out) holds:

    config.json             the resolved config
    data.json               the series: source, sha256, columns, rows, gap
                            report (how much was filled), split (windows per
                            part, and how many were left out for a filled-in
                            target), scaler, season and MASE's scale (null
                            where the training span holds no two consecutive
                            observed target values: MASE is undefined; 0
                            where no two such values differ: MASE is
                            infinite for a method with any error; null in
                            metrics.json either way)
    model.safetensors       the best model so far (validation RMSE) with its
                            config and scaler
    checkpoint.safetensors  the training state after the latest epoch (or
                            the step of one --max-time stopped), its config
                            and data's sha256: --resume continues from it on
                            the same data and config, but for the flags that
                            --resume may change
    metrics.json            test MAE / RMSE / MASE of the LSTM and every
                            baseline, history
    results.md              the same as a Markdown table, with the windows
                            scored and left out
    predictions.csv         the test span, a row per window: for each step k
                            ahead, the time it forecasts, the actual value
                            and each method's forecast, as time_t+k,
                            actual_t+k, LSTM_t+k, ...; with --horizon 1 plain
                            time, actual, LSTM, ...
    forecast.png            actual vs predicted on the test span
    curves.png              training and validation loss per epoch
"""
UNDEFINED_MASE = ("MASE undefined (null): no two observed target values follow each other in the training span, "
                  "so the one-step naive forecast it is scaled by has no error to measure")
INFINITE_MASE = ("MASE infinite (inf; null in metrics.json) for a method with any test error, 0 for an exact one: "
                 "no two consecutive observed target values of the training span differ, so the one-step naive "
                 "forecast it is scaled by has no error (scale 0)")


def absolute_csv(path: str | None) -> str | None:
    """The --csv path as config.json records it: absolute, so --resume works from any directory."""
    return None if path is None else str(Path(path).resolve())


def load_series(cfg: ForecastConfig) -> Series:
    features = parse_columns(cfg.features) if cfg.features is not None else None
    if cfg.csv is not None:
        return load_csv(cfg.csv, cfg.target, features, time_col=cfg.time_col, time_format=cfg.time_format,
                        gaps=cfg.gaps, max_gap=cfg.max_gap)
    return load_dataset(cfg.dataset, cfg.target, features, gaps=cfg.gaps, max_gap=cfg.max_gap)


def resolve_data_fields(cfg: ForecastConfig, series: Series) -> None:
    """Set, in place, what `cfg` left to the data as `series` resolved it: the target, the other
    input columns and the season, so that config.json says what ran."""
    cfg.target = series.target
    others = series.columns[1:]
    # A name with a comma or spaces around it cannot be listed in --features, only picked by "all":
    # then "all" stays, which picks the same columns again from the same data (its sha256 is checked).
    if all(c and "," not in c and c == c.strip() for c in others):
        cfg.features = ",".join(others)
    cfg.season = cfg.season or seasonal_period(series)


class Data:
    """The checked series, its windows and the baselines' forecasts on the test windows."""

    def __init__(self, cfg: ForecastConfig, series: Series) -> None:
        """cfg: resolved for `series` (`resolve_data_fields`)."""
        self.series = series
        self.prep: Prepared = prepare(self.series.values, cfg.val_fraction, cfg.test_fraction, cfg.window, cfg.horizon,
                                      filled=self.series.filled[:, 0])
        self.season = cfg.season
        target = self.series.values[:, 0]
        test = self.prep.raw["test"]
        if test.origin[0] + 1 - self.season < 0:
            raise ValueError(f"--season {self.season}: longer than the history before the test span "
                             f"({test.origin[0] + 1} rows); use a smaller --season")
        self.train_target = target[: self.prep.split.b1]
        self.train_filled = self.series.filled[: self.prep.split.b1, 0]
        self.mase_scale = naive_scale(self.train_target, self.train_filled)
        coef = baselines.fit_linear(self.prep.scaled["train"])
        unscale = lambda y: self.prep.scaler.inverse_target(y)  # noqa: E731
        self.baselines = {
            "persistence": baselines.persistence(target, test.origin, cfg.horizon),
            f"seasonal naive (m={self.season})": baselines.seasonal_naive(target, test.origin, cfg.horizon,
                                                                         self.season),
            f"linear AR (least squares, {cfg.window} lags)": unscale(
                baselines.predict_linear(coef, self.prep.scaled["test"])),
        }

    def summary(self) -> dict:
        s, split = self.series, self.prep.split
        times = s.times
        return {
            "source": s.source, "columns": s.columns, "target": s.target, "report": s.report,
            "split": {part: {"rows": [a, b], "from": str(times[a]), "to": str(times[b - 1]),
                             "windows": len(self.prep.raw[part]),
                             "windows_dropped_filled_target": self.prep.dropped[part]}
                      for part, (a, b) in ((p, split.bounds(p)) for p in ("train", "val", "test"))},
            "scaler": self.prep.scaler.to_dict(), "season": self.season, "sha256": s.sha256,
            "mase_scale": self.mase_scale,
        }


def _tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32, device=device)


@torch.no_grad()
def predict(model: Forecaster, x: np.ndarray, device, batch: int = 1024) -> np.ndarray:
    model.eval()
    out = [model(_tensor(x[s:s + batch], device)).cpu().numpy() for s in range(0, len(x), batch)]
    model.train()
    return np.concatenate(out).astype(np.float64)


def check_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise FileNotFoundError(f"--resume: {str(out)!r} holds no {CHECKPOINT}")
    else:
        check_new_out(out, resume=f"--out {out} --resume")


def check_checkpoint(ck: dict, cfg: ForecastConfig, data_sha256: str, path: Path) -> None:
    """Refuse to resume from a checkpoint of another config (its weights would not fit the model
    built from config.json) or of other data (training would go on from a series scaled otherwise)."""
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"--resume: {path} is not a forecast checkpoint")
    if "config" in ck:
        saved = ForecastConfig.from_dict(ck["config"])
        if saved.season == 0 or saved.target is None or saved.features in (None, "all"):
            # Written before config.json held what the data resolves these to (or "all" kept by
            # resolve_data_fields): resolved from the data the same way, they compare with cfg's.
            resolve_data_fields(saved, load_series(saved))
        differ = [f"{k}={getattr(saved, k)!r} vs {getattr(cfg, k)!r}" for k in cfg.to_dict()
                  if k not in RESUMABLE and getattr(saved, k) != getattr(cfg, k)]
        if differ:
            raise ValueError(f"--resume: {path} does not match the run's config.json "
                             f"(checkpoint vs config: {', '.join(differ)})")
    trained_on = ck.get("data_sha256")  # absent from checkpoints written before the hash was kept
    if trained_on is not None and trained_on != data_sha256:
        raise ValueError(f"--resume: {cfg.csv or cfg.dataset}: the data changed since the run started "
                         f"(sha256 now {data_sha256[:12]}..., the run trained on {trained_on[:12]}...); "
                         "resuming would mix the two; start a new run in another --out")


def finished(state: dict, cfg: ForecastConfig) -> str | bool:
    """Why training is over after `state`'s latest epoch under `cfg`: "early_stop", "epochs", or False.
    Resuming asks again, as --epochs and --patience may have changed since the checkpoint."""
    if cfg.patience and state["bad_epochs"] >= cfg.patience:
        return "early_stop"
    return "epochs" if state["epoch"] >= cfg.epochs else False


def resume_note(was: str | bool, state: dict, cfg: ForecastConfig) -> str:
    """The log's line on a resumed run: why it is already finished, or why and how far it goes on."""
    epoch, bad = state["epoch"], state["bad_epochs"]
    if state["done"] == "early_stop":
        return (f"already finished: stopped early at epoch {epoch}, after {bad} epochs without a better "
                f"validation RMSE (--patience {cfg.patience}); a larger --patience, or 0, continues")
    if state["done"] == "epochs":
        return f"already finished: {epoch} epochs run (--epochs {cfg.epochs}); a larger --epochs continues"
    why = {"early_stop": f" (it had stopped early, after {bad} epochs without a better validation RMSE, "
                         f"which --patience {cfg.patience} allows)",
           "epochs": f" (it had run all its epochs; --epochs {cfg.epochs} allows more)"}.get(was, "")
    stop = (f", or {cfg.patience} epochs without a better validation RMSE ({bad} so far)" if cfg.patience
            else "; no early stop (--patience 0)")
    return f"continuing{why}: up to epoch {cfg.epochs}{stop}"


def train_and_evaluate(cfg: ForecastConfig, out: str | Path, resume: bool = False) -> dict:
    """The whole run; returns metrics.json's content. Refuses bad input before writing anything."""
    cfg = dataclasses.replace(cfg).validate()  # a copy: what is resolved below is the run's, not the caller's
    if not resume:
        cfg.csv = absolute_csv(cfg.csv)
    out = Path(out)
    check_run_dir(out, resume)
    device = resolve_run(cfg, cfg.cell)
    series = load_series(cfg)  # the data's checks happen here and in Data, before anything is written
    resolve_data_fields(cfg, series)
    data = Data(cfg, series)
    make_out_dir(out)  # after the data's checks, so a refused file leaves no directory behind
    prep = data.prep
    summary = data.summary()
    rep = data.series.report
    print(f"series {data.series.source}: {len(data.series)} rows, columns {data.series.columns} "
          f"(target {data.series.target!r}); windows train/val/test "
          f"{len(prep.raw['train'])}/{len(prep.raw['val'])}/{len(prep.raw['test'])}")
    if rep["excluded_columns"]:
        print(f"--features all: left out {rep['excluded_columns']} (not one number in them)")
    if rep["missing_values"]:
        print(f"gaps ({rep['gap_policy']}): {rep['filled_values']} missing values filled with the last observation "
              f"before them, in {rep['filled_runs']} runs (longest {rep['longest_filled_run']}); trimmed "
              f"{rep['trimmed_leading_rows']} leading rows with no observation before them; windows left out for a "
              f"filled-in target, train/val/test: {'/'.join(str(prep.dropped[p]) for p in PARTS)}")
    mase_note = UNDEFINED_MASE if math.isnan(data.mase_scale) else INFINITE_MASE if data.mase_scale == 0 else ""
    if mase_note:
        print(f"note: {mase_note}")
    if rep.get("time_gaps"):
        print(f"note: {rep['time_gaps']} step(s) longer than the usual {rep['step']} (rows absent from the file; "
              "not invented)")

    seed_everything(cfg.seed)
    model = Forecaster(len(data.series.columns), cfg.horizon, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # epoch: epochs completed; step, epoch_loss: optimizer steps taken in the next one and the sum
    # of their losses (times their windows), where --max-time stopped it
    state = {"epoch": 0, "step": 0, "epoch_loss": 0.0, "history": [], "best_val": math.inf, "bad_epochs": 0,
             "done": False, "best_model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if resume:
        ck = load_checkpoint(out / CHECKPOINT)
        check_checkpoint(ck, cfg, data.series.sha256, out / CHECKPOINT)
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as e:  # a checkpoint older than the config stored inside it
            raise ValueError(f"--resume: {out / CHECKPOINT} does not match the run's config.json "
                             f"({str(e).splitlines()[-1].strip()})") from None
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        # a checkpoint written before --max-time could stop an epoch has no step: it ended one
        state = {k: ck.get(k, state[k]) if k in MID_EPOCH else ck[k] for k in state}
        steps = math.ceil(len(prep.scaled["train"]) / cfg.batch_size)
        if type(state["step"]) is not int or not 0 <= state["step"] < steps:  # the data and batch size are the run's
            raise ValueError(f"--resume: {out / CHECKPOINT} stopped at step {state['step']!r}, not one of an "
                             f"epoch's {steps}")
        was, state["done"] = state["done"], finished(state, cfg)
        within = f", step {state['step']} of epoch {state['epoch'] + 1}" if state["step"] else ""
        print(f"resumed from epoch {state['epoch']}{within} (best validation RMSE {state['best_val']:.4f}, scaled)")
        print(resume_note(was, state, cfg))

    save_config(out, cfg)
    atomic_write_json(out / "data.json", summary)

    tr, va = prep.scaled["train"], prep.scaled["val"]
    xtr, ytr = _tensor(tr.x, device), _tensor(tr.y, device)
    n = len(tr)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    start = time.perf_counter()
    first_epoch = state["epoch"]
    stopped_by_time = False

    def checkpoint() -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "data_sha256": data.series.sha256,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(), **state}

    def out_of_time() -> bool:
        return bool(cfg.max_time) and time.perf_counter() - start > cfg.max_time

    bar = tqdm(total=cfg.epochs, initial=min(state["epoch"], cfg.epochs), desc="forecast", unit="epoch",
               disable=not cfg.progress, dynamic_ncols=True)
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        # seeded by the epoch: a resumed epoch goes on in the same order from the step it stopped at
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)).to(device)
        total, first_step = state["epoch_loss"], state["step"]
        for k in range(first_step, steps_per_epoch):
            if out_of_time():
                stopped_by_time = True
                break
            idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            loss = torch.nn.functional.mse_loss(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += loss.item() * len(idx)
        if stopped_by_time:
            if k > first_step:  # steps taken since the last checkpoint: kept, with what resumes them exactly
                state["step"], state["epoch_loss"] = k, total
                save_checkpoint(out / CHECKPOINT, checkpoint())
            break
        state["step"], state["epoch_loss"] = 0, 0.0
        val_rmse = float(np.sqrt(np.mean((predict(model, va.x, device) - va.y) ** 2)))
        # Before this epoch's files: a NaN never beats the best, so a diverged run went on to score
        # its untrained weights as the LSTM's and exited 0.
        check_loss(f"the training loss of epoch {epoch}", total / n, cfg.clip)
        check_loss(f"the validation RMSE of epoch {epoch}", val_rmse, cfg.clip)
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": total / n, "val_rmse": val_rmse})
        if val_rmse < state["best_val"]:
            state["best_val"], state["bad_epochs"] = val_rmse, 0
            state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            save_checkpoint(out / MODEL, {"format": MODEL_FORMAT, "config": cfg.to_dict(), "epoch": epoch,
                                          "scaler": prep.scaler.to_dict(), "columns": data.series.columns,
                                          "model": state["best_model"], "val_rmse_scaled": val_rmse})
        else:
            state["bad_epochs"] += 1
        state["done"] = finished(state, cfg)
        save_checkpoint(out / CHECKPOINT, checkpoint())
        bar.update(1)
        bar.set_postfix(train=f"{total / n:.4f}", val_rmse=f"{val_rmse:.4f}", best=f"{state['best_val']:.4f}")
    bar.close()
    if stopped_by_time:
        where = f", step {state['step']} of {steps_per_epoch} of epoch {state['epoch'] + 1}" if state["step"] else ""
        print(f"stopped by --max-time {cfg.max_time:g} s after epoch {state['epoch']}{where}; --resume continues")
    elif state["done"] == "early_stop" and state["epoch"] > first_epoch:  # else resume_note said it
        print(f"early stop at epoch {state['epoch']} ({cfg.patience} epochs without a better validation RMSE)")

    # Score the best model (by validation RMSE) and the baselines on the same test windows.
    model.load_state_dict(state["best_model"])
    test = prep.raw["test"]
    y = test.y
    preds = {"LSTM": prep.scaler.inverse_target(predict(model, prep.scaled["test"].x, device)), **data.baselines}
    results = {name: scores(y, p, data.train_target, data.train_filled) for name, p in preds.items()}
    per_step = {name: [float(np.sqrt(np.mean((y[:, k] - p[:, k]) ** 2))) for k in range(cfg.horizon)]
                for name, p in preds.items()}
    md = table(results)
    best_epoch = min(state["history"], key=lambda h: h["val_rmse"])["epoch"] if state["history"] else 0
    metrics = {"test": results, "test_rmse_per_step": per_step, "table": md, "epochs_run": state["epoch"],
               "best_epoch": best_epoch, "stopped": "max_time" if stopped_by_time else state["done"],
               "train_seconds_this_invocation": round(time.perf_counter() - start, 2),
               "history": state["history"], "target": data.series.target, "source": data.series.source,
               "test_windows": len(test), "test_windows_dropped_filled_target": prep.dropped["test"],
               "horizon": cfg.horizon, "window": cfg.window}
    atomic_write_json(out / "metrics.json", metrics)
    left_out = (f" ({prep.dropped['test']} more left out: their targets hold filled-in values)"
                if prep.dropped["test"] else "")
    note = f"\n{mase_note}\n" if mase_note else ""
    atomic_write_bytes(out / "results.md", (f"Test span of {data.series.source}, target {data.series.target!r}, "
                                            f"horizon {cfg.horizon}, {len(test)} windows{left_out}\n\n"
                                            f"{md}\n{note}").encode())
    times = data.series.times
    frame = {}
    for k in range(cfg.horizon):
        sfx = "" if cfg.horizon == 1 else f"_t+{k + 1}"
        # Step k forecasts row origin + k: dated by that row, since rows absent from the file make it
        # other than the origin's time plus k steps.
        frame[f"time{sfx}"] = [str(t) for t in times[test.origin + k + 1]]
        frame[f"actual{sfx}"] = y[:, k]
        for name, p in preds.items():
            frame[f"{name.split(' (')[0]}{sfx}"] = p[:, k]
    atomic_write_bytes(out / "predictions.csv", pd.DataFrame(frame).to_csv(index=False).encode())
    plots.plot_forecast(out / "forecast.png", times[test.origin + 1], y, preds, data.series.target, data.series.source)
    plots.plot_curves(out / "curves.png", state["history"])
    print(md)
    return metrics


def load_model(run_dir: str | Path) -> tuple[Forecaster, ForecastConfig, Scaler, list[str]]:
    """The best model of a run directory, in eval mode, with its config, scaler and columns."""
    state = load_checkpoint(Path(run_dir) / MODEL)  # always a dict: load_checkpoint refuses any other state
    if state.get("format") != MODEL_FORMAT:
        raise ValueError(f"{run_dir}: not a forecast model (format {state.get('format')!r})")
    cfg = ForecastConfig.from_dict(state["config"])
    cfg.backend = saved_backend_name(cfg.backend, "cpu", cfg.cell)  # where the model is built
    model = Forecaster(len(state["columns"]), cfg.horizon, cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, Scaler.from_dict(state["scaler"]), list(state["columns"])


def read_config(run_dir: str | Path) -> ForecastConfig:
    """The run's config.json, checked: a ValueError or TypeError naming the file and the field."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {str(run_dir)!r} has no config.json")
    try:
        saved = json.loads(path.read_text())  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if not isinstance(saved, dict):
            raise TypeError(f"expected a JSON object of config fields, got {type(saved).__name__}")
        return ForecastConfig.from_dict(saved).validate()
    except (ValueError, TypeError) as e:
        raise (TypeError if isinstance(e, TypeError) else ValueError)(f"{path}: {e}") from None
