"""Run directories: the output directory made up front, with a clear error, and a default one
that no other run shares; a run's "auto" settings resolved for its saved config; a saved backend
loaded where it cannot run; a diverged loss refused."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from lstmkit import kernels
from lstmkit.utils.runs import (
    CHECKPOINT, Diverged, backend_name, check_loss, fresh_run_dir, make_out_dir, new_run_dir, resolve_run, save_config,
    saved_backend_name,
)

HERE = "cuda" if torch.cuda.is_available() else "cpu"


def test_out_dir_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "afile").write_text("")
    assert make_out_dir(tmp_path / "new" / "run").is_dir()
    with pytest.raises(ValueError, match="--out: cannot create directory .*afile' .File exists"):
        make_out_dir(tmp_path / "afile")
    with pytest.raises(ValueError, match="--run: cannot create directory .*sub' .Not a directory"):
        make_out_dir(tmp_path / "afile" / "sub", "--run")


def test_a_fresh_run_takes_only_a_new_or_empty_directory(tmp_path, monkeypatch, frozen_clock):
    """Each command refused an --out by a rule of its own (its own checkpoint there, its own
    results, anything at all), and bench by none: a run into another command's directory, or a
    second bench into the first's, replaced config.json, metrics.json, plots or figures."""
    (tmp_path / "empty").mkdir()
    assert new_run_dir(tmp_path / "empty", "x") == tmp_path / "empty"
    assert new_run_dir(tmp_path / "new" / "run", "x").is_dir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"^--out: '.*other' is not empty, and a fresh run writes only into a new "
                                         r"or empty directory; pass another --out$"):
        new_run_dir(tmp_path / "other", "x")
    # the way to continue a run is named where there is one to continue: a checkpoint
    with pytest.raises(ValueError, match=r"directory; pass another --to$"):
        new_run_dir(tmp_path / "other", "x", "--to", resume=f"--resume {tmp_path / 'other'}")
    (tmp_path / "other" / CHECKPOINT).write_bytes(b"")
    with pytest.raises(ValueError, match=r"; pass another --to, or continue the run there with --resume .*other$"):
        new_run_dir(tmp_path / "other", "x", "--to", resume=f"--resume {tmp_path / 'other'}")
    assert (tmp_path / "other" / "config.json").read_text() == "{}"
    monkeypatch.chdir(tmp_path)
    assert new_run_dir(None, "x") == tmp_path.joinpath("runs", "x-" + frozen_clock).relative_to(tmp_path)


@dataclass
class _Config:
    device: str = "auto"
    backend: str = "auto"


@pytest.fixture
def no_fast_backend(monkeypatch):
    monkeypatch.setattr(kernels, "AUTO_PREFERENCE", {})


def test_auto_is_resolved_to_what_runs(tmp_path, no_fast_backend):
    cfg = _Config()
    assert resolve_run(cfg) == torch.device(HERE)
    assert (cfg.device, cfg.backend) == (HERE, "reference")
    assert save_config(tmp_path, cfg).read_text().count("auto") == 0
    assert backend_name("auto", "cpu", "gru") == "reference"


def test_a_named_backend_that_cannot_run_here_is_refused_by_name_and_a_saved_one_falls_back(no_fast_backend):
    with pytest.raises(ValueError, match=r"^backend: 'triton' cannot run here \(.*\); 'auto' picks one that can$"):
        backend_name("triton", "meta", "lstm")
    # A model trained with a GPU backend loads where that backend cannot run.
    assert saved_backend_name("triton", "meta", "lstm") == "reference"
    assert saved_backend_name("reference", "cpu", "lstm") == "reference"
    with pytest.raises(ValueError, match="backend: expected one of"):
        backend_name("fast", "cpu", "lstm")


def test_default_run_dirs_started_in_the_same_second_are_all_new(tmp_path, monkeypatch, frozen_clock):
    """Two runs started in the same second took the same runs/<prefix>-<date>-<time>, and one's
    results replaced the other's."""
    monkeypatch.chdir(tmp_path)
    name = "lr-" + frozen_clock
    first = fresh_run_dir("lr")
    assert first == tmp_path.joinpath("runs", name).relative_to(tmp_path) and first.is_dir()
    (tmp_path / "runs" / f"{name}-2").write_text("not a run\n")  # a taken name, whatever it holds
    assert fresh_run_dir("lr").name == f"{name}-3"
    # At once, from threads: mkdir succeeds for one of them only, so no two share a directory.
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(fresh_run_dir("lr"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        [name, *(f"{name}-{n}" for n in range(2, 12))])


def test_default_run_dir_that_cannot_be_made_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("keep me\n")
    with pytest.raises(ValueError, match=r"^--out: cannot create directory 'runs/lr-[0-9-]+' \(Not a directory\)$"):
        fresh_run_dir("lr")
    (tmp_path / "runs").unlink()
    (tmp_path / "runs").symlink_to(tmp_path / "nowhere")  # a parent that is not there to make: no endless retry
    with pytest.raises(ValueError, match=r"^--run: cannot create directory 'runs/lr-[0-9-]+' \(File exists\)$"):
        fresh_run_dir("lr", "--run")


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf"), 1e3])
def test_a_loss_that_is_not_a_number_below_the_limit_is_divergence(loss):
    with pytest.raises(Diverged, match=rf"^training diverged: the loss at step 3 is {loss:.6g}; try a lower --lr, "
                                       r"or a lower --clip \(the run directory keeps what was written before\)$"):
        check_loss("the loss at step 3", loss, 1.0, below=709.0)
    with pytest.raises(Diverged, match=r"; try a lower --lr or --embedding-lr, or turn on gradient clipping "
                                       r"\(--clip N; 0 turns it off\) "):
        check_loss("the loss", loss, 0.0, "--lr or --embedding-lr", below=709.0)
    assert issubclass(Diverged, ValueError)  # the CLI reports it in one line, exit status 2
    check_loss("the loss", 708.9, 1.0, below=709.0)
    check_loss("the loss", 1e300, 1.0)
