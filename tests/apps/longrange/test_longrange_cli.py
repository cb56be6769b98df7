"""`lstmkit longrange` end to end, tiny, through the CLI."""

import json
import os
import re

import pytest

from lstmkit.apps.longrange.train import _job
from lstmkit.cli.main import main


def test_tiny_run(tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["longrange", "--tasks", "adding,copy,agreement", "--lengths", "3", "--models", "rnn,lstm,gru,peephole",
                 "--hidden-size", "6", "--steps", "4", "--eval-every", "2", "--eval-size", "32", "--batch-size", "8",
                 "--backend", "reference", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "**adding**" in printed and "| Elman RNN |" in printed and "| peephole LSTM |" in printed
    for name in ("config.json", "results.json", "results.md", "adding.png", "copy.png", "agreement.png",
                 "gradnorm.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == 3 * 4
    r = result["runs"][0]
    assert r["task"] == "adding" and r["length"] == 3 and r["model"] == "rnn" and len(r["curve"]) >= 1
    g = result["gradnorm"]
    assert g["task"] == "adding" and g["length"] == 3 and set(g["trained"]) == {"rnn", "lstm"}
    assert len(g["init"]["lstm"]) == 3

    # Same seed, same numbers: again through the CLI, and in the function a --jobs worker process runs.
    out2 = tmp_path / "again"
    assert main(["longrange", "--tasks", "adding", "--lengths", "3", "--models", "lstm", "--hidden-size", "6",
                 "--steps", "4", "--eval-every", "2", "--eval-size", "32", "--batch-size", "8", "--backend",
                 "reference", "--no-progress", "--no-gradnorm", "--out", str(out2)]) == 0
    again = json.loads((out2 / "results.json").read_text())["runs"][0]
    first = next(r for r in result["runs"] if r["model"] == "lstm" and r["task"] == "adding" and r["length"] == 3)
    assert again["curve"] == first["curve"]
    cfg = json.loads((out / "config.json").read_text())
    record, state = _job(cfg, "adding", 3, "lstm", keep=True)
    assert record["curve"] == first["curve"] and "head.weight" in state


def test_saved_config_names_the_backend_that_ran(tmp_path, auto_picks_reference):
    out = tmp_path / "lr"
    assert main(["longrange", "--tasks", "adding", "--lengths", "3", "--models", "rnn,lstm", "--hidden-size", "4",
                 "--steps", "2", "--eval-every", "2", "--eval-size", "8", "--batch-size", "4", "--no-progress",
                 "--no-gradnorm", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert "auto" not in saved.values() and saved["backend"] == "reference"


def test_bad_names_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["longrange", "--tasks", "parity"])
    assert e.value.code == 2 and "expected a comma-separated list from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["longrange", "--lengths", "5,x"])


def _no_training(*args, **kwargs):
    raise AssertionError("trained before refusing bad input")


@pytest.mark.parametrize("extra, message", [
    (["--clip", "nan"], "clip: expected a finite number >= 0, got nan"),
    (["--forget-bias", "nan"], "forget_bias: expected a finite number, got nan"),
    (["--forget-bias", "inf"], "forget_bias: expected a finite number, got inf"),
    (["--lr", "inf"], "lr: expected a finite number > 0, got inf"),
    (["--models", "lstm,rnn,lstm"], "models: expected each name once, got 'lstm' more than once"),
    (["--tasks", "copy,adding,copy,adding"], "tasks: expected each name once, got 'copy', 'adding' more than once"),
    (["--lengths", "6,3,6"], "lengths: expected each length once, got 6 more than once"),
    (["--lengths", "0"], "lengths: adding: length must be >= 2, got 0"),
    (["--tasks", "agreement", "--lengths", "2,-1"], "lengths: agreement: the clause length must be >= 0, got -1"),
    (["--tasks", "copy", "--lengths", "-1"], "lengths: copy: the delay must be >= 0, got -1"),
    (["--out", "{afile}"], "--out: cannot create directory '{afile}' (File exists)"),
    (["--out", "{afile}/run"], "--out: cannot create directory '{afile}/run' (Not a directory)"),
    (["--jobs", "0"], "--jobs: expected an integer >= 1, got 0"),
    (["--jobs", str(10 * (os.cpu_count() or 1))], "--jobs: expected at most"),
])
def test_bad_input_is_refused_before_training(tmp_path, capsys, monkeypatch, extra, message):
    import lstmkit.apps.longrange.train as train

    monkeypatch.setattr(train, "run_experiment", _no_training)
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    extra = [a.format(afile=afile) for a in extra]
    argv = ["longrange", "--lengths", "3", "--steps", "2", "--no-progress", "--out", str(tmp_path / "lr"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(afile=afile) in err and err.count("\n") == 1
    assert afile.read_text() == "keep me\n"


def test_a_length_too_short_for_a_task_is_refused_before_anything(tmp_path, capsys, monkeypatch):
    import lstmkit.apps.longrange.train as train

    monkeypatch.setattr(train, "run_experiment", _no_training)
    out = tmp_path / "lr"
    # copy and agreement can take length 1; adding cannot, and says so before copy trains or --out is made.
    assert main(["longrange", "--tasks", "copy,agreement,adding", "--lengths", "1", "--no-progress",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lengths: adding: length must be >= 2, got 1" in err and err.count("\n") == 1
    assert not out.exists()


def test_each_run_gets_a_new_directory_and_an_out_that_holds_results_is_refused(tmp_path, capsys, monkeypatch):
    """The default was one fixed directory, so every run replaced the last one's results."""
    import lstmkit.apps.longrange.train as train

    monkeypatch.chdir(tmp_path)
    tiny = ["longrange", "--lengths", "3", "--models", "lstm", "--hidden-size", "4", "--steps", "2", "--eval-every", "2",
            "--eval-size", "8", "--batch-size", "4", "--backend", "reference", "--no-progress", "--no-gradnorm"]
    assert main(tiny) == 0
    (done,) = (tmp_path / "runs").iterdir()
    assert done.name.startswith("longrange-") and (done / "results.json").is_file()
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr(train, "run_experiment", _no_training)
    assert main([*tiny, "--out", str(done)]) == 2
    err = capsys.readouterr().err
    assert (f"--out: '{done}' is not empty, and a fresh run writes only into a new or empty directory; "
            "pass another --out") in err
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before


def test_copy_and_agreement_take_length_0_on_the_command_line(tmp_path):
    """The generators took 0 (copy: no delay; agreement: no attractor, the baseline); the CLI refused it."""
    out = tmp_path / "lr"
    assert main(["longrange", "--tasks", "copy,agreement", "--lengths", "0,2", "--models", "lstm", "--hidden-size", "4",
                 "--steps", "2", "--eval-every", "2", "--eval-size", "8", "--batch-size", "4", "--backend",
                 "reference", "--no-progress", "--no-gradnorm", "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["task"], r["length"]) for r in runs] == [("copy", 0), ("copy", 2), ("agreement", 0), ("agreement", 2)]


def test_the_config_is_saved_before_training(tmp_path, monkeypatch):
    """It was written after training: a run stopped hours in left no record of what it was."""
    import lstmkit.apps.longrange.train as train

    out = tmp_path / "lr"

    def interrupted(cfg, jobs):
        assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_experiment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["longrange", "--lengths", "3", "--models", "lstm", "--backend", "reference", "--no-progress",
              "--out", str(out)])
    saved = json.loads((out / "config.json").read_text())
    assert saved["lengths"] == [3] and saved["models"] == ["lstm"] and saved["backend"] == "reference"
    assert not (out / "results.json").exists()


def test_runs_started_in_the_same_second_get_a_directory_each(tmp_path, capsys, monkeypatch, frozen_clock):
    """Both used runs/longrange-<date>-<time>: the second was refused as holding results, or, run
    at once, one's results replaced the other's."""
    monkeypatch.chdir(tmp_path)
    tiny = ["longrange", "--lengths", "3", "--models", "lstm", "--hidden-size", "4", "--steps", "2", "--eval-every", "2",
            "--eval-size", "8", "--batch-size", "4", "--backend", "reference", "--no-progress", "--no-gradnorm"]
    assert main(tiny) == 0 and main([*tiny, "--seed", "1"]) == 0
    name = "longrange-" + frozen_clock
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [name, f"{name}-2"]
    seeds = [json.loads((runs / n / "config.json").read_text())["seed"] for n in (name, f"{name}-2")]
    assert seeds == [0, 1] and all((runs / n / "results.json").is_file() for n in (name, f"{name}-2"))


def test_help_shows_list_defaults_as_typed_and_offers_only_cpu_backends(capsys):
    with pytest.raises(SystemExit):
        main(["longrange", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "(default: rnn,gru,lstm,peephole)" in text and "(default: adding)" in text
    assert "(at most the cores)" in text and "up to the cores" not in text
    assert "--backend {auto,reference,numba}" in text and "the models train on the CPU" in text
    with pytest.raises(SystemExit) as e:  # runs on a GPU only: refused as it is parsed, not after
        main(["longrange", "--backend", "triton"])
    assert e.value.code == 2 and "invalid choice: 'triton'" in capsys.readouterr().err
