"""End to end on tiny runs: files, checkpoint round trip, exact resume, crash safety, generation."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lstmkit.apps.charlm import runs
from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.generate import generate
from lstmkit.apps.charlm.metrics import Metrics, evaluate
from lstmkit.apps.charlm.corpus import load_run_corpus
from lstmkit.apps.charlm.train import train
from lstmkit.cli.main import main
from lstmkit.utils.checkpoint import load_checkpoint
from lstmkit.utils.runs import Diverged

REPO = Path(__file__).resolve().parents[3]


def tiny(text, **kw) -> CharLMConfig:
    base = dict(text=str(text), embedding_size=8, hidden_size=16, batch_size=4, num_steps=8, epochs=2,
                max_time=0, lr=0.01, output_dropout=0.1, sample_length=20, sample_prefix="The ", backend="reference",
                progress=False)
    base.update(kw)
    return CharLMConfig(**base)


def quiet(cfg, **kw):
    lines = []
    result = train(cfg, log=lines.append, **kw)
    return result, lines


def test_run_directory_and_checkpoint_round_trip(tiny_text, tmp_path):
    out = tmp_path / "run"
    result, lines = quiet(tiny(tiny_text), out=out)
    assert {p.name for p in out.iterdir()} >= {"config.json", "vocab.json", "model.safetensors",
                                               "checkpoint.safetensors", "metrics.json", "curves.png"}
    assert lines[-1].startswith("validation: perplexity ") and "bits per character" in lines[-1]
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 16
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    # The saved model, loaded back, reproduces its recorded validation metrics.
    model, vocab, cfg, saved = runs.load_model(out)
    corpus = load_run_corpus(cfg)
    assert vocab == corpus.vocab
    m = evaluate(model, corpus.val)
    assert m.bpc == pytest.approx(saved["bpc"], rel=1e-9) == pytest.approx(result.metrics.bpc, rel=1e-9)
    assert m.bpc < history[0]["val_bpc"] + 1e-9 or m.bpc <= min(h["val_bpc"] for h in history) + 1e-9
    assert result.sample.startswith("The ") and len(result.sample) == 24
    state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["progress"]["done"] and state["progress"]["epoch"] == 2


def _final(out):
    state = load_checkpoint(Path(out) / "checkpoint.safetensors")
    return state["model"], state["progress"]["history"]


@pytest.mark.parametrize("partition, stop_at", [("sequential", 37), ("random", 50)])
def test_resume_equals_uninterrupted(tiny_text, tmp_path, partition, stop_at):
    cfg = dict(partition=partition, output_dropout=0.3, optimizer="adam")
    quiet(tiny(tiny_text, **cfg), out=tmp_path / "whole")
    quiet(tiny(tiny_text, max_steps=stop_at, **cfg), out=tmp_path / "cut")  # stops mid-epoch 1
    cut = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")["progress"]
    assert (cut["step"], cut["epoch"], cut["done"]) == (stop_at, 0, False) and cut["batch"] == stop_at
    # stopped before its first epoch ended, the run still has its metrics (the best so far) and curves
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert metrics["history"] == [] and metrics["best"]["bpc"] > 0 and (tmp_path / "cut" / "curves.png").exists()
    quiet(CharLMConfig(), resume=tmp_path / "cut", overrides={"max_steps": 0})
    (w_model, w_hist), (c_model, c_hist) = _final(tmp_path / "whole"), _final(tmp_path / "cut")
    for key in w_model:
        assert torch.equal(w_model[key], c_model[key]), key
    for a, b in zip(w_hist, c_hist, strict=True):
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}


def test_saved_config_names_the_device_and_backend_that_ran(tiny_text, tmp_path, auto_picks_reference):
    out = tmp_path / "run"
    quiet(tiny(tiny_text, backend="auto", device="auto", max_steps=2, sample_length=0), out=out)
    saved = json.loads((out / "config.json").read_text())
    assert "auto" not in saved.values()
    assert (saved["device"], saved["backend"]) == ("cuda" if torch.cuda.is_available() else "cpu", "reference")
    assert (saved["text"], saved["corpus"]) == (str(tiny_text.resolve()), None)  # not the unused "pydoc"
    assert load_checkpoint(out / "checkpoint.safetensors")["config"] == saved
    # A resumed run takes its saved config as it is, and resolves an "auto" given again.
    quiet(CharLMConfig(), resume=out, overrides={"max_steps": 3, "backend": "auto"})
    assert json.loads((out / "config.json").read_text()) == {**saved, "max_steps": 3}
    # A model trained with a GPU backend loads and runs on a CPU, on a backend that runs there.
    state = runs.read_run_file(out, runs.MODEL, runs.MODEL_FORMAT)
    state["config"]["backend"] = "triton"
    model, vocab, _, _ = runs.model_from_state(state, torch.device("cpu"))
    assert evaluate(model, vocab.encode("The Time ")).bpc > 0


def test_resume_refuses_changed_settings(tiny_text, tmp_path):
    quiet(tiny(tiny_text, max_steps=5), out=tmp_path / "r")
    assert main(["train", "--resume", str(tmp_path / "r"), "--hidden-size", "32"]) == 2
    assert main(["train", "--text", str(tiny_text), "--out", str(tmp_path / "r")]) == 2  # already a run


def test_resume_keeps_the_epochs_of_a_cosine_schedule(tiny_text, tmp_path, capsys):
    """The cosine schedule spans epochs x steps per epoch: resumed with a larger --epochs, the
    learning rate jumped from near min_lr back up near lr in one step (6.1e-05 -> 2.7e-03)."""
    run = tmp_path / "cosine"
    quiet(tiny(tiny_text, schedule="cosine", max_steps=5), out=run)
    before = (run / runs.CHECKPOINT).read_bytes()
    capsys.readouterr()
    for epochs in ("3", "1"):
        assert main(["train", "--resume", str(run), "--epochs", epochs]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lstmkit train: error: --epochs: this run's cosine schedule spans its 2 epochs")
        assert "resume without --epochs" in err and len(err.strip().splitlines()) == 1
    assert (run / runs.CHECKPOINT).read_bytes() == before  # refused before anything was written
    # its own number is no change; under the other schedules --epochs stays a budget
    assert main(["train", "--resume", str(run), "--epochs", "2", "--max-steps", "6"]) == 0
    plateau = tmp_path / "plateau"
    quiet(tiny(tiny_text, max_steps=5), out=plateau)
    assert main(["train", "--resume", str(plateau), "--epochs", "3", "--max-steps", "6"]) == 0
    assert json.loads((plateau / "config.json").read_text())["epochs"] == 3


CRASH = """
import os, sys
from lstmkit.apps.charlm.train import train
from lstmkit.apps.charlm.config import CharLMConfig
import lstmkit.utils.checkpoint as ck
real = os.replace
def crash(src, dst):
    if str(dst).endswith("checkpoint.safetensors"):
        os._exit(17)  # the process dies between writing the new file and renaming it
    real(src, dst)
