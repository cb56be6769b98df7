"""`lstmkit sentiment sst|imdb`: sentiment classification (Tree-LSTM on SST, BiLSTM on IMDB)."""

from __future__ import annotations

import argparse
import dataclasses

from lstmkit.apps.sentiment.common import RESUMABLE
from lstmkit.apps.sentiment.config import MODES, OPTIMIZERS, SST_TASKS, IMDBConfig, SSTConfig
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import add_field_flag, flag, given
from lstmkit.utils.runs import DEVICES

HELP = "train a sentiment classifier: a Tree-LSTM on SST (sst) or a bidirectional LSTM on IMDB (imdb)"

COMMON_HELP = {
    "vectors": "pretrained word vectors, GloVe text format (`word v1 ... vd` per line); sets --embedding-size",
    "embedding_size": "word embedding width (random init unless --vectors)",
    "hidden_size": "LSTM hidden units",
    "dropout": "dropout rate before the classifier",
    "epochs": "passes over the training data (at most)",
    "max_time": "stop training after this many seconds (0: no limit), then evaluate; --resume continues",
    "batch_size": "examples per optimizer step",
    "optimizer": "adagrad, adam or sgd",
    "lr": "learning rate",
    "weight_decay": "L2 weight decay (not on the embeddings)",
    "clip": "clip gradients to this global norm (0: off)",
    "min_freq": "words seen fewer times in training become <unk>",
    "train_limit": "use only N training examples (0: all), for quick runs",
    "seed": "random seed (initialisation, order, dropout)",
    "device": "auto, cpu or cuda",
    "threads": "torch intra-op threads, at most os.cpu_count() (0: torch's default)",
    "progress": "show progress bars",
}
SST_HELP = {
    "data_dir": "directory with the SST PTB-style trees train.txt, dev.txt, test.txt",
    "task": "fine (5 classes) or binary (neutral-rooted sentences dropped; negative vs positive)",
    "lowercase": "lower-case words before the vocabulary and vector lookup",
    "freeze_embeddings": "do not train the embeddings (useful with --vectors)",
    "mode": "tree batching: fold (batched by depth), eager (one call per node, for debugging) or "
            "recursive (the plain per-tree reference)",
    "embedding_lr": "learning rate of the embedding matrix",
    "all_nodes": "train on every labelled node (Tai et al.); --no-all-nodes: sentence roots only",
}
IMDB_HELP = {
    "data": "reviews CSV with columns split,label,text (label neg/pos, split train/test)",
    "test_limit": "evaluate on N random test reviews (0: all)",
    "val_fraction": "fraction of the training reviews held out to pick the best epoch",
    "max_len": "keep the first N tokens of each review (0: all)",
    "vocab_size": "the most frequent training tokens kept (plus <pad>, <unk>)",
    "num_layers": "stacked bidirectional LSTM layers",
    "backend": f"lstmkit.LSTM backend: {', '.join(BACKEND_NAMES)}",
}
CHOICES = {"task": SST_TASKS, "mode": MODES, "optimizer": OPTIMIZERS, "device": DEVICES, "backend": BACKEND_NAMES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Each run writes a directory: config.json, vocab.json, model.safetensors (best "
                     "validation epoch), checkpoint.safetensors (latest; --resume), metrics.json and "
                     "confusion_<split>.png.")
    sub = parser.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for name, cls, helps, run_name, desc in (
        ("sst", SSTConfig, {**COMMON_HELP, **SST_HELP}, "sst-<task>",
         "Constituency Tree-LSTM (Tai et al. 2015) on the Stanford Sentiment Treebank, batched with "
         "lstmkit.fold; reports sentence (root) accuracy on dev and test."),
        ("imdb", IMDBConfig, {**COMMON_HELP, **IMDB_HELP}, "imdb",
         "Embedding -> bidirectional lstmkit.LSTM on PackedSequence -> mean over valid steps -> linear, "
         "on IMDB reviews; reports test accuracy."),
    ):
        p = sub.add_parser(name, help=desc.split(";")[0], description=desc)
        p.add_argument("--out", metavar="RUN_DIR", help=f"run directory, new or empty (default: a new runs/sentiment-"
                                                         f"{run_name}-<date>-<time>, with -2, -3, ... after it if "
                                                         "that is taken)")
        p.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR with its next epoch; only "
                            f"{', '.join(flag(n) for n in sorted(RESUMABLE) if n in helps)} may be changed")
        defaults = cls()
        for f in dataclasses.fields(cls):  # the only None defaults are files
            add_field_flag(p, defaults, f.name, helps[f.name], choices=CHOICES.get(f.name),
                           metavar="PATH" if getattr(defaults, f.name) is None else None)
        p.set_defaults(_config_cls=cls)


def run(args: argparse.Namespace) -> int:
    cls = args._config_cls
    fields = given(args, (f.name for f in dataclasses.fields(cls)))
    if args.task_name == "sst":
        from lstmkit.apps.sentiment.sst import train_sst as train
    else:
        from lstmkit.apps.sentiment.imdb import train_imdb as train
    if args.resume is not None:
        if args.out is not None:
            raise ValueError("--resume writes into the run directory it continues; drop --out")
        train(resume=args.resume, overrides=fields)
    else:
        train(cls(**fields), out=args.out)
    return 0
