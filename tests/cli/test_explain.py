"""`lstmkit explain` through the console entry point."""

from __future__ import annotations

import re

import pytest

from lstmkit.cli.main import main


def test_explain_defaults(capsys):
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    # input 28, hidden 256: 4*256*(28+256) weights + 2*4*256 biases.
    assert "weight_ih_l0" in out and "1024 x 28" in out
    assert f"{4 * 256 * (28 + 256) + 2 * 4 * 256:,}" in out
    assert "lstm / dense = 4.01x" in out
    assert "per sequence (T=35)" in out and "B=32" in out
    assert "Activation memory for training" in out


def test_explain_config(capsys):
    argv = ["explain", "--input-size", "10", "--hidden-size", "20", "--num-layers", "2",
            "--bidirectional", "--proj-size", "5", "--no-bias", "--seq-len", "7",
            "--batch-size", "3", "--dtype", "float64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "weight_hr_l1_reverse" in out and "5 x 20" in out
    assert "bias_ih" not in out
    assert "unprojected" in out and "float64" in out


def test_explain_backward_gemms_of_a_sequence_form_no_dh0(capsys):
    # I = H = 1, B = 1: a step's gates 2*(1+1)*4 = 16 FLOPs, backward 32; the sequence's one step
    # forms no dh_0 = dGates U (2*1*4 FLOPs), as h_0 needs no gradient.
    assert main(["explain", "--input-size", "1", "--hidden-size", "1", "--seq-len", "1", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  backward GEMMs +32 FLOP +24 FLOP$", out, re.M)
    assert "first step forms no dh_0" in out


def test_explain_gru_is_three_dense_layers(capsys):
    assert main(["explain", "--cell", "gru", "--no-bias"]) == 0
    assert "gru / dense = 3.00x" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["--hidden-size", "0"], "--hidden-size"),
    (["--input-size", "0"], "--input-size"),
    (["--num-layers", "0"], "--num-layers"),
    (["--cell", "lstmm"], "--cell"),
    (["--proj-size", "256"], "--proj-size"),
    (["--cell", "gru", "--proj-size", "2"], "--proj-size"),
    (["--seq-len", "-1"], "--seq-len"),
    (["--seq-len", "0"], "--seq-len"),
    (["--batch-size", "0"], "--batch-size"),
    (["--dtype", "int8"], "--dtype"),
])
def test_explain_bad_argument_names_the_flag(capsys, argv, flag):
    assert main(["explain", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"lstmkit explain: error: {flag}: ") and captured.err.count("\n") == 1
    assert captured.out == ""