ck.os.replace = crash
train(CharLMConfig(), resume=sys.argv[1], overrides={"max_steps": 0}, log=lambda m: None)
"""


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tiny_text, tmp_path):
    out = tmp_path / "run"
    quiet(tiny(tiny_text, max_steps=10), out=out)
    before = (out / "checkpoint.safetensors").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CRASH, str(out)], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 17, proc.stderr
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert load_checkpoint(out / "checkpoint.safetensors")["progress"]["step"] == 10
    # ... and training goes on from it.
    result, _ = quiet(CharLMConfig(), resume=out, overrides={"max_steps": 15})
    assert result.progress.step == 15



def test_ctrl_c_checkpoints_where_training_stood_and_exits_130(tiny_text, tmp_path):
    long_text = tmp_path / "long.txt"  # an epoch of ~1,700 steps: the signal lands mid-epoch
    long_text.write_text(tiny_text.read_text() * 20)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "lstmkit.cli.main", "train", "--text", str(long_text), "--out", str(out),
            "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--num-steps", "8",
            "--epochs", "3", "--max-time", "0", "--no-progress", "--backend", "reference"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("run directory:"):  # printed as training begins
            line = proc.stdout.readline()
            assert line, f"train ended early: {proc.communicate()[1][-3000:]}"
            lines.append(line)
        time.sleep(0.5)  # some steps; wherever the signal lands, the checks below hold
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    stopped = next(line for line in rest.splitlines() if line.startswith("stopped:"))
    assert stopped.startswith("stopped: interrupted (Ctrl-C)") and f"lstmkit train --resume {out}" in stopped
    assert "sample" not in rest
    progress = load_checkpoint(out / "checkpoint.safetensors")["progress"]
    assert not progress["done"] and f"step {progress['step']:,}," in stopped
    # ... and --resume goes on from exactly there.
    result, lines = quiet(CharLMConfig(), resume=out, overrides={"max_steps": progress["step"] + 3})
    assert f"step {progress['step']:,})" in next(line for line in lines if line.startswith("run directory:"))
    assert result.progress.step == progress["step"] + 3 and not result.interrupted


def test_generation_is_deterministic_and_streams_the_state(tiny_text, tmp_path):
    out = tmp_path / "run"
    quiet(tiny(tiny_text, epochs=1, sample_length=0), out=out)
    model, vocab, _, _ = runs.load_model(out)
    a = generate(model, vocab, "The Time", 60, temperature=1.0, top_k=5, seed=3)
    b = generate(model, vocab, "The Time", 60, temperature=1.0, top_k=5, seed=3)
    c = generate(model, vocab, "The Time", 60, temperature=1.0, top_k=5, seed=4)
    assert a == b != c and a.startswith("The Time") and len(a) == 68

    calls = []
    real = model.lstm.forward
    model.lstm.forward = lambda x, state=None: (calls.append(x.shape[0]), real(x, state))[1]
    greedy = generate(model, vocab, "The Time", 12, temperature=0.0)
    assert calls == [8] + [1] * 11  # the prefix once, then one step per new symbol
    model.lstm.forward = real
    # Greedy streaming = greedy decoding that re-reads the whole text every step.
    text = "The Time"
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(vocab.encode(text).unsqueeze(1))
            text += vocab.tokens[int(logits[-1, 0].argmax())]
    assert greedy == text


def test_unknown_symbols_are_named(tiny_text, tmp_path):
    out = tmp_path / "run"
    quiet(tiny(tiny_text, epochs=1, sample_length=0), out=out)
    model, vocab, _, _ = runs.load_model(out)
    with pytest.raises(ValueError, match="'€'"):
        generate(model, vocab, "The € sign", 5)
    assert main(["generate", str(out), "--prefix", "The € sign"]) == 2
    other = tmp_path / "other.txt"
    other.write_text("Time € travel")
    assert main(["eval", str(out), "--text", str(other)]) == 2
    assert main(["eval", str(out), "--text", str(other), "--unknown", "skip"]) == 0


def test_cli_generate_and_eval(tiny_text, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_text), "--out", str(out), "--hidden-size", "16",
                 "--embedding-size", "8", "--batch-size", "4", "--num-steps", "8", "--epochs", "1",
                 "--max-time", "0", "--sample-length", "10", "--no-progress", "--backend", "reference"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("validation: perplexity")
    argv = ["generate", str(out), "--prefix", "The ", "--length", "30", "--seed", "1", "--top-k", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("The ") and len(first) == 35
    assert main(["eval", str(out)]) == 0  # the run's own validation split
    own = capsys.readouterr().out.strip().splitlines()[-1]
    assert own.split("(")[0].replace("evaluation", "validation") == last.split("(")[0]
    assert main(["eval", str(out), "--text", str(tiny_text)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("evaluation: perplexity")


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("na\xefve r\xe9sum\xe9 ".encode("latin-1") * 100, "not UTF-8"),
    (b"The Time Machine, by H. G. Wells", "too short"),
])
def test_bad_corpora_fail_clearly_and_write_nothing(tmp_path, capsys, content, match):
    text = tmp_path / "corpus.txt"
    text.write_bytes(content)
    out = tmp_path / "run"
    assert main(["train", "--text", str(text), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error" in err and match in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["ngram", "--text", str(text), "--order", "3"]) == (0 if match == "too short" else 2)


def test_word_level(tiny_text, tmp_path):
    result, lines = quiet(tiny(tiny_text, level="word", epochs=1, sample_prefix="The Time "), out=tmp_path / "w")
    m = result.metrics
    assert m.chars > m.tokens and m.bpc < m.loss / 0.6931 + 1e-9  # more characters than tokens
    assert result.sample.startswith("The Time ")


def test_default_run_dirs_of_runs_started_in_the_same_second_differ(tiny_text, tmp_path, monkeypatch, frozen_clock):
    """Both took runs/charlm-<date>-<time>: the second was refused as holding a run already, or,
    started while the first still trained, wrote into the first one's directory."""
    monkeypatch.chdir(tmp_path)
    first, _ = quiet(tiny(tiny_text, max_steps=2, sample_length=0))
    second, _ = quiet(tiny(tiny_text, max_steps=2, sample_length=0))
    name = "charlm-" + frozen_clock
    assert (first.run_dir, second.run_dir) == (Path("runs", name), Path("runs", f"{name}-2"))
    for run in (first, second):
        assert load_checkpoint(tmp_path / run.run_dir / "checkpoint.safetensors")["progress"]["step"] == 2


