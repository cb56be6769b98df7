"""`lstmkit forecast` end to end on a tiny CSV, --resume, and bad input that writes nothing."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lstmkit.cli.main import main
from lstmkit.utils.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--window", "6", "--hidden-size", "8", "--batch-size", "32", "--backend", "reference", "--no-progress",
        "--season", "12"]


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(160)
    temp = 10 + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, t.size)
    wind = 3 + rng.normal(0, 1, t.size)
    lines = ["day,temp,wind"] + [f"2021-01-01,{a:.3f},{b:.3f}" for a, b in zip(temp, wind)]
    lines[1:] = [f"{d},{line.split(',', 1)[1]}" for d, line in
                 zip(np.datetime_as_string(np.datetime64("2021-01-01") + t), lines[1:])]
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_end_to_end_then_resume(tmp_path, csv, capsys):
    out = tmp_path / "run"
    common = ["forecast", "--csv", str(csv), "--target", "temp", "--features", "wind", *TINY]
    args = [*common, "--out", str(out)]
    assert main([*args, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| LSTM |" in printed and "| persistence |" in printed and "LSTM RMSE vs this" in printed
    for name in ("config.json", "data.json", "model.safetensors", "checkpoint.safetensors", "metrics.json",
                 "results.md", "predictions.csv", "forecast.png", "curves.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"LSTM", "persistence", "seasonal naive (m=12)",
                                    "linear AR (least squares, 6 lags)"}
    assert metrics["epochs_run"] == 2 and metrics["test_windows"] == 24 - 6
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header == "time,actual,LSTM,persistence,seasonal naive,linear AR"  # --horizon 1: no step suffixes
    data = json.loads((out / "data.json").read_text())
    assert data["split"]["test"]["rows"] == [136, 160] and data["columns"] == ["temp", "wind"]

    # A second run into the same directory without --resume is refused; --resume continues.
    assert main([*args, "--epochs", "3"]) == 2
    assert f"pass another --out, or continue the run there with --out {out} --resume" in capsys.readouterr().err
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "3", "--lr", "0.1"]) == 2
    assert "only epochs, max_time" in capsys.readouterr().err
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "3", "--no-progress", "--window", "6"]) == 0
    assert "resumed from epoch 2" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and len(metrics["history"]) == 3
    # Stopping after 2 epochs and resuming gives exactly the run that never stopped.
    straight = tmp_path / "straight"
    assert main([*common, "--out", str(straight), "--epochs", "3"]) == 0
    assert json.loads((straight / "metrics.json").read_text())["history"] == metrics["history"]

    from lstmkit.apps.forecast.run import load_model
    model, cfg, scaler, columns = load_model(out)
    assert columns == ["temp", "wind"] and cfg.window == 6


class _Clock:
    """perf_counter for the forecast run: a second passes at every reading, so --max-time stops
    training at a known optimizer step."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_max_time_stops_mid_epoch_and_resume_finishes_that_epoch_exactly(tmp_path, csv, capsys, monkeypatch):
    from lstmkit.apps.forecast import run
    # two layers with dropout: the resumed epoch must go on with the random state it stopped with
    common = ["forecast", "--csv", str(csv), "--target", "temp", "--features", "wind", *TINY,
              "--num-layers", "2", "--dropout", "0.3", "--epochs", "3"]
    out = tmp_path / "run"
    # 106 training windows, 4 steps an epoch; the clock reads 1 at the start, then 2, 3, ... before
    # each step: 7 - 1 > 5.5 before epoch 2's second step
    monkeypatch.setattr(run, "time", _Clock())
    assert main([*common, "--max-time", "5.5", "--out", str(out)]) == 0
    assert "stopped by --max-time 5.5 s after epoch 1, step 1 of 4 of epoch 2; --resume continues" in \
        capsys.readouterr().out
    ck = load_checkpoint(out / "checkpoint.safetensors")
    assert (ck["epoch"], ck["step"]) == (1, 1) and ck["epoch_loss"] > 0
    assert json.loads((out / "metrics.json").read_text())["stopped"] == "max_time"
    monkeypatch.undo()
    assert main(["forecast", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "resumed from epoch 1, step 1 of epoch 2" in capsys.readouterr().out
    straight = tmp_path / "straight"
    assert main([*common, "--out", str(straight)]) == 0
    history = json.loads((straight / "metrics.json").read_text())["history"]
    assert json.loads((out / "metrics.json").read_text())["history"] == history and len(history) == 3
    resumed, whole = (load_checkpoint(d / "checkpoint.safetensors")["model"] for d in (out, straight))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_resume_reads_a_checkpoint_of_whole_epochs_and_refuses_a_step_past_the_epoch(tmp_path, csv, capsys):
    out = tmp_path / "run"
    common = ["forecast", "--csv", str(csv), "--target", "temp", *TINY]
    assert main([*common, "--epochs", "1", "--out", str(out)]) == 0
    path = out / "checkpoint.safetensors"
    ck = load_checkpoint(path)
    save_checkpoint(path, {**ck, "step": 4})
    capsys.readouterr()
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 2
    assert "stopped at step 4, not one of an epoch's 4" in capsys.readouterr().err
    # written before an epoch could stop mid-way: no step, no partial loss
    save_checkpoint(path, {k: v for k, v in ck.items() if k not in ("step", "epoch_loss")})
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main([*common, "--epochs", "2", "--out", str(straight)]) == 0
    assert (json.loads((out / "metrics.json").read_text())["history"]
            == json.loads((straight / "metrics.json").read_text())["history"])


def test_a_new_patience_on_resume_continues_a_run_that_stopped_early(tmp_path, csv, capsys):
    common = ["forecast", "--csv", str(csv), "--target", "temp", "--features", "wind", *TINY, "--lr", "0.03"]
    out = tmp_path / "run"
    assert main([*common, "--patience", "1", "--epochs", "10", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    stopped = metrics["epochs_run"]
    assert metrics["stopped"] == "early_stop" and stopped < 10
    capsys.readouterr()
    # More epochs alone leave it finished, and the log says why.
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "12", "--no-progress"]) == 0
    assert (f"already finished: stopped early at epoch {stopped}, after 1 epochs without a better validation RMSE "
            "(--patience 1); a larger --patience, or 0, continues") in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == stopped
    # A patience it has not used up goes on, to the run that had that patience from the start.
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "12", "--patience", "0", "--no-progress"]) == 0
    assert ("continuing (it had stopped early, after 1 epochs without a better validation RMSE, which --patience 0 "
            "allows): up to epoch 12; no early stop (--patience 0)") in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["epochs_run"], metrics["stopped"]) == (12, "epochs")
    assert json.loads((out / "config.json").read_text())["patience"] == 0
    straight = tmp_path / "straight"
    assert main([*common, "--patience", "0", "--epochs", "12", "--out", str(straight)]) == 0
    assert json.loads((straight / "metrics.json").read_text())["history"] == metrics["history"]


