"""Checkpoints: nested state round trip, atomic replacement, no pickle."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lstmkit.utils.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from lstmkit.utils.runs import rng_state, set_rng_state


def test_round_trip_model_optimizer_and_scalars(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
             "history": [1.5, 2.0], "name": "x", "pair": (1, None)}
    save_checkpoint(tmp_path / "ck.safetensors", state)
    loaded = load_checkpoint(tmp_path / "ck.safetensors")
    assert loaded["epoch"] == 3 and loaded["history"] == [1.5, 2.0] and loaded["pair"] == (1, None)
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(loaded["optimizer"])  # int-keyed optimizer state survives JSON
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_resumes_every_generator(tmp_path):
    saved = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(tmp_path / "rng.safetensors", {"rng": saved})
    set_rng_state(load_checkpoint(tmp_path / "rng.safetensors")["rng"])
    assert draws == (random.random(), np.random.rand(), torch.rand(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_rng_state_resumes_the_cuda_generator(tmp_path):
    """Dropout on CUDA tensors draws from the device's generator: a resumed GPU run re-seeded it."""
    torch.rand(1, device="cuda")
    saved = rng_state()
    draws = torch.rand(3, device="cuda")
    save_checkpoint(tmp_path / "rng.safetensors", {"rng": saved})
    torch.manual_seed(123)
    set_rng_state(load_checkpoint(tmp_path / "rng.safetensors")["rng"])
    assert torch.equal(draws, torch.rand(3, device="cuda"))


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left behind


def test_rejects_foreign_files(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not an lstmkit checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="evil.pt' is not a readable safetensors file"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="checkpoint state: expected tensors"):
        save_checkpoint(tmp_path / "x.safetensors", {"bad": object()})
    assert not (tmp_path / "x.safetensors").exists()


def test_tensors_at_places_that_print_alike_keep_apart(tmp_path):
    """Tensors were named by their place: "a.b" and a -> b, or keys 1 and "1", got one name, and
    the later tensor was loaded in both places."""
    state = {"a.b": torch.tensor([1.0]), "a": {"b": torch.tensor([2.0])}, 1: torch.tensor([3.0]),
             "1": torch.tensor([4.0])}
    save_checkpoint(tmp_path / "c.safetensors", state)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert [float(back[k]) for k in ("a.b", 1, "1")] == [1.0, 3.0, 4.0] and float(back["a"]["b"]) == 2.0


def test_a_key_json_cannot_bring_back_is_refused_before_anything_is_written(tmp_path):
    """A tuple key came back from JSON as a list: the save succeeded, the load refused the file."""
    with pytest.raises(TypeError, match=r"^checkpoint state: expected dict keys that are JSON scalars, got tuple \(1, 2\) at 's.t'$"):
        save_checkpoint(tmp_path / "c.safetensors", {"t": {(1, 2): 3}})
    assert not (tmp_path / "c.safetensors").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.randn(100, 100)})
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(ValueError, match="c.safetensors' is not a readable safetensors file"):
        load_checkpoint(path)


def test_files_get_the_umask_mode_not_mkstemps(tmp_path):
    """Runs shared with a group stay readable: open()'s mode, not mkstemp's 0600."""
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(1)})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "c.safetensors").st_mode & 0o777 == 0o666 & ~umask



@pytest.mark.parametrize("meta, error", [
    ('{"__list__": [1, 2], "tuple": false}', "expected an lstmkit checkpoint holding a mapping, got a list"),
    ('{"__dict__": [["a", {"__tensor__": "missing"}]]}', "malformed lstmkit metadata \\(KeyError"),
    ("not json", "malformed lstmkit metadata \\(JSONDecodeError"),
    ('{"__dict__": 5}', "malformed lstmkit metadata \\(TypeError"),
    ("[" * 100000 + "]" * 100000, "malformed lstmkit metadata \\(RecursionError"),  # was uncaught
])
def test_metadata_save_checkpoint_did_not_write_is_a_value_error(tmp_path, meta, error):
    """A crafted file's metadata crashed the readers (AttributeError from state.get, KeyError)."""
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"lstmkit": meta})
    with pytest.raises(ValueError, match=error):
        load_checkpoint(path)


def test_json_outputs_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    """An infinite MASE was written as the token Infinity, which strict JSON readers refuse."""
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"mase": math.inf, "loss": [1.5, math.nan], "pair": (-math.inf, 2), "n": 3})
    parsed = json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    assert parsed == {"mase": None, "loss": [1.5, None], "pair": [None, 2], "n": 3}