def test_a_run_that_diverges_fails_saying_so(tiny_text, tmp_path, capsys):
    """SGD at lr 1e30 without clipping: the validation loss went NaN, which never beat the best so
    far, and the run exited 0 with no validation line and no model; or past 709.8 nats, whose
    perplexity overflowed math.exp: a traceback."""
    out = tmp_path / "run"
    assert main(["train", "--text", str(tiny_text), "--out", str(out), "--hidden-size", "8", "--embedding-size", "4",
                 "--batch-size", "4", "--num-steps", "8", "--optimizer", "sgd", "--lr", "1e30", "--clip", "0",
                 "--max-steps", "30", "--max-time", "0", "--sample-length", "0", "--no-progress",
                 "--backend", "reference"]) == 2
    captured = capsys.readouterr()
    assert re.fullmatch(r"lstmkit train: error: training diverged: the validation loss \(nats per token\) at epoch 1, "
                        r"step 30 is \S+; try a lower --lr, or turn on gradient clipping \(--clip N; 0 turns it off\) "
                        r"\(the run directory keeps what was written before\)\n", captured.err), captured.err
    assert "validation: perplexity" not in captured.out and not (out / "model.safetensors").exists()


def test_a_nan_validation_loss_leaves_the_files_of_the_epochs_before(tiny_text, tmp_path, monkeypatch):
    import lstmkit.apps.charlm.train as charlm_train

    seen = []

    def nan_from_the_second(*args, **kwargs):
        m = evaluate(*args, **kwargs)
        seen.append(m)
        return m if len(seen) == 1 else Metrics(math.nan, m.tokens, m.chars)

    monkeypatch.setattr(charlm_train, "evaluate", nan_from_the_second)
    out = tmp_path / "run"
    with pytest.raises(Diverged, match=r"^training diverged: the validation loss \(nats per token\) at epoch 2, "
                                       r"step 170 is nan; "):
        quiet(tiny(tiny_text, sample_length=0), out=out)
    progress = load_checkpoint(out / "checkpoint.safetensors")["progress"]
    assert progress["epoch"] == 1 and progress["step"] == 85 and len(progress["history"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["best"] == runs.load_model(out)[3] == progress["saved_metrics"]
