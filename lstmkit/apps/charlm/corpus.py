"""The corpus of a run: read, optionally normalised, tokenised, split into train and validation.

The validation split is the last `val_fraction` of the tokens (a contiguous tail, so no
validation text leaks into training through overlapping windows). The vocabulary covers the
whole text, so that both splits can be encoded; it is saved with the model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.vocab import Vocab, tokenize
from lstmkit.data import CorpusError, load_corpus, read_text_file


def preprocess(text: str, how: str) -> str:
    """"none": unchanged; "d2l": exactly the d2l book's char corpus (sec. 9.2): each line becomes
    `re.sub('[^A-Za-z]+', ' ', line).strip().lower()` and the lines are concatenated (no newlines)."""
    if how == "none":
        return text
    if how == "d2l":
        return "".join(re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.split("\n"))
    raise ValueError(f"preprocess: expected 'none' or 'd2l', got {how!r}")


@dataclass
class Corpus:
    source: str  # the file path or "corpus NAME"
    sha256: str  # of the text after preprocessing
    vocab: Vocab
    train: torch.Tensor  # int64 token ids
    val: torch.Tensor

    def describe(self) -> str:
        return (f"{self.source}: {len(self.train) + len(self.val):,} {self.vocab.level}s, vocabulary "
                f"{len(self.vocab)}, train {len(self.train):,} / validation {len(self.val):,}")

    def require_train(self, need: int, what: str, fix: str) -> None:
        """A CorpusError unless the training split has `need` tokens for `what`; `fix` names the
        options of the command at hand that would lower the need."""
        if len(self.train) < need:
            raise CorpusError(
                f"{self.source}: too short: the training split has {len(self.train):,} {self.vocab.level}s, "
                f"{what} needs {need:,}; use a longer text or {fix}")

    def check_unchanged(self, run_sha256: str, who: str, fix: str = "") -> None:
        """A CorpusError unless this is the text a run was trained on: an edit that keeps the
        vocabulary still moves the train/validation split, and with it every number."""
        if run_sha256 != self.sha256:
            raise CorpusError(f"{who}: the corpus {self.source} changed since the run started "
                              f"(sha256 {self.sha256[:12]}..., the run used {run_sha256[:12]}...){fix}")


def check_run_text(cfg: CharLMConfig, run_dir: str | Path, fix: str) -> None:
    """A FileNotFoundError unless the --text file named in a run's saved config is still there.
    Without it `read_text_file` would blame --text, a flag the user did not give this time."""
    if cfg.text is not None and not Path(cfg.text).is_file():
        raise FileNotFoundError(f"the run's training text {cfg.text!r} (named in "
                                f"{str(Path(run_dir) / 'config.json')!r}) is missing; {fix}")


def read_config_text(cfg: CharLMConfig) -> tuple[str, str]:
    """(text, source) for the config's --text file or named corpus, preprocessed."""
    if cfg.text is not None:
        text, source = read_text_file(cfg.text), str(cfg.text)
    else:
        text, source = load_corpus(cfg.corpus), f"corpus {cfg.corpus!r}"
    text = preprocess(text, cfg.preprocess)
    if not text.strip():
        raise CorpusError(f"{source}: nothing left after preprocess={cfg.preprocess!r}")
    return text, source


def preprocess_prefix(prefix: str, how: str) -> str:
    """A generation prefix mapped as the training text was, without trimming its ends."""
    if how == "d2l":
        return re.sub("[^A-Za-z]+", " ", prefix).lower()
    return preprocess(prefix, how)


def min_train_tokens(batch_size: int, num_steps: int) -> int:
    """Tokens the training split needs so that every epoch has at least one full batch."""
    # Both partitions drop a random offset of up to num_steps - 1 tokens, then need
    # batch_size windows of num_steps inputs plus one target beyond.
    return batch_size * num_steps + num_steps


def split_ids(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_val = max(2, round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def load_run_corpus(cfg: CharLMConfig) -> Corpus:
    """The config's text, tokenised and split; reads only, so errors leave nothing written.
    Whether the split is long enough depends on the command: see `Corpus.require_train`."""
    text, source = read_config_text(cfg)
    tokens = tokenize(text, cfg.level)
    vocab = Vocab.build(tokens, cfg.level)
    ids = torch.tensor([vocab.index[t] for t in tokens], dtype=torch.int64)
    train, val = split_ids(ids, cfg.val_fraction)
    return Corpus(source, hashlib.sha256(text.encode()).hexdigest(), vocab, train, val)
