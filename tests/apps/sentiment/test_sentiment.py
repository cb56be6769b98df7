"""The sentiment app: packed mean pooling ignores padding, the models, vectors, and short end-to-end
runs of both commands on tiny inline data (checkpoints, resume, confusion matrices, errors)."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from lstmkit.apps.sentiment import imdb
from lstmkit.apps.sentiment.common import confusion_matrix, format_confusion, read_run_file
from lstmkit.apps.sentiment.config import IMDBConfig, SSTConfig
from lstmkit.apps.sentiment.models import ReviewClassifier, TreeSentiment, packed_mean
from lstmkit.apps.sentiment.vocab import Vocab, load_vectors
from lstmkit.cli.main import main
from lstmkit.fold import random_binary_tree
from lstmkit.utils.checkpoint import load_checkpoint
from lstmkit.utils.runs import new_run_dir


def test_packed_mean_ignores_padding():
    torch.manual_seed(0)
    seqs = [torch.randn(n, 3) for n in (2, 5, 1, 4)]
    padded = pad_sequence(seqs, batch_first=True, padding_value=1e6)  # huge padding must not leak
    packed = pack_padded_sequence(padded, torch.tensor([2, 5, 1, 4]), batch_first=True, enforce_sorted=False)
    torch.testing.assert_close(packed_mean(packed), torch.stack([s.mean(0) for s in seqs]))


def test_review_classifier_output_does_not_depend_on_batch_companions():
    torch.manual_seed(0)
    model = ReviewClassifier(20, 4, 5, backend="reference").eval()
    short = torch.tensor([3, 4, 5])
    alone = model(short[None], torch.tensor([3]))
    tokens = torch.zeros(3, 9, dtype=torch.int64)
    tokens[0, :9] = torch.arange(1, 10)
    tokens[1, :3] = short
    tokens[1, 3:] = 17  # garbage after the end of the review: not read
    tokens[2, :6] = torch.arange(6)
    batched = model(tokens, torch.tensor([9, 3, 6]))
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-5, atol=1e-6)


def test_tree_model_modes_agree():
    torch.manual_seed(0)
    rng = random.Random(0)
    trees = [random_binary_tree(rng.randint(1, 9), 30, rng) for _ in range(5)]
    model = TreeSentiment(30, 6, 7, 5).eval().double()
    a = model(trees, mode="fold")
    b = model(trees, mode="recursive")
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_vocab_and_vectors(tmp_path):
    vocab = Vocab.build("the film the Film a the a".split(), max_size=3, min_freq=1)
    assert vocab.words == ["<pad>", "<unk>", "the", "a", "Film"] and vocab["zzz"] == 1
    assert Vocab.from_list(vocab.to_list()).words == vocab.words
    path = tmp_path / "vec.txt"
    path.write_text("2 3\nthe 1 2 3\nfilm 4 5 6\nunused 0 0 0\n", encoding="utf-8")
    matrix, found = load_vectors(path, vocab)
    assert found == 2 and matrix.shape == (5, 3)
    assert matrix[2].tolist() == [1, 2, 3] and matrix[4].tolist() == [4, 5, 6]  # Film <- film
    assert matrix[0].abs().sum() == 0
    path.write_text("the 1 2 3\nfilm 4 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: line 2: 3 fields, expected a word and the 3 "
                                         "values of the first vector$"):
        load_vectors(path, vocab)
    path.write_bytes(b"the 1 2 3\r\nfilm 4 5 6\r\n")  # Windows line ends
    assert load_vectors(path, vocab)[0][4].tolist() == [4, 5, 6]
    path.write_bytes(b"the 1 2 3\nfilm\xff 4 5 6\n")
    with pytest.raises(ValueError, match=f"{path}: line 2: not UTF-8 text"):
        load_vectors(path, vocab)



def test_vector_words_with_spaces_are_read(tmp_path):
    """glove.840B.300d.txt has words with spaces (`. . . 0.1 ...`): the loader took the first field
    as the word and stopped at that line, "14 values, the first vector had 12"."""
    vocab = Vocab([". . .", "at  &t", "film", "the"])
    path = tmp_path / "vec.txt"
    path.write_text("the 1 2 3\n. . . 4 5 6\nnot in the vocabulary 0 0 0\nat  &t 7 8 9\nfilm 1 1 1 \n",
                    encoding="utf-8")
    matrix, found = load_vectors(path, vocab)
    assert found == 4 and matrix[vocab[". . ."]].tolist() == [4, 5, 6] and matrix[vocab["at  &t"]].tolist() == [7, 8, 9]
    assert matrix[vocab["the"]].tolist() == [1, 2, 3] and matrix[vocab["film"]].tolist() == [1, 1, 1]
    path.write_text("the 1 2 3\n. . . 4 5 6\n7 8 9\n", encoding="utf-8")  # a line missing its word
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: line 3: 3 fields, expected a word and the 3 "):
        load_vectors(path, vocab)
    path.write_text("the 1 2 3\n. . . 4 nan 6\n", encoding="utf-8")  # a word with spaces gets the same checks
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: line 2: expected finite numbers .*, got nan$"):
        load_vectors(path, vocab)


@pytest.mark.parametrize("bad, shown", [("nan", "nan"), ("-inf", "-inf"), ("Infinity", "inf"), ("1e39", "1e+39")])
def test_vectors_that_are_not_finite_float32_are_refused(tmp_path, bad, shown):
    """One NaN row made training silently NaN (exit 0, a model predicting one class); 1e39 is
    finite as a float but inf in the float32 embedding."""
    vocab = Vocab(["the", "film"])
    path = tmp_path / "vec.txt"
    path.write_text(f"the 1 2 3\nfilm 4 {bad} 6\nunused nan 0 0\n", encoding="utf-8")
    message = rf"^{re.escape(str(path))}: line 2: expected finite numbers .*, got {re.escape(shown)}$"
    with pytest.raises(ValueError, match=message):
        load_vectors(path, vocab)
    # A line the vocabulary does not use is not read, and the first bad line used is the one named.
    path.write_text(f"unused nan 0 0\nthe 1 {bad} 3\nfilm {bad} 5 6\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: line 2: "):
        load_vectors(path, vocab)


@pytest.mark.parametrize("cls", [SSTConfig, IMDBConfig])
def test_threads_beyond_the_cores_are_refused(cls):
    """torch.set_num_threads(100000) killed the process; the bench already refused it."""
    cls(threads=0).validate()
    cls(threads=os.cpu_count() or 1).validate()
    with pytest.raises(ValueError, match=rf"^threads: expected at most {os.cpu_count()} \(os.cpu_count\(\)\), "
                                         "got 100000$"):
        cls(threads=100000).validate()
    with pytest.raises(ValueError, match="^threads: expected an integer >= 0, got -1$"):
        cls(threads=-1).validate()


def test_run_file_that_does_not_hold_a_mapping_is_a_value_error(tmp_path):
    """A crafted lstmkit-tagged safetensors whose state is a list crashed with AttributeError."""
    path = tmp_path / "checkpoint.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"lstmkit": json.dumps([1, 2])})
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_run_file(tmp_path, "checkpoint.safetensors", "lstmkit.sentiment.sst.checkpoint/1")


@pytest.mark.parametrize("cls, field, value", [
    (SSTConfig, "weight_decay", float("nan")), (SSTConfig, "clip", float("nan")),
    (SSTConfig, "max_time", float("nan")), (SSTConfig, "embedding_lr", float("inf")),
    (SSTConfig, "lr", float("nan")), (IMDBConfig, "clip", float("inf")), (IMDBConfig, "max_time", float("nan")),
    (IMDBConfig, "weight_decay", float("-inf")), (IMDBConfig, "val_fraction", float("nan")),
])
def test_nan_and_inf_settings_are_refused(cls, field, value):
    with pytest.raises(ValueError, match=f"{field}: expected .*, got {value}"):
        cls(**{field: value}).validate()


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert "true \\ predicted" in format_confusion(cm, ("a", "b", "c"))


TREES = [
    "(4 (3 (2 a) (4 great)) (2 film))", "(0 (0 (2 a) (0 terrible)) (2 film))",
    "(3 (2 quite) (3 good))", "(1 (2 rather) (1 bad))", "(2 (2 a) (2 film))", "(4 wonderful)",
    "(0 (2 -LRB-) (0 (0 awful) (2 -RRB-)))", "(3 (3 good) (2 (2 and) (3 fun)))",
]


@pytest.fixture
def sst_dir(tmp_path):
    d = tmp_path / "sst"
    d.mkdir()
    for split, k in (("train", 8), ("dev", 5), ("test", 6)):
        (d / f"{split}.txt").write_text("\n".join(TREES[:k]) + "\n", encoding="utf-8")
    return d


def test_sst_command_end_to_end(sst_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["sentiment", "sst", "--data-dir", str(sst_dir), "--out", str(out), "--epochs", "1",
            "--embedding-size", "8", "--hidden-size", "8", "--batch-size", "3", "--threads", "1", "--no-progress"]
    assert main(args) == 0
    for name in ("config.json", "vocab.json", "model.safetensors", "checkpoint.safetensors",
                 "metrics.json", "confusion_dev.png", "confusion_test.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["root_accuracy"] <= 1.0 and len(metrics["history"]) == 1
    assert sum(map(sum, metrics["test"]["confusion"])) == 6
    assert "test root accuracy" in capsys.readouterr().out
    # Resume: one more epoch, from the checkpoint; settings that change the numbers are refused.
    assert main(["sentiment", "sst", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.safetensors")["epoch"] == 2
    assert main(["sentiment", "sst", "--resume", str(out), "--hidden-size", "4"]) == 2
    assert "drop --hidden-size" in capsys.readouterr().err
    # Binary task (neutral-rooted trees are dropped), with pretrained vectors for some words.
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("great 1 2 3 4 5 6\nfilm 0 1 0 1 0 1\nawful -1 -2 -3 -4 -5 -6\n", encoding="utf-8")
    assert main(["sentiment", "sst", "--data-dir", str(sst_dir), "--task", "binary", "--out", str(tmp_path / "bin"),
                 "--vectors", str(vectors), "--epochs", "1", "--hidden-size", "4", "--threads", "1",
                 "--no-progress"]) == 0
    assert "SST binary: 7 train / 4 dev / 5 test trees, vocabulary 16, 3 words with vectors" in capsys.readouterr().out
    assert json.loads((tmp_path / "bin" / "config.json").read_text())["embedding_size"] == 6


def test_sst_command_errors(sst_dir, tmp_path, capsys):
    assert main(["sentiment", "sst", "--data-dir", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "--data-dir: nothing at" in capsys.readouterr().err
    (sst_dir / "dev.txt").write_text(TREES[0] + "\n(2 (1 a)\n", encoding="utf-8")
    assert main(["sentiment", "sst", "--data-dir", str(sst_dir), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "dev.txt: line 2: column" in capsys.readouterr().err
    assert main(["sentiment", "sst", "--hidden-size", "0"]) == 2
    assert main(["sentiment", "sst", "--threads", "100000"]) == 2
    assert f"threads: expected at most {os.cpu_count()} (os.cpu_count()), got 100000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sentiment", "sst", "--task", "ternary"])


def test_a_run_saved_with_more_threads_than_these_cores_resumes_with_threads_given(sst_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    """The refusal named the saved value against os.cpu_count() but not the way out."""
    out = tmp_path / "run"
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert main(["sentiment", "sst", "--data-dir", str(sst_dir), "--out", str(out), "--epochs", "1",
                 "--hidden-size", "4", "--embedding-size", "4", "--threads", "2", "--no-progress"]) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # the run moves to a smaller machine
    capsys.readouterr()
    assert main(["sentiment", "sst", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    assert ("threads: the run was saved with 2, more than the cores here (os.cpu_count() = 1); resume with --threads N, "
            "at most 1 (0: torch's default)") in capsys.readouterr().err
    assert main(["sentiment", "sst", "--resume", str(out), "--epochs", "2", "--threads", "0", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.safetensors")["epoch"] == 2


def test_relative_data_paths_resume_from_anywhere_and_failures_leave_no_run_dir(sst_dir, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sentiment", "sst", "--data-dir", "none", "--no-progress"]) == 2
    assert "--data-dir: nothing at 'none'" in capsys.readouterr().err  # before the run directory
    (tmp_path / "empty").mkdir()
    assert main(["sentiment", "sst", "--data-dir", "empty", "--no-progress"]) == 2
    assert "train.txt" in capsys.readouterr().err  # after it: the run directory made is removed
    assert list((tmp_path / "runs").iterdir()) == []
    assert main(["sentiment", "sst", "--data-dir", "sst", "--out", "run", "--epochs", "1", "--hidden-size", "4",
                 "--embedding-size", "4", "--threads", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(sst_dir.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["sentiment", "sst", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")["epoch"] == 2


def test_sst_bad_options_and_out_write_nothing(sst_dir, tmp_path, capsys):
    run = ["sentiment", "sst", "--data-dir", str(sst_dir), "--epochs", "1", "--hidden-size", "4",
           "--embedding-size", "4", "--threads", "1", "--no-progress"]
    out = tmp_path / "r"
    assert main([*run, "--out", str(out), "--weight-decay", "nan"]) == 2
    assert "weight_decay: expected a finite number >= 0, got nan" in capsys.readouterr().err
    assert not out.exists()
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for bad in (afile, afile / "run"):
        assert main([*run, "--out", str(bad)]) == 2
        assert f"--out: cannot create directory {str(bad)!r}" in capsys.readouterr().err
    assert afile.read_text() == "keep me\n"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert main([*run, "--out", str(out)]) == 2
    assert f"--out: {str(out)!r} is not empty" in capsys.readouterr().err
    # The binary task drops neutral-rooted sentences: a split left empty is refused before any file.
    (sst_dir / "dev.txt").write_text("(2 (2 a) (2 film))\n", encoding="utf-8")
    assert main([*run, "--task", "binary", "--out", str(tmp_path / "bin")]) == 2
    assert f"{sst_dir / 'dev.txt'}: no tree with a non-neutral root" in capsys.readouterr().err
    assert list((tmp_path / "bin").iterdir()) == []


@pytest.fixture
def reviews(tmp_path):
    rng = random.Random(0)
    good, bad = "great fun wonderful superb loved".split(), "awful boring terrible hated bad".split()
    rows = ["split,label,rating,id,text"]
    for k in range(60):
        label = k % 2
        words = rng.choices(good if label else bad, k=rng.randint(3, 12)) + rng.choices(["the", "film"], k=3)
        rows.append(f"{'train' if k < 40 else 'test'},{'pos' if label else 'neg'},0,{k},\"{' '.join(words)}<br />\"")
    csv = tmp_path / "reviews.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv


def test_imdb_command_end_to_end(reviews, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sentiment", "imdb", "--data", str(reviews), "--out", str(out), "--epochs", "3",
                 "--embedding-size", "8", "--hidden-size", "8", "--batch-size", "8", "--lr", "0.02",
                 "--backend", "reference", "--threads", "1", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.7  # separable by single words
    assert (out / "confusion_test.png").is_file() and (out / "model.safetensors").is_file()
    assert "IMDB: test accuracy" in capsys.readouterr().out
    assert main(["sentiment", "imdb", "--data", str(tmp_path / "none.csv"), "--no-progress"]) == 2
    assert "--data: nothing at" in capsys.readouterr().err
    # A missing --vectors file is named before the reviews are read, and no --out is made.
    assert main(["sentiment", "imdb", "--data", str(reviews), "--vectors", str(tmp_path / "glove.txt"),
                 "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    assert f"--vectors: nothing at {str(tmp_path / 'glove.txt')!r}" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_imdb_subsets_are_drawn_apart(reviews):
    """--test-limit leaves the training and validation reviews as they were; runs that differ in
    --train-limit are scored on the same test reviews."""
    def split(vocab=None, **limits):
        data, vocab = imdb.load_data(IMDBConfig(data=str(reviews), **limits).validate(), vocab)
        return {k: v[0] for k, v in data.items()}, vocab
    whole, vocab = split()
    limited, limited_vocab = split(test_limit=5)
    assert (limited["train"], limited["val"], limited_vocab.to_list()) == (whole["train"], whole["val"], vocab.to_list())
    assert len(limited["test"]) == 5
    # the same vocabulary for both, so that the same reviews are the same ids
    assert split(vocab, train_limit=20, test_limit=5)[0]["test"] == split(vocab, train_limit=30, test_limit=5)[0]["test"]


def test_imdb_embeddings_take_no_weight_decay(reviews, tmp_path):
    out = tmp_path / "run"
    assert main(["sentiment", "imdb", "--data", str(reviews), "--out", str(out), "--epochs", "1", "--embedding-size",
                 "4", "--hidden-size", "4", "--weight-decay", "0.5", "--backend", "reference", "--threads", "1",
                 "--no-progress"]) == 0
    state = load_checkpoint(out / "checkpoint.safetensors")
    (decayed, embedding), moments = state["optimizer"]["param_groups"], state["optimizer"]["state"]
    assert (decayed["weight_decay"], embedding["weight_decay"], len(embedding["params"])) == (0.5, 0.0, 1)
    assert moments[embedding["params"][0]]["exp_avg"].shape == state["model"]["embedding.weight"].shape


def test_imdb_split_left_empty_is_refused_before_any_file(reviews, tmp_path, capsys):
    out = tmp_path / "run"
    run = ["sentiment", "imdb", "--data", str(reviews), "--out", str(out), "--epochs", "1", "--embedding-size", "4",
           "--hidden-size", "4", "--backend", "reference", "--threads", "1", "--no-progress"]
    assert main([*run, "--train-limit", "1"]) == 2
    err = capsys.readouterr().err
    assert (f"{reviews}: 1 training review(s) (--train-limit 1) leave none to train on once --val-fraction 0.1 "
            "holds out 1 for validation; expected at least 2") in err
    assert list(out.iterdir()) == []  # so the retry below is not refused as a non-empty --out
    assert main([*run, "--train-limit", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["train_limit"] == 2


def test_saved_configs_name_the_device_and_backend_that_ran(sst_dir, reviews, tmp_path, auto_picks_reference):
    here = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = ["--epochs", "1", "--embedding-size", "4", "--hidden-size", "4", "--threads", "1", "--no-progress"]
    sst = tmp_path / "sst-run"
    assert main(["sentiment", "sst", "--data-dir", str(sst_dir), "--out", str(sst), *tiny]) == 0
    saved = json.loads((sst / "config.json").read_text())
    assert "auto" not in saved.values() and saved["device"] == here
    # A resumed run takes its saved config as it is, and resolves an "auto" given again.
    assert main(["sentiment", "sst", "--resume", str(sst), "--epochs", "2", "--device", "auto", "--no-progress"]) == 0
    assert json.loads((sst / "config.json").read_text()) == {**saved, "epochs": 2}
    imdb = tmp_path / "imdb-run"
    assert main(["sentiment", "imdb", "--data", str(reviews), "--out", str(imdb), *tiny]) == 0
    saved = json.loads((imdb / "config.json").read_text())
    assert "auto" not in saved.values() and (saved["device"], saved["backend"]) == (here, "reference")
    assert load_checkpoint(imdb / "checkpoint.safetensors")["config"] == saved


def test_default_run_dirs_never_collide_and_a_failed_run_removes_only_its_own(sst_dir, tmp_path, monkeypatch,
                                                                             capsys, frozen_clock):
    """Runs started in the same second took one runs/sentiment-<task>-<date>-<time>: the second
    was refused as a non-empty --out, or, started while the first one still trained, shared it."""
    monkeypatch.chdir(tmp_path)
    name = "sentiment-sst-fine-" + frozen_clock
    assert [new_run_dir(None, "sentiment-sst-fine"), new_run_dir(None, "sentiment-sst-fine")] == [
        Path("runs", name), Path("runs", f"{name}-2")]
    run = ["sentiment", "sst", "--data-dir", str(sst_dir), "--epochs", "1", "--hidden-size", "4",
           "--embedding-size", "4", "--threads", "1", "--no-progress"]
    assert main(run) == 0 and main(run) == 0
    (tmp_path / "empty").mkdir()
    assert main([*run, "--data-dir", "empty"]) == 2 and "train.txt" in capsys.readouterr().err
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [name, *(f"{name}-{n}" for n in (2, 3, 4))]  # -5 removed
    assert (runs / f"{name}-3" / "metrics.json").is_file() and (runs / f"{name}-4" / "metrics.json").is_file()


def test_a_run_whose_training_loss_turns_nan_fails_and_keeps_the_epochs_before(sst_dir, tmp_path, capsys):
    """SGD at lr 1e30: the NaN model's accuracy (of the one class argmax picks for NaN) beat the
    first best of -1, and the run exited 0 with that model saved as the best."""
    run = ["sentiment", "sst", "--data-dir", str(sst_dir), "--embedding-size", "4", "--hidden-size", "4",
           "--optimizer", "sgd", "--lr", "1e30", "--embedding-lr", "1e30", "--clip", "0", "--threads", "1",
           "--no-progress"]
    out = tmp_path / "nan-at-once"
    assert main([*run, "--epochs", "1", "--batch-size", "1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("lstmkit sentiment: error: training diverged: the training loss of epoch 1 "
                                       "is nan; try a lower --lr or --embedding-lr, or turn on gradient clipping "
                                       "(--clip N; 0 turns it off) (the run directory keeps what was written "
                                       "before)\n")
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint.safetensors").exists()
    out = tmp_path / "nan-later"  # one batch an epoch: a finite first epoch, a huge second one, a NaN third
    assert main([*run, "--epochs", "3", "--out", str(out)]) == 2
    assert "training diverged: the training loss of epoch 3 is nan" in capsys.readouterr().err
    state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["epoch"] == 2 and state["best"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in load_checkpoint(out / "model.safetensors")["model"].values())
