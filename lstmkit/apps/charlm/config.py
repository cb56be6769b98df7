"""The one configuration of a character language model run: data, model, training, output.

Every field has a command-line flag of the same name (`--hidden-size` for `hidden_size`); the
resolved config is saved as `config.json` in the run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lstmkit.cells import LSTM_CELLS
from lstmkit.data import NAMES as CORPUS_NAMES
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import check_number, check_seed, check_types
from lstmkit.utils.runs import DEVICES, config_from_dict

LEVELS = ("char", "word")
PREPROCESS = ("none", "d2l")
PARTITIONS = ("sequential", "random")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class CharLMConfig:
    # --- data ---
    text: str | None = None  # a UTF-8 file; None: the named corpus below
    corpus: str | None = "pydoc"  # pydoc (embedded in CPython), timemachine, tinyshakespeare; a run with text saves None
    level: str = "char"  # tokens: characters, or words (runs of letters/digits, punctuation, whitespace)
    preprocess: str = "none"  # "d2l": letters only, lower case, other runs -> one space (the d2l book's)
    val_fraction: float = 0.1  # the last part of the text, held out for validation
    # --- model ---
    embedding_size: int = 64  # 0: one-hot input
    hidden_size: int = 512  # LSTM units per layer
    num_layers: int = 1  # stacked LSTM layers
    cell: str = "lstm"  # LSTM variant, one of lstmkit.cells.LSTM_CELLS
    dropout: float = 0.0  # between stacked LSTM layers (lstmkit.LSTM's dropout)
    output_dropout: float = 0.4  # on the LSTM output, before the decoder
    proj_size: int = 0  # LSTM projection of the hidden state; 0: none
    tie_weights: bool = False  # decoder weight = embedding weight (needs embedding_size == output size)
    backend: str = "auto"  # lstmkit.LSTM's backend
    # --- training ---
    epochs: int = 50  # passes over the training split, at most
    max_time: float = 150.0  # seconds of training in this invocation; 0: no limit
    max_steps: int = 0  # optimizer steps in all (resumes included); 0: no limit
    batch_size: int = 32  # the global batch: split across ranks under torchrun
    num_steps: int = 35  # truncated BPTT length (the d2l book's)
    partition: str = "sequential"  # sequential: state carried across batches; random: fresh each batch
    optimizer: str = "adam"  # adam or sgd
    lr: float = 5e-3  # the initial learning rate; the schedule moves it
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0  # L2 penalty, applied by the optimizer
    clip: float = 1.0  # max global gradient norm; 0: no clipping
    schedule: str = "plateau"  # plateau: lr * lr_decay after an epoch without improvement
    lr_decay: float = 0.5  # the plateau schedule's factor, in (0, 1]
    min_lr: float = 1e-5  # the floor of both decaying schedules
    patience: int = 4  # early stopping: epochs without improvement; 0: never stop early
    seed: int = 0  # initialisation, batches, dropout and the sample; in [0, 2**32)
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    # --- output ---
    sample_length: int = 400  # symbols generated after training; 0: no sample
    sample_prefix: str = "The "  # the text the sample starts from
    temperature: float = 0.8  # of the sample; 0: greedy
    top_k: int = 0  # sample from the k most likely symbols only; 0: all
    progress: bool = True  # a progress bar on a terminal

    def validate(self) -> "CharLMConfig":
        check_types(self)

        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")

        if self.text is None:
            one_of("corpus", CORPUS_NAMES)
        one_of("level", LEVELS)
        one_of("preprocess", PREPROCESS)
        one_of("cell", LSTM_CELLS)
        one_of("backend", BACKEND_NAMES)
        one_of("partition", PARTITIONS)
        one_of("optimizer", OPTIMIZERS)
        one_of("schedule", SCHEDULES)
        one_of("device", DEVICES)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {self.val_fraction}")
        for name in ("hidden_size", "num_layers", "epochs", "batch_size", "num_steps"):
            check_number(name, getattr(self, name), 1)
        for name in ("embedding_size", "proj_size", "max_time", "max_steps", "weight_decay", "clip",
                     "patience", "momentum", "sample_length", "top_k", "min_lr"):
            check_number(name, getattr(self, name), 0)
        for name in ("dropout", "output_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: expected a rate in [0, 1), got {getattr(self, name)}")
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected < hidden_size={self.hidden_size}, got {self.proj_size}")
        check_number("lr", self.lr, 0, above=True)
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay: expected a factor in (0, 1], got {self.lr_decay}")
        check_number("temperature", self.temperature, 0)
        check_seed("seed", self.seed)
        if self.tie_weights:
            out = self.proj_size or self.hidden_size
            if self.embedding_size != out:
                raise ValueError(f"tie_weights: needs embedding_size == {'proj_size' if self.proj_size else 'hidden_size'} "
                                 f"({out}), got embedding_size={self.embedding_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CharLMConfig":
        return config_from_dict(cls, d)
