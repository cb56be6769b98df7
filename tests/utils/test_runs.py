"""Run directories: the output directory made up front, with a clear error; a run's "auto" settings
resolved for its saved config; a saved backend loaded where it cannot run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lstmkit import kernels
from lstmkit.utils.runs import backend_name, make_out_dir, resolve_run, save_config, saved_backend_name

HERE = "cuda" if torch.cuda.is_available() else "cpu"


def test_out_dir_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "afile").write_text("")
    assert make_out_dir(tmp_path / "new" / "run").is_dir()
    with pytest.raises(ValueError, match="--out: cannot create directory .*afile' .File exists"):
        make_out_dir(tmp_path / "afile")
    with pytest.raises(ValueError, match="--run: cannot create directory .*sub' .Not a directory"):
        make_out_dir(tmp_path / "afile" / "sub", "--run")


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
