"""`lstmkit bench`: the baselines compute what nn.LSTM computes, and a smoke run writes its outputs.

No timed assertions: timings on a shared machine prove nothing in a test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys

import matplotlib.figure
import pytest
import torch

from lstmkit.bench import harness, report
from lstmkit.bench.impls import BASELINE, Shape, make_case, registry
from lstmkit.cli.main import main
from lstmkit.kernels import onednn

IMPLS, _ = registry()
LSTM_IMPLS = [i for i in IMPLS if i.cell == "lstm" and i.name != BASELINE]
SHAPES = [Shape(4, 3, 5, 6), Shape(1, 1, 2, 3), Shape(6, 4, 5, 6, packed=True), Shape(4, 3, 5, 6, P=2)]


def _forward_and_dx(impl, case):
    runner = impl.build(case)
    x = case.x.clone().requires_grad_()
    with runner.context():
        y = runner.forward(x)
        grads = torch.autograd.grad(y, [x, *runner.params], case.grad_out)
    return y.detach(), grads[0], len(grads) - 1


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("impl", LSTM_IMPLS, ids=lambda i: i.name)
def test_every_lstm_implementation_matches_nn_lstm(impl, shape):
    if not impl.supports(shape):
        pytest.skip(f"{impl.name} runs plain shapes only")
    case = make_case(shape, seed=3)
    baseline = next(i for i in IMPLS if i.name == BASELINE)
    y_ref, dx_ref, _ = _forward_and_dx(baseline, case)
    y, dx, n_params = _forward_and_dx(impl, case)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    assert n_params >= 4  # every weight and bias gets a gradient in a timed training step


def test_compiled_lstmkit_matches_nn_lstm():
    """lstmkit-numba-compile (off by default): the module under torch.compile(fullgraph=True)."""
    impls, unavailable = registry(compile=True)
    assert "lstmkit-numba-compile" in registry()[1]
    impl = next(i for i in impls if i.name == "lstmkit-numba-compile")
    case = make_case(SHAPES[0], seed=3)
    y_ref, dx_ref, _ = _forward_and_dx(next(i for i in impls if i.name == BASELINE), case)
    y, dx, n_params = _forward_and_dx(impl, case)
    torch._dynamo.reset()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-5)
    assert n_params >= 4 and not impl.supports(SHAPES[2])  # fullgraph: no PackedSequence


def test_shape_labels_parse_back():
    for shape in SHAPES:
        assert Shape.parse(shape.label) == shape
    assert Shape.parse("T=100, B=1, I=64, H=256") == Shape(100, 1, 64, 256)
    for bad in ("T100,B32,I128", "T100,B32,I128,H256,X3", "T0,B1,I1,H1", "T1,B1,I1,H4,P4"):
        with pytest.raises(ValueError):
            Shape.parse(bad)


def test_gemm_flops_come_from_costs():
    # fwd+bwd: 3x the forward, less each sequence's dh_0 = dGates W_hh (2*H*4H), which no h_0 needs.
    case = make_case(Shape(5, 3, 4, 8))
    nn_lstm = next(i for i in IMPLS if i.name == BASELINE)
    assert harness.gemm_flops(case, nn_lstm, "fwd") == 2 * 5 * 3 * (4 + 8) * 4 * 8
    assert harness.gemm_flops(case, nn_lstm, "fwd+bwd") == 3 * 2 * 5 * 3 * (4 + 8) * 4 * 8 - 3 * 2 * 8 * 4 * 8
    packed = make_case(Shape(5, 3, 4, 8, packed=True))
    assert harness.gemm_flops(packed, nn_lstm, "fwd") == 2 * sum(packed.lengths) * (4 + 8) * 4 * 8
    assert harness.gemm_flops(packed, nn_lstm, "fwd+bwd") == \
        3 * 2 * sum(packed.lengths) * (4 + 8) * 4 * 8 - 3 * 2 * 8 * 4 * 8


def test_quick_run_writes_markdown_json_and_png(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    argv = ["bench", "--quick", "--impls", "loop-precomp", "nn.LSTM-no-onednn",
            "--repeats", "2", "--warmup", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["caller.py", "--callers-own-flag"])  # main(argv) from Python
    assert main(argv) == 0
    printed = capsys.readouterr().out
    md = (out / "bench.md").read_text()
    assert printed == md
    assert shlex.join(["lstmkit", *argv]) in md.splitlines()[0] and "--callers-own-flag" not in md
    assert "after 1 warm-up call(s)" in md
    assert "### fwd, 1 thread" in md and "### fwd+bwd, 1 thread" in md and "| loop-precomp |" in md
    data = json.loads((out / "bench.json").read_text())
    assert data["config"]["argv"] == argv
    rows = {(m["impl"], m["shape"], m["mode"]) for m in data["measurements"]}
    assert ("loop-precomp", "T5,B3,I4,H8", "fwd+bwd") in rows
    assert ("nn.LSTM-no-onednn", "T5,B3,I4,H8,packed", "fwd") in rows
    assert ("loop-precomp", "T5,B3,I4,H8,packed", "fwd") not in rows  # loops run plain shapes only
    for m in data["measurements"]:
        assert len(m["times_ms"]) == 2 and m["median_ms"] > 0
        if m["impl"] == BASELINE:
            assert m["ratio"] == 1.0
    assert data["peak_gflops"]["1"] > 0
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bench_stopped_before_writing_leaves_no_default_directory(tmp_path, monkeypatch):
    """Each run takes a new runs/bench-<date>-<time> (a fixed default, replaced by every later
    run, kept no figures); one stopped while timing (Ctrl-C) left it behind empty."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(harness, "run_bench", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "--quick"])
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--impls", "no-such-impl"], "--impls"),
    (["--shapes", "T5,B3,I4"], "--shapes"),
    (["--repeats", "0"], "--repeats"),
    (["--max-impl-s", "nan"], "--max-impl-s: expected a finite number > 0, got nan"),
    (["--max-impl-s", "inf"], "--max-impl-s: expected a finite number > 0, got inf"),
    (["--min-sample-ms", "nan"], "--min-sample-ms: expected a finite number >= 0, got nan"),
    (["--warmup", "-1"], "--warmup: expected an int >= 1 (the last warm-up call also sizes the samples), got -1"),
    (["--warmup", "0"], "--warmup: expected an int >= 1 (the last warm-up call also sizes the samples), got 0"),
    (["--seed", "99999999999999999999"], "--seed: expected an integer in [0, 2**32), got 99999999999999999999"),
    (["--seed", "-1"], "--seed: expected an integer in [0, 2**32), got -1"),
    (["--threads", "100000"], f"--threads: expected at most {os.cpu_count()} (os.cpu_count()), got 100000"),
    (["--shapes", "T0,B3,I4,H8"], "--shapes: 'T0,B3,I4,H8': shape T: expected a positive int, got 0"),
    (["--shapes", "T1,B1,I1,H4,P4"], "--shapes: 'T1,B1,I1,H4,P4': shape P (proj_size): expected 0 <= P < H=4"),
    (["--threads", "1", "1"], "--threads: 1 given twice; each is timed once"),
    (["--modes", "fwd", "fwd"], "--modes: fwd given twice"),
    (["--shapes", "T5,B3,I4,H8", "T5,B3,I4,H8,P0"], "--shapes: T5,B3,I4,H8 given twice"),
    (["--out", "{afile}"], "--out: cannot create directory '{afile}' (File exists)"),
    (["--out", "{afile}/sub"], "--out: cannot create directory '{afile}/sub' (Not a directory)"),
    (["--out", "{tmp}"], "--out: '{tmp}' is not empty, and a fresh run writes only into a new or empty directory"),
])
def test_bad_arguments_exit_2_before_timing(tmp_path, capsys, monkeypatch, argv, message):
    def no_timing(*args, **kwargs):
        raise AssertionError("timed before refusing bad input")

    monkeypatch.setattr(harness, "run_bench", no_timing)
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    argv = [a.format(afile=afile, tmp=tmp_path) for a in argv]
    assert main(["bench", "--quick", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message.format(afile=afile, tmp=tmp_path) in capsys.readouterr().err
    assert afile.read_text() == "keep me\n"


@pytest.mark.parametrize("kw, error", [
    (dict(modes=["fwd+bwd", "train"]), "modes: expected some of ['fwd', 'fwd+bwd'], got 'train'"),
    (dict(modes=[]), "modes: expected at least one, got none"),
    (dict(repeats=0), "repeats: expected an int >= 1, got 0"),
    (dict(threads=[1, 1]), "threads: 1 given twice"),
])
def test_run_bench_refuses_a_plan_that_times_nothing_or_twice(kw, error):
    args = {**dict(impls=IMPLS, shapes=[Shape(2, 1, 2, 3)], threads=[1], modes=["fwd"], repeats=1, warmup=1), **kw}
    with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
        harness.run_bench(**args)


def test_warmup_calls_made_are_the_ones_reported(monkeypatch):
    calls = []
    real_call = harness._call

    def counting(case, runner, mode):
        call = real_call(case, runner, mode)
        return lambda: (calls.append(1), call())

    monkeypatch.setattr(harness, "_call", counting)
    nn_lstm = [i for i in IMPLS if i.name == BASELINE]
    result = harness.run_bench(nn_lstm, [Shape(2, 1, 2, 2)], [1], ["fwd"], repeats=3, warmup=2, min_sample_s=0.0,
                               peak_size=64)
    (m,) = result.measurements
    assert m.warmup_calls == 2 and len(calls) == 2 + 3 * m.number
    assert "after 2 warm-up call(s)," in report.markdown(result, "lstmkit bench")
    with pytest.raises(ValueError, match="^warmup: expected an int >= 1"):
        harness.run_bench(nn_lstm, [Shape(2, 1, 2, 2)], [1], ["fwd"], repeats=3, warmup=0)
    # the Python API checks what the CLI checks (torch.set_num_threads far above the cores crashes)
    for threads in ([0], [10 ** 6]):
        with pytest.raises(ValueError, match="^threads: expected"):
            harness.run_bench(nn_lstm, [Shape(2, 1, 2, 2)], threads, ["fwd"], repeats=3, warmup=1)
    with pytest.raises(ValueError, match="^seed: expected"):
        harness.run_bench(nn_lstm, [Shape(2, 1, 2, 2)], [1], ["fwd"], repeats=3, warmup=1, seed=-1)

    slow = dataclasses.replace(m, impl="loop-8mm", warmup_calls=1)
    result = harness.BenchResult(measurements=[m, slow], config={"warmup": 2, "max_impl_s": 8.0})
    assert "after 2 warm-up call(s) (down to 1 for an implementation whose warm-up took over half of 8.0 s)," \
        in report.markdown(result, "lstmkit bench")


def test_cpu_rows_of_a_gpu_run_are_judged_against_the_cpu_peak(monkeypatch):
    # A GPU run simulated on the CPU: the peaks are fixed numbers and the cases stay in host memory.
    peaks = {"cuda": iter([50000.0, 40000.0]), "cpu": iter([8.0, 10.0])}
    sizes = []

    def fake_peak(size=2048, repeats=5, device="cpu"):
        sizes.append((device, size))
        return next(peaks[device])

    real_case = harness.make_case
    monkeypatch.setattr(harness, "measure_peak", fake_peak)
    monkeypatch.setattr(harness, "make_case", lambda shape, seed=0, device="cpu": real_case(shape, seed))
    nn_lstm = next(i for i in IMPLS if i.name == BASELINE)
    impls = [nn_lstm, dataclasses.replace(nn_lstm, name="cpu:nn.LSTM", device="cpu")]
    result = harness.run_bench(impls, [Shape(4, 3, 5, 6)], [1], ["fwd"], repeats=2, warmup=1, min_sample_s=0.0,
                               peak_size=8192, device="cuda")
    assert sizes == [("cuda", 8192), ("cpu", 2048), ("cuda", 8192), ("cpu", 2048)]
    assert result.peak_gflops == {1: 50000.0} and result.cpu_peak_gflops == {1: 8.0}
    by_impl = {m.impl: m for m in result.measurements}
    assert by_impl[BASELINE].peak_fraction == pytest.approx(by_impl[BASELINE].gflops / 50000.0)
    assert by_impl["cpu:nn.LSTM"].peak_fraction == pytest.approx(by_impl["cpu:nn.LSTM"].gflops / 10.0)
    data = result.to_json()
    assert data["cpu_peak_gflops"] == {"1": 8.0} and data["cpu_peak_gflops_end"] == {"1": 10.0}
    result.config = {"peak_size": 8192}
    md = report.markdown(result, "lstmkit bench --device cuda")
    assert "(torch.mm 8192x8192 fp32 on the GPU" in md and "50000 GFLOP/s (40000 at the end)" in md
    assert "CPU's GEMM peak (2048x2048 fp32, the faster of torch.mm and oneDNN, before the shapes and after them): " \
        "8 GFLOP/s with 1 thread (10 at the end)." in md


def test_a_failing_plot_leaves_the_previous_outputs(tmp_path, monkeypatch):
    m = harness.Measurement(BASELINE, "lstm", "T5,B3,I4,H8", "fwd", 1, 1, [1.0, 1.0], 100, ratio=1.0)
    m.finish(10.0)
    result = harness.BenchResult(peak_gflops={1: 10.0}, measurements=[m], impls={BASELINE: "torch.nn.LSTM"})
    before = {name: f"the previous run's {name}\n" for name in ("bench.md", "bench.json", "bench.png")}
    for name, text in before.items():
        (tmp_path / name).write_text(text)

    def broken(*args, **kwargs):
        raise OSError("no space left for the plot")

    with monkeypatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", broken)
        with pytest.raises(OSError, match="no space left"):
            report.write(result, tmp_path, "lstmkit bench")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    text = report.write(result, tmp_path, "lstmkit bench")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md", "bench.png"]  # no temp files
    assert (tmp_path / "bench.md").read_text() == text
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bars_apply_to_fast_backends_at_the_issues_shapes_only():
    def m(impl, shape, mode, ratio, cell="lstm"):
        return harness.Measurement(impl, cell, shape, mode, 2, 1, [1.0], 1, ratio=ratio)

    result = harness.BenchResult(peak_gflops={1: 1.0, 2: 1.0}, measurements=[
        m("lstmkit-fast", "T100,B32,I128,H256", "fwd", 1.05),
        m("lstmkit-fast", "T100,B1,I64,H256", "fwd+bwd", 0.8),
        m("lstmkit-fast", "T100,B32,I128,H256,packed", "fwd", 0.5),
        m("lstmkit-fast-cifg", "T100,B32,I128,H256", "fwd", 2.0, "cifg"),  # bar is fwd+bwd only
        m("lstmkit-fast-cifg", "T100,B32,I128,H256", "fwd+bwd", 1.2, "cifg"),
        m("lstmkit-reference", "T100,B32,I128,H256", "fwd", 3.0),
        m(BASELINE, "T100,B32,I128,H256", "fwd", 1.0),
        m("lstmkit-fast", "T1,B1,I64,H128", "fwd", 0.9),  # not a shape of the issue: no bar
    ])
    rows = [(impl, limit, met) for impl, _, _, _, limit, met in report.bar_rows(result)]
    assert rows == [("lstmkit-fast", 1.10, True), ("lstmkit-fast", 0.70, False),
                    ("lstmkit-fast", 0.60, True), ("lstmkit-fast-cifg", 1.25, True)]


def test_gpu_bars_judge_training_and_the_persistent_kernel():
    def m(impl, shape, mode, ratio, cell="lstm"):
        return harness.Measurement(impl, cell, shape, mode, 16, 1, [1.0], 1, ratio=ratio)

    result = harness.BenchResult(peak_gflops={16: 1.0}, device="cuda", measurements=[
        m("lstmkit-triton", "T100,B64,I512,H512", "fwd+bwd", 0.7),
        m("lstmkit-triton-layernorm", "T100,B64,I512,H512", "fwd+bwd", 1.4, "layernorm"),
        m("lstmkit-triton", "T100,B4,I256,H256", "fwd+bwd", 2.0),  # training bars: the issue's shapes only
        m("lstmkit-triton", "T100,B4,I256,H256", "fwd", 0.3),  # the persistent kernel: >= 3x lower
        m("lstmkit-triton", "T100,B64,I512,H512", "fwd", 0.9),  # no bar on large-batch inference
        m("lstmkit-triton-per-step", "T100,B4,I256,H256", "fwd", 0.5),
        m("lstmkit-triton-no-graphs", "T100,B64,I512,H512", "fwd+bwd", 2.5),
        m("cpu:lstmkit-numba", "T100,B64,I512,H512", "fwd+bwd", 9.0),
    ])
    rows = [(impl, round(limit, 3), met) for impl, _, _, _, limit, met in report.bar_rows(result)]
    assert rows == [("lstmkit-triton", 1.1, True), ("lstmkit-triton-layernorm", 1.3, False),
                    ("lstmkit-triton", 0.333, True)]
    md = report.markdown(result, "lstmkit bench --device cuda")
    assert "### fwd+bwd, GPU" in md and "cuDNN" in md


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "--device", "cuda", "--quick", "--out", str(tmp_path)]) == 2
    assert "--device" in capsys.readouterr().err


def test_cases_hold_the_same_numbers_on_any_device():
    shape = Shape(4, 3, 5, 6)
    a, b = make_case(shape, seed=1), make_case(shape, seed=1, device="cpu")
    torch.testing.assert_close(a.x, b.x)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_gpu_run_has_cuda_cpu_and_data_path_rows(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--device", "cuda", "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    impls = {m["impl"] for m in data["measurements"]}
    assert BASELINE in impls and "cpu:nn.LSTM" in impls
    assert data["device"] == "cuda" and len(data["data_path"]) == 2


@pytest.mark.skipif(onednn.LINEAR is None, reason="torch without oneDNN")
def test_cpu_peak_includes_onednn_gemm(monkeypatch):
    """nn.LSTM and the kernels multiply with oneDNN, faster than torch.mm's sgemm here: a peak of
    torch.mm alone put their GFLOP/s above 100%."""
    calls = []
    real = onednn.linear

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(onednn, "linear", counted)
    assert harness.measure_peak(64) > 0
    assert len(calls) == 6  # one untimed, five timed
    a, b_t = calls[0]
    torch.testing.assert_close(real(a, b_t), a @ b_t.t())
