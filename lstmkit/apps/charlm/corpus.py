"""The corpus of a run: read, optionally normalised, tokenised, split into train and validation.

The validation split is the last `val_fraction` of the tokens (a contiguous tail, so no
validation text leaks into training through overlapping windows). The vocabulary covers the
whole text, so that both splits can be encoded; it is saved with the model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

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
    """Everything training needs from the text, checked before anything is written."""
    text, source = read_config_text(cfg)
    tokens = tokenize(text, cfg.level)
    vocab = Vocab.build(tokens, cfg.level)
    ids = torch.tensor([vocab.index[t] for t in tokens], dtype=torch.int64)
    train, val = split_ids(ids, cfg.val_fraction)
    need = min_train_tokens(cfg.batch_size, cfg.num_steps)
    if len(train) < need:
        raise CorpusError(
            f"{source}: too short: the training split has {len(train):,} {cfg.level}s, one batch of "
            f"batch_size={cfg.batch_size} x num_steps={cfg.num_steps} needs {need:,}; use a longer "
            "text or a smaller --batch-size / --num-steps")
    return Corpus(source, hashlib.sha256(text.encode()).hexdigest(), vocab, train, val)
