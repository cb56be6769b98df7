"""Bad input to `lstmkit train / eval / generate / ngram`: one line naming what is wrong, exit
status 2, and nothing printed, trained or written before it."""

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from lstmkit.apps.charlm import runs
from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.generate import generate
from lstmkit.cli.main import main
from lstmkit.utils.checkpoint import load_checkpoint, save_checkpoint

TIMEMACHINE = Path(__file__).resolve().parents[3].parent / "shared/data/timemachine/timemachine.txt"
TINY = ["--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--num-steps", "8",
        "--max-time", "0", "--max-steps", "10", "--sample-length", "0", "--no-progress", "--backend", "reference"]


def train_tiny(text: Path, out: Path) -> Path:
    assert main(["train", "--text", str(text), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 10-step run (model and checkpoint written), shared by this module's tests: those that
    damage the run or its text use a run of their own."""
    if not TIMEMACHINE.is_file():
        pytest.skip(f"shared data absent: {TIMEMACHINE}")
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.txt").write_text(TIMEMACHINE.read_text()[:3000])
    return train_tiny(root / "tiny.txt", root / "run")


def fails(capsys, argv, *needles) -> str:
    """Run argv, expecting exit status 2 with one error line holding every needle and nothing on
    stdout (no prefix printed, no training started)."""
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "", out
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"lstmkit {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# --- 1. a truncated checkpoint --------------------------------------------------------------

def test_truncated_files_are_one_line_errors(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for name in (runs.MODEL, runs.CHECKPOINT):
        with open(run / name, "r+b") as f:
            f.truncate((run / name).stat().st_size // 2)
    fails(capsys, ["eval", str(run)], runs.MODEL, "not a readable safetensors file")
    fails(capsys, ["generate", str(run)], runs.MODEL)
    fails(capsys, ["train", "--resume", str(run)], runs.CHECKPOINT)


# --- 2. NaN and inf -------------------------------------------------------------------------

FLOAT_FIELDS = [f for f, v in vars(CharLMConfig()).items() if isinstance(v, float)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_refuses_nan_and_inf(name, value):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        CharLMConfig(**{name: value}).validate()


def test_float_fields_keep_their_meaningful_values():
    CharLMConfig(max_time=0, clip=0, temperature=0, weight_decay=0, momentum=0.9, min_lr=0).validate()
    with pytest.raises(ValueError, match="^lr: expected a finite number > 0, got 0"):
        CharLMConfig(lr=0).validate()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_temperature_is_checked_before_anything_runs(tiny_run, tmp_path, capsys, value):
    fails(capsys, ["generate", str(tiny_run), "--temperature", value], "--temperature: expected a finite number >= 0")
    out = tmp_path / "out"
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(out), *TINY,
                   "--sample-length", "20", "--temperature", value], "error: --temperature: expected")
    assert not out.exists()
    model, vocab, _, _ = runs.load_model(tiny_run)
    with pytest.raises(ValueError, match="^temperature: expected"):
        generate(model, vocab, "The ", 5, temperature=float(value))


def test_lr_inf_is_refused(tiny_run, tmp_path, capsys):
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(tmp_path / "o"), *TINY,
                   "--lr", "inf"], "error: --lr: expected a finite number > 0, got inf")


# --- 3. an --out that cannot be a directory -------------------------------------------------

@pytest.mark.parametrize("where", ["a_file", "a_file/run"])
def test_out_that_is_or_is_under_a_file(tiny_run, tmp_path, capsys, monkeypatch, where):
    (tmp_path / "a_file").write_text("not a directory")
    import lstmkit.apps.charlm.train as train_module

    def never(*args, **kwargs):
        raise AssertionError("a model was built before --out was checked")

    monkeypatch.setattr(train_module, "CharLM", never)
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(tmp_path / where), *TINY],
          "--out: cannot create directory")
    assert (tmp_path / "a_file").read_text() == "not a directory"


# --- 4. --device cuda without a GPU ---------------------------------------------------------

def test_cuda_without_a_gpu(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(capsys, ["eval", str(tiny_run), "--device", "cuda"], "--device: cuda requested but torch sees no GPU")
    fails(capsys, ["generate", str(tiny_run), "--device", "cuda"], "--device: cuda requested")
    out = tmp_path / "out"
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(out), *TINY,
                   "--device", "cuda"], "error: --device: cuda requested")
    assert not out.exists()


def test_a_backend_that_cannot_run_on_the_device_is_named(tiny_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("triton runs here")
    out = tmp_path / "out"
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(out), *TINY,
                   "--backend", "triton"], "error: --backend: 'triton' cannot run here", "'auto' picks one that can")
    assert not out.exists()


def test_vocab_names_its_repeated_tokens():
    from lstmkit.apps.charlm.vocab import Vocab

    with pytest.raises(ValueError, match=r"^tokens: expected distinct tokens, got 2 more than once: 'a', ' '$"):
        Vocab(["a", "b", " ", "a", " ", "a"])
    with pytest.raises(ValueError, match="^tokens: expected at least one token, got none$"):
        Vocab([])


# --- 6, 7. eval and the run's own text ------------------------------------------------------

@pytest.fixture
def own_run(tmp_path) -> tuple[Path, Path]:
    """(a run, its training text), both this test's to change."""
    if not TIMEMACHINE.is_file():
        pytest.skip(f"shared data absent: {TIMEMACHINE}")
    text = tmp_path / "tiny.txt"
    text.write_text(TIMEMACHINE.read_text()[:3000])
    return train_tiny(text, tmp_path / "run"), text


def test_eval_names_the_runs_missing_text_not_a_flag(own_run, tmp_path, capsys):
    run, text = own_run
    text.rename(tmp_path / "moved.txt")
    err = fails(capsys, ["eval", str(run)], "the run's training text", str(text), "config.json", "--text PATH")
    assert "--text: no file" not in err
    fails(capsys, ["train", "--resume", str(run)], "the run's training text", "put it back")
    assert main(["eval", str(run), "--text", str(tmp_path / "moved.txt")]) == 0


def test_eval_refuses_an_edited_text_with_the_same_vocabulary(own_run, capsys):
    run, text = own_run
    original = text.read_text()
    text.write_text(original[::-1])  # every symbol kept: the vocabulary is the same
    fails(capsys, ["eval", str(run)], "changed since the run started", "sha256")
    fails(capsys, ["train", "--resume", str(run)], "--resume: the corpus", "changed since the run started")
    assert main(["eval", str(run), "--text", str(text)]) == 0  # another text, on purpose
    text.write_text(original)
    assert main(["eval", str(run)]) == 0


def test_eval_checks_model_files_without_a_recorded_hash(own_run, capsys):
    """Model files written before they recorded the corpus sha256: the checkpoint's is used."""
    run, text = own_run
    state = load_checkpoint(run / runs.MODEL)
    del state["corpus_sha256"]
    save_checkpoint(run / runs.MODEL, state)
    assert main(["eval", str(run)]) == 0
    text.write_text(text.read_text()[::-1])
    fails(capsys, ["eval", str(run)], "changed since the run started")


# --- 8. ngram's "too short" -----------------------------------------------------------------

def test_ngram_too_short_names_its_own_options(tmp_path, capsys):
    text = tmp_path / "short.txt"
    text.write_text("abc")
    err = fails(capsys, ["ngram", "--text", str(text)], "too short", "--val-fraction")
    assert "--batch-size" not in err and "--num-steps" not in err
    fails(capsys, ["train", "--text", str(text), "--out", str(tmp_path / "o")], "too short", "--batch-size")


# --- 9. seeds -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_seed_out_of_range_is_named(tiny_run, tmp_path, capsys, seed):
    fails(capsys, ["generate", str(tiny_run), "--seed", seed], "--seed: expected an integer in [0, 2**32)")
    out = tmp_path / "out"
    fails(capsys, ["train", "--text", str(tiny_run.parent / "tiny.txt"), "--out", str(out), *TINY, "--seed", seed],
          "error: --seed: expected an integer in [0, 2**32)")
    assert not out.exists()


def test_largest_seed_works(tiny_run, capsys):
    CharLMConfig(seed=2**32 - 1).validate()
    assert main(["generate", str(tiny_run), "--seed", str(2**32 - 1), "--length", "5"]) == 0


def test_a_tiny_temperature_samples_greedily():
    """logits / 1e-320 overflowed to inf, and softmax of inf is NaN: multinomial raised."""
    from lstmkit.apps.charlm.generate import sample_next

    logits = torch.tensor([0.5, 2.0, -1.0, 1.5])
    for temperature in (1e-320, 1e-300, 5e-324):
        assert sample_next(logits, temperature, 0, torch.Generator().manual_seed(0)) == 1
        assert sample_next(logits, temperature, 2, torch.Generator().manual_seed(0)) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_text_is_a_one_line_error(tmp_path, capsys):
    """PermissionError (and any other OSError but FileNotFoundError) was a traceback."""
    text = tmp_path / "locked.txt"
    text.write_text("abc " * 100)
    text.chmod(0)
    assert main(["ngram", "--text", str(text)]) == 2
    assert "lstmkit ngram: error: " in capsys.readouterr().err


def test_a_name_too_long_is_a_one_line_error(tmp_path, capsys):
    assert main(["ngram", "--text", str(tmp_path / ("x" * 300))]) == 2
    assert "lstmkit ngram: error: " in capsys.readouterr().err


# --- 10. errors name the flag or argument the user typed ------------------------------------

def test_cli_errors_name_the_flag_typed_not_the_config_field(tiny_run, tmp_path, capsys):
    """The library's errors name its arguments (val_fraction, prefix); the command line's named
    them too, where the user had typed --val-fraction or --prefix."""
    text = str(tiny_run.parent / "tiny.txt")
    out = tmp_path / "out"
    for value in ("1", "0"):
        fails(capsys, ["train", "--text", text, "--out", str(out), *TINY, "--val-fraction", value],
              "error: --val-fraction: expected a fraction in (0, 1)")
        fails(capsys, ["ngram", "--text", text, "--val-fraction", value],
              "error: --val-fraction: expected a fraction in (0, 1)")
    fails(capsys, ["train", "--text", text, "--out", str(out), *TINY, "--hidden-size", "8", "--proj-size", "8"],
          "error: --proj-size: expected < hidden_size=8")
    assert not out.exists()
    fails(capsys, ["train", "--resume", str(tiny_run), "--epochs", "0"],
          "error: --epochs: expected a finite number >= 1")
    fails(capsys, ["generate", str(tiny_run), "--prefix", ""], "error: --prefix: expected at least one symbol")
    model, vocab, _, _ = runs.load_model(tiny_run)
    with pytest.raises(ValueError, match="^prefix: expected at least one symbol"):
        generate(model, vocab, "", 5)


def test_a_fresh_run_refuses_a_directory_that_holds_anything(tiny_run, tmp_path, capsys):
    """Only a directory holding a checkpoint was refused: a run stopped before its first one, or
    another command's run (forecast's, longrange's), had its config.json and metrics.json replaced."""
    text = str(tiny_run.parent / "tiny.txt")
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir()}
    fails(capsys, ["train", "--text", text, "--out", str(tiny_run), *TINY],
          f"error: --out: {str(tiny_run)!r} is not empty", f"continue the run there with --resume {tiny_run}")
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir()} == before
    other = tmp_path / "longrange-run"
    other.mkdir()
    (other / "config.json").write_text('{"tasks": "copy"}')
    err = fails(capsys, ["train", "--text", text, "--out", str(other), *TINY],
                f"error: --out: {str(other)!r} is not empty")
    assert "--resume" not in err  # no run of its own there to continue
    assert [p.name for p in other.iterdir()] == ["config.json"]


def test_a_file_named_like_a_flag_keeps_its_name_in_errors(tmp_path, capsys, monkeypatch):
    """A file's errors start with its path: --text level is not a --level error."""
    monkeypatch.chdir(tmp_path)
    Path("level").write_bytes(b"abc\xff")
    fails(capsys, ["ngram", "--text", "level", "--level", "char"], "error: level: not UTF-8")


def test_a_missing_run_directory_is_named_as_it_was_given(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    fails(capsys, ["train", "--resume", missing], f"error: --resume: no directory at {missing!r}")
    fails(capsys, ["eval", missing], f"error: RUN_DIR: no directory at {missing!r}")
    fails(capsys, ["generate", missing], f"error: RUN_DIR: no directory at {missing!r}")
    (tmp_path / "empty").mkdir()
    fails(capsys, ["train", "--resume", str(tmp_path / "empty")], "error: --resume: ", f"has no {runs.CHECKPOINT}")
    with pytest.raises(FileNotFoundError, match="^run_dir: no directory at "):
        runs.load_model(missing)
