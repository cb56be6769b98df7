"""The configurations of the two sentiment runs: SST (Tree-LSTM) and IMDB (bidirectional LSTM).

Every field has a command-line flag of the same name (`--hidden-size` for `hidden_size`); the
resolved config is saved as `config.json` in the run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lstmkit.fold.treelstm import MODES
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import check_number, check_seed, check_threads, check_types
from lstmkit.utils.runs import DEVICES, config_from_dict

SST_TASKS = ("fine", "binary")
OPTIMIZERS = ("adagrad", "adam", "sgd")


class _Config:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return config_from_dict(cls, d)

    def _one_of(self, name: str, allowed) -> None:
        if getattr(self, name) not in allowed:
            raise ValueError(f"{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")

    def _bounded(self, names, low, above: bool = False) -> None:
        for name in names:
            check_number(name, getattr(self, name), low, above=above)

    def _rate(self, names) -> None:
        for name in names:
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name}: expected a rate in [0, 1), got {v}")


@dataclass
class SSTConfig(_Config):
    PATHS = ("data_dir", "vectors")  # made absolute when a run starts, so --resume works from anywhere
    # --- data ---
    data_dir: str = "../shared/data/sst/trees"  # train.txt, dev.txt, test.txt (relative: to the working directory)
    task: str = "fine"  # fine: 5 classes; binary: neutral-rooted sentences dropped, 2 classes
    train_limit: int = 0  # use only the first N training trees (0: all)
    vectors: str | None = None  # GloVe-format text file (word v1 ... vd); None: random init
    lowercase: bool = False  # lower-case words (vocabulary and vector lookup)
    min_freq: int = 1  # words seen fewer times in train are <unk>
    # --- model ---
    embedding_size: int = 100  # set from the vectors file when one is given
    hidden_size: int = 100  # Tree-LSTM hidden units
    dropout: float = 0.5  # on every node's h before the classifier
    freeze_embeddings: bool = False  # keep the embeddings fixed (useful with vectors)
    mode: str = "fold"  # how trees are batched: fold, eager (debugging) or recursive (reference)
    # --- training ---
    epochs: int = 10  # passes over the training trees (at most)
    max_time: float = 240.0  # seconds of training (0: no limit); the run then evaluates and stops
    batch_size: int = 25  # trees per optimizer step
    optimizer: str = "adagrad"  # adagrad, adam or sgd
    lr: float = 0.05  # learning rate of everything but the embeddings
    embedding_lr: float = 0.1  # learning rate of the embedding matrix
    weight_decay: float = 1e-4  # L2, not on the embeddings
    clip: float = 5.0  # max global gradient norm (0: off)
    all_nodes: bool = True  # loss on every labelled node (Tai et al.); off: roots only
    seed: int = 0  # initialisation, order, dropout
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # torch intra-op threads (0: torch's default)
    progress: bool = True  # progress bars

    def validate(self) -> "SSTConfig":
        check_types(self)
        self._one_of("task", SST_TASKS)
        self._one_of("mode", MODES)
        self._one_of("optimizer", OPTIMIZERS)
        self._one_of("device", DEVICES)
        self._bounded(("embedding_size", "hidden_size", "epochs", "batch_size", "min_freq"), 1)
        self._bounded(("train_limit", "max_time", "weight_decay", "clip"), 0)
        check_threads("threads", (self.threads,), low=0)
        self._bounded(("lr", "embedding_lr"), 0, above=True)
        self._rate(("dropout",))
        check_seed("seed", self.seed)
        return self


@dataclass
class IMDBConfig(_Config):
    PATHS = ("data", "vectors")  # made absolute when a run starts, so --resume works from anywhere
    # --- data ---
    data: str = "../shared/data/imdb/imdb_subset.csv"  # columns split,label,text (relative: to the working directory)
    train_limit: int = 0  # use a random subset of N training reviews (0: all)
    test_limit: int = 0  # evaluate on a random subset of N test reviews (0: all)
    val_fraction: float = 0.1  # of the training reviews, held out to pick the best epoch
    max_len: int = 200  # keep the first N tokens of a review (0: all)
    vocab_size: int = 20000  # the most frequent training tokens, plus <pad> and <unk>
    min_freq: int = 2  # tokens seen fewer times in training become <unk>
    vectors: str | None = None  # GloVe-format text file; None: random init
    # --- model ---
    embedding_size: int = 64  # set from the vectors file when one is given
    hidden_size: int = 64  # per direction
    num_layers: int = 1  # stacked bidirectional layers
    dropout: float = 0.3  # on the pooled features, and between stacked layers
    backend: str = "auto"  # lstmkit.LSTM's backend
    # --- training ---
    epochs: int = 3  # passes over the training reviews (at most)
    max_time: float = 240.0  # seconds of training (0: no limit); the run then evaluates and stops
    batch_size: int = 64  # reviews per optimizer step
    optimizer: str = "adam"  # adagrad, adam or sgd
    lr: float = 2e-3  # learning rate
    weight_decay: float = 0.0  # L2, not on the embeddings
    clip: float = 5.0  # max global gradient norm (0: off)
    seed: int = 0  # initialisation, subsets, order, dropout
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # torch intra-op threads (0: torch's default)
    progress: bool = True  # progress bars

    def validate(self) -> "IMDBConfig":
        check_types(self)
        self._one_of("optimizer", OPTIMIZERS)
        self._one_of("device", DEVICES)
        self._one_of("backend", BACKEND_NAMES)
        self._bounded(("embedding_size", "hidden_size", "num_layers", "epochs", "batch_size",
                       "vocab_size", "min_freq"), 1)
        self._bounded(("train_limit", "test_limit", "max_len", "max_time", "weight_decay", "clip"), 0)
        check_threads("threads", (self.threads,), low=0)
        self._bounded(("lr",), 0, above=True)
        self._rate(("dropout",))
        if not 0.0 < self.val_fraction < 0.5:  # NaN fails this too
            raise ValueError(f"val_fraction: expected a fraction in (0, 0.5), got {self.val_fraction}")
        check_seed("seed", self.seed)
        return self