def test_help_lists_the_files_a_run_writes(tmp_path, csv, capsys):
    out = tmp_path / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])
    epilog = capsys.readouterr().out.split("A run directory (--out) holds:", 1)[1]
    listed = {line.split()[0] for line in epilog.splitlines() if line.startswith("    ") and line[4] != " "}
    assert listed == {p.name for p in out.iterdir()}


def test_saved_config_names_the_device_and_backend_that_ran(tmp_path, csv, auto_picks_reference):
    out = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--backend", "reference")]
    assert main(["forecast", "--csv", str(csv), "--target", "temp", *tiny, "--device", "auto", "--epochs", "1",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert "auto" not in saved.values()
    assert (saved["device"], saved["backend"]) == ("cuda" if torch.cuda.is_available() else "cpu", "reference")
    # A resumed run takes its saved config as it is, and resolves an "auto" given again.
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--backend", "auto", "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text()) == {**saved, "epochs": 2}


def test_a_relative_csv_resumes_from_another_directory(tmp_path, csv, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["forecast", "--csv", csv.name, "--target", "temp", *TINY, "--out", "run", "--epochs", "1"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["csv"] == str(csv.resolve())
    # The original command again, relative --csv included, with --resume: the same file, so accepted.
    assert main(["forecast", "--csv", csv.name, "--target", "temp", *TINY, "--out", "run", "--epochs", "2",
                 "--resume"]) == 0
    assert "resumed from epoch 1" in capsys.readouterr().out
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["forecast", "--out", str(tmp_path / "run"), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert "resumed from epoch 2" in capsys.readouterr().out
    # Here the same relative --csv names another file: refused.
    assert main(["forecast", "--out", str(tmp_path / "run"), "--resume", "--epochs", "4", "--csv", csv.name]) == 2
    assert f"has csv={str(csv.resolve())!r}; only epochs" in capsys.readouterr().err


def test_multi_step_horizon(tmp_path, csv):
    lines = csv.read_text().splitlines()
    del lines[151]  # row 150's day is absent from the file: the test span's steps are not all one day
    csv.write_text("\n".join(lines) + "\n")
    days = [line.split(",")[0] for line in lines[1:]]
    out = tmp_path / "h3"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--horizon", "3", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(len(v) == 3 for v in metrics["test_rmse_per_step"].values())
    predicted = pd.read_csv(out / "predictions.csv")
    assert list(predicted.columns[:6]) == ["time_t+1", "actual_t+1", "LSTM_t+1", "persistence_t+1",
                                           "seasonal naive_t+1", "linear AR_t+1"]
    assert list(predicted.columns[6:8]) == ["time_t+2", "actual_t+2"] and "actual_t+3" in predicted.columns
    # Each step is dated by the row it forecasts, and its actual is that row's target.
    temp = {line.split(",")[0]: float(line.split(",")[1]) for line in lines[1:]}
    for _, row in predicted.iterrows():
        first = days.index(row["time_t+1"][:10])
        for k in (1, 2, 3):
            assert row[f"time_t+{k}"][:10] == days[first + k - 1]
            assert row[f"actual_t+{k}"] == pytest.approx(temp[days[first + k - 1]])


@pytest.mark.parametrize("edit, extra, message", [
    (None, ["--target", "pressure"], "no column(s) ['pressure']"),
    (None, ["--target", "temp", "--features", "wind,gust"], "no column(s) ['gust']"),
    ("warm", ["--target", "temp"], "column 'temp' is not numeric: line 6 holds 'warm'"),
    ("NA", ["--target", "temp"], "missing values (NA or empty) with --gaps error: 'temp': 1 missing in 1 run(s), "
                                 "first at line 6"),
    ("head", ["--target", "temp"], "10 rows are too few for one window (--window 6 + --horizon 6 = 12 rows)"),
])
def test_bad_csv_is_a_clear_error_that_writes_nothing(tmp_path, csv, capsys, edit, extra, message):
    text = csv.read_text()
    if edit == "head":
        text = "\n".join(text.splitlines()[:11]) + "\n"
    elif edit:  # the temp value of 2021-01-05 (line 6)
        lines = text.splitlines()
        day, _, wind = lines[5].split(",")
        lines[5] = f"{day},{edit},{wind}"
        text = "\n".join(lines) + "\n"
    csv.write_text(text)
    out = tmp_path / "never"
    argv = ["forecast", "--csv", str(csv), "--out", str(out), *extra, *TINY]
    if edit == "head":
        argv += ["--horizon", "6"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line, no traceback
    assert not out.exists()


def test_bad_options(tmp_path, capsys):
    assert main(["forecast", "--csv", str(tmp_path / "absent.csv"), "--target", "x", "--out", str(tmp_path / "o")]) == 2
    assert "no file at" in capsys.readouterr().err
    assert main(["forecast", "--csv", "x.csv", "--out", str(tmp_path / "o")]) == 2
    assert "--target: required with --csv" in capsys.readouterr().err
    assert main(["forecast", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["forecast", "--time-format", "%d/%m/%Y", "--out", str(tmp_path / "o")]) == 2
    assert "--time-format: reads a --csv file's time column" in capsys.readouterr().err
    assert main(["forecast", "--csv", "x.csv", "--target", "x", "--time-format", "%Q", "--out", str(tmp_path / "o")]) == 2
    assert "'Q' is a bad directive" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_time_format_is_used_and_saved(tmp_path, csv, capsys):
    rows = csv.read_text().splitlines()
    dayfirst = [rows[0]] + [f"{d[8:10]}/{d[5:7]}/{d[:4]},{rest}" for d, rest in (r.split(",", 1) for r in rows[1:])]
    csv.write_text("\n".join(dayfirst) + "\n")
    out = tmp_path / "run"
    argv = ["forecast", "--csv", str(csv), "--target", "temp", "--out", str(out), *TINY, "--epochs", "1"]
    assert main(argv) == 2  # 13/01/2021 is not month-first, as 01/01/2021 was read
    assert "--time-format" in capsys.readouterr().err
    assert main([*argv, "--time-format", "%d/%m/%Y"]) == 0
    assert json.loads((out / "config.json").read_text())["time_format"] == "%d/%m/%Y"
    assert pd.read_csv(out / "predictions.csv")["time"].iloc[-1].startswith("2021-06-09")


@pytest.mark.parametrize("flag, value", [("--clip", "nan"), ("--lr", "inf"), ("--weight-decay", "nan"),
                                         ("--max-time", "nan")])
def test_nan_and_inf_options_are_refused(tmp_path, csv, capsys, flag, value):
    out = tmp_path / "o"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--out", str(out), *TINY, flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag[2:].replace('-', '_')}: expected a finite number" in err and f"got {value}" in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_is_a_file_is_a_clear_error(tmp_path, csv, capsys, where):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = afile if where == "file" else afile / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"--out: cannot create directory {str(out)!r}" in err and err.count("\n") == 1
    assert afile.read_text() == "keep me\n"


def _resume(out, capsys):
    code = main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    return code, capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, csv, capsys):
    runs = {}
    for hidden in (8, 16):
        runs[hidden] = tmp_path / f"h{hidden}"
        assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", *TINY,
                     "--hidden-size", str(hidden), "--out", str(runs[hidden])]) == 0
    capsys.readouterr()
    ck = runs[8] / "checkpoint.safetensors"
    ck.write_bytes((runs[16] / "checkpoint.safetensors").read_bytes())
    before = (runs[8] / "config.json").read_text()
    code, err = _resume(runs[8], capsys)
    assert code == 2 and "does not match the run's config.json" in err and "hidden_size=16 vs 8" in err
    assert (runs[8] / "config.json").read_text() == before
    # A checkpoint written before the config was kept inside it: its weights' shapes tell.
    state = load_checkpoint(ck)
    del state["config"]
    save_checkpoint(ck, state)
    code, err = _resume(runs[8], capsys)
    assert code == 2 and "does not match the run's config.json" in err and "size mismatch" in err


def test_resume_refuses_data_that_changed(tmp_path, csv, capsys):
    out = tmp_path / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    data = json.loads((out / "data.json").read_text())
    assert data["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    lines = csv.read_text().splitlines()
    scaled = [lines[0]] + [f"{d},{float(a) * 1000},{b}" for d, a, b in (line.split(",") for line in lines[1:])]
    csv.write_text("\n".join(scaled) + "\n")
    code, err = _resume(out, capsys)
    assert code == 2 and f"{csv}: the data changed since the run started" in err
    assert json.loads((out / "data.json").read_text()) == data  # nothing rewritten
    csv.write_text("\n".join(lines) + "\n")  # the same bytes again: resuming goes on
    assert _resume(out, capsys)[0] == 0


def test_ffill_leaves_windows_with_a_filled_in_target_out_of_every_score(tmp_path, csv, capsys):
    lines = csv.read_text().splitlines()
    gaps = [150, 151, 145]  # targets of test windows (test rows 136..159; the first target is row 142)
    for r in gaps:
        day, _, wind = lines[r + 1].split(",")
        lines[r + 1] = f"{day},NA,{wind}"
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ffill"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--gaps", "ffill", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "filled with the last observation before them" in printed and "train/val/test: 0/0/3" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    # 18 test windows (horizon 1) of which the 3 whose target is a filled row are left out.
    assert metrics["test_windows"] == 15 and metrics["test_windows_dropped_filled_target"] == 3
    data = json.loads((out / "data.json").read_text())
    assert data["split"]["test"]["windows"] == 15 and data["split"]["test"]["windows_dropped_filled_target"] == 3
    assert data["report"]["filled_values"] == 3
    assert "15 windows (3 more left out: their targets hold filled-in values)" in (out / "results.md").read_text()
    # Scored only on observed targets: persistence by hand over the kept windows gives the saved RMSE.
    temp = np.array([float(line.split(",")[1]) if "NA" not in line else np.nan for line in lines[1:]])
    temp = pd.Series(temp).ffill().to_numpy()
    origins = [o for o in range(136 + 6 - 1, 160 - 1) if o + 1 not in gaps]
    want = np.sqrt(np.mean([(temp[o + 1] - temp[o]) ** 2 for o in origins]))
    assert metrics["test"]["persistence"]["rmse"] == pytest.approx(want)
    predicted = pd.read_csv(out / "predictions.csv")["time"].tolist()
    assert len(predicted) == 15 and not {lines[r + 1].split(",")[0] for r in gaps} & {t[:10] for t in predicted}


def _set_na(csv, rows):
    """The temp value of each of `rows` (0-based data rows) made NA; returns the file's lines."""
    lines = csv.read_text().splitlines()
    for r in rows:
        day, _, wind = lines[r + 1].split(",")
        lines[r + 1] = f"{day},NA,{wind}"
    csv.write_text("\n".join(lines) + "\n")
    return lines


def test_mase_is_scaled_by_the_naive_errors_of_observed_training_values_only(tmp_path, csv):
    gaps = [20, 21, 22, 60, 90]  # training rows (train: rows 0..111)
    lines = _set_na(csv, gaps)
    out = tmp_path / "ffill"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--gaps", "ffill", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    temp = pd.Series([float(line.split(",")[1]) if "NA" not in line else np.nan for line in lines[1:]])
    observed = temp.notna().to_numpy()[:112]
    steps = np.abs(np.diff(temp.ffill().to_numpy()[:112]))
    scale = steps[observed[1:] & observed[:-1]].mean()
    assert scale != pytest.approx(steps.mean())  # the filled rows' zero steps would shrink it
    metrics = json.loads((out / "metrics.json").read_text())
    for r in metrics["test"].values():
        assert r["mase"] == pytest.approx(r["mae"] / scale)
    assert json.loads((out / "data.json").read_text())["mase_scale"] == pytest.approx(scale)


def test_mase_is_null_when_no_two_observed_training_values_follow_each_other(tmp_path, csv, capsys):
    _set_na(csv, range(1, 112, 2))  # every other training row
    out = tmp_path / "ffill"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--gaps", "ffill", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    note = "MASE undefined (null): no two observed target values follow each other in the training span"
    assert note in capsys.readouterr().out and note in (out / "results.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(r["mase"] is None and r["mae"] > 0 for r in metrics["test"].values())
    assert json.loads((out / "data.json").read_text())["mase_scale"] is None


def test_gaps_interpolate_is_refused_with_what_to_use(tmp_path, csv, capsys):
    out = tmp_path / "old"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--gaps", "interpolate", "--out", str(out),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "gaps: 'interpolate' was removed" in err and "use 'ffill'" in err and err.count("\n") == 1
    assert not out.exists()
    # A run directory written before ffill: --resume refuses its config the same way, touching nothing.
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "gaps": "interpolate"}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 2
    assert "use 'ffill'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_exact_baseline_still_writes_every_output(tmp_path, csv, capsys):
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [f"{line.split(',')[0]},5.0,1.0" for line in lines[1:]]) + "\n")
    out = tmp_path / "const"
    argv = ["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", "--out", str(out), *TINY]
    assert main(argv) == 0
    for name in ("metrics.json", "results.md", "predictions.csv", "forecast.png", "curves.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["persistence"]["rmse"] == 0.0
    want = "+0.0%" if metrics["test"]["LSTM"]["rmse"] == 0 else "+inf%"
    assert f"| persistence | 0.0000 | 0.0000 | 0.0000 | {want} |" in (out / "results.md").read_text()
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0


def test_an_infinite_mase_is_noted(tmp_path, csv, capsys):
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [f"{line.split(',')[0]},5.0,{line.split(',')[2]}"
                                           for line in lines[1:]]) + "\n")
    out = tmp_path / "const"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--features", "wind", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    note = "MASE infinite (inf; null in metrics.json) for a method with any test error, 0 for an exact one"
    assert note in capsys.readouterr().out and note in (out / "results.md").read_text()
    assert json.loads((out / "data.json").read_text())["mase_scale"] == 0.0
    for r in json.loads((out / "metrics.json").read_text())["test"].values():
        assert r["mase"] == (0.0 if r["mae"] == 0 else None)


@pytest.mark.parametrize("text, message", [
    ('{"features": ["wind"]}', "features: expected a string or null, got list ['wind']"),
    ('{"features": 5}', "features: expected a string or null, got int 5"),
    ('{"target": ["temp"]}', "target: expected a string or null, got list ['temp']"),
    ('{"residual": "yes"}', "residual: expected true or false, got str 'yes'"),
    ('{"window": 6.5}', "window: expected an integer, got float 6.5"),
    ('{"window": 6,', "Expecting property name enclosed in double quotes"),
    ("[1, 2]", "expected a JSON object of config fields, got list"),
    ('{"windows": 6}', "config: unknown fields ['windows']"),
])
def test_resume_refuses_a_hand_edited_config_json_naming_it(tmp_path, csv, capsys, text, message):
    out = tmp_path / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    if text.startswith("{") and text.endswith("}"):
        text = json.dumps({**config, **json.loads(text)})
    (out / "config.json").write_text(text)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = _resume(out, capsys)
    assert code == 2 and f"{out / 'config.json'}: {message}" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.fixture
def hourly(tmp_path, csv):
    """The tiny series hourly, with a text column: seasonal naive's period from the time step is 24."""
    lines = csv.read_text().splitlines()
    times = pd.date_range("2021-01-01", periods=len(lines) - 1, freq="h").strftime("%Y-%m-%d %H:%M")
    path = tmp_path / "hourly.csv"
    path.write_text("\n".join(["time,temp,wind,sky"] + [f"{t},{line.split(',', 1)[1]},clear"
                                                         for t, line in zip(times, lines[1:])]) + "\n")
    return path


def test_config_json_holds_what_the_data_resolved(tmp_path, hourly, capsys):
    out = tmp_path / "run"
    tiny = TINY[:-2]  # no --season: from the time step
    assert main(["forecast", "--csv", str(hourly), "--target", "temp", "--features", "all", "--epochs", "1", *tiny,
                 "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["target"], saved["features"], saved["season"]) == ("temp", "wind", 24)
    data = json.loads((out / "data.json").read_text())
    assert (data["columns"], data["season"]) == (["temp", "wind"], 24)
    assert load_checkpoint(out / "checkpoint.safetensors")["config"] == saved
    capsys.readouterr()
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "3", "--season", "12"]) == 2
    assert "has season=24" in capsys.readouterr().err
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--season", "24", "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text()) == {**saved, "epochs": 2}
    # Flags that resolve on the run's data to the saved values, as in the fresh run, are accepted.
    for again in (["--features", "all"], ["--season", "0"], ["--features", "wind, temp"]):
        assert main(["forecast", "--csv", str(hourly), "--target", "temp", *again, "--epochs", "2", *tiny,
                     "--out", str(out), "--resume"]) == 0, again
    assert json.loads((out / "config.json").read_text()) == {**saved, "epochs": 2}
    capsys.readouterr()
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "2", "--features", ""]) == 2  # the target alone
    assert "has features='wind'; only epochs" in capsys.readouterr().err

    # A run written before config.json was resolved resumes, and its config.json is resolved then.
    old = {**saved, "epochs": 2, "features": "all", "season": 0}
    (out / "config.json").write_text(json.dumps(old))
    state = load_checkpoint(out / "checkpoint.safetensors")
    save_checkpoint(out / "checkpoint.safetensors", {**state, "config": old})
    assert main(["forecast", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert "resumed from epoch 2" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text()) == {**saved, "epochs": 3}


def test_the_embedded_dataset_saves_its_target_and_columns(tmp_path):
    out = tmp_path / "seattle"
    assert main(["forecast", "--epochs", "1", "--window", "6", "--hidden-size", "4", "--backend", "reference",
                 "--no-progress", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["target"], saved["features"], saved["season"]) == ("temp_max", "precipitation,temp_min,wind", 365)


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.safetensors"])
def test_a_run_file_holding_no_mapping_is_a_clear_error(tmp_path, csv, capsys, name):
    from safetensors.torch import save_file

    from lstmkit.apps.forecast.run import load_model
    out = tmp_path / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    save_file({"x": torch.zeros(1)}, str(out / name), metadata={"lstmkit": json.dumps([1, 2])})
    if name == "model.safetensors":
        with pytest.raises(ValueError, match="expected an lstmkit checkpoint holding a mapping, got a list"):
            load_model(out)
    else:
        code, err = _resume(out, capsys)
        assert code == 2 and "holding a mapping, got a list" in err and err.count("\n") == 1


def test_a_diverged_run_fails_and_scores_nothing(tmp_path, csv, capsys):
    """At lr 1e30 the losses were NaN, no model was ever saved, and results.md scored the untrained
    weights as the LSTM's, exit status 0."""
    out = tmp_path / "run"
    assert main(["forecast", "--csv", str(csv), "--target", "temp", "--epochs", "4", "--lr", "1e30", "--clip", "0",
                 *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: training diverged: the training loss of epoch 1 is nan; try a lower --lr, or turn on gradient " \
           "clipping (--clip N; 0 turns it off)" in err, err
    assert not (out / "model.safetensors").exists() and not (out / "results.md").exists()
