"""`lstmkit train`: train a character language model (the README's main job)."""

from __future__ import annotations

import argparse
import sys

from lstmkit.apps.charlm import config as C
from lstmkit.utils.options import add_field_flag, flag, flag_errors, given
from lstmkit.utils.runs import DEVICES, RESUMABLE as RUN_RESUMABLE

HELP = "train a character language model on a text (default: Python's own help text, no download)"

# Flag help for every config field; the flag is the field name with '-' for '_'.
FIELD_HELP = {
    "text": "a UTF-8 text file to train on (instead of --corpus)",
    "corpus": f"a named corpus: {', '.join(C.CORPUS_NAMES)} (pydoc is embedded in Python; the others "
              "download once into ~/.cache/lstmkit and are checked by sha256)",
    "level": "tokens: char, or word (runs of letters/digits, punctuation marks, whitespace)",
    "preprocess": "none, or d2l: letters only, lower case, other runs -> one space, lines joined (the d2l book's)",
    "val_fraction": "the last fraction of the text held out for validation",
    "embedding_size": "embedding width; 0 for one-hot input",
    "hidden_size": "LSTM hidden units per layer",
    "num_layers": "stacked LSTM layers",
    "cell": f"LSTM variant: {', '.join(C.LSTM_CELLS)}",
    "dropout": "dropout between stacked LSTM layers",
    "output_dropout": "dropout on the LSTM output, before the decoder",
    "proj_size": "LSTM projection size (0: none)",
    "tie_weights": "share the embedding matrix with the decoder (needs embedding size == LSTM output size)",
    "backend": f"lstmkit.LSTM backend: {', '.join(C.BACKEND_NAMES)}",
    "epochs": "passes over the training split (at most)",
    "max_time": "stop after this many seconds of training (0: no limit); resume later with --resume",
    "max_steps": "stop after this many optimizer steps in all (0: no limit)",
    "batch_size": "sequences per batch (the global batch: split across processes under torchrun)",
    "num_steps": "time steps per batch (truncated BPTT length)",
    "partition": "sequential (state carried across batches) or random (fresh state every batch)",
    "optimizer": "adam or sgd",
    "lr": "learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay",
    "clip": "clip gradients to this global norm (0: off)",
    "schedule": "learning-rate schedule: plateau (x lr-decay after an epoch without improvement), cosine, constant",
    "lr_decay": "plateau schedule factor",
    "min_lr": "floor of the learning rate",
    "patience": "early stopping: epochs without validation improvement (0: off)",
    "seed": "random seed (initialisation, batches, dropout, the sample)",
    "device": "auto, cpu or cuda",
    "sample_length": "symbols to generate after training (0: no sample)",
    "sample_prefix": "text the sample starts from",
    "temperature": "sampling temperature of the sample (0: greedy)",
    "top_k": "sample only from the k most likely symbols (0: all)",
    "progress": "show a progress bar (on a terminal)",
}
CHOICES = {"corpus": C.CORPUS_NAMES, "level": C.LEVELS, "preprocess": C.PREPROCESS, "cell": C.LSTM_CELLS,
           "backend": C.BACKEND_NAMES, "partition": C.PARTITIONS, "optimizer": C.OPTIMIZERS,
           "schedule": C.SCHEDULES, "device": DEVICES}
# What a resumed run may change: budgets and output, nothing that changes the numbers (which is
# why train() refuses another --epochs under the cosine schedule, whose horizon it sets).
RESUMABLE = {*RUN_RESUMABLE, "max_steps", "patience", "sample_length", "sample_prefix", "temperature", "top_k"}
DATA_FIELDS = ("text", "corpus", "level", "preprocess", "val_fraction")


def add_config_arguments(parser: argparse.ArgumentParser, names) -> None:
    """The flags of the config fields `names` (see `add_field_flag`)."""
    defaults = C.CharLMConfig()
    for name in names:
        add_field_flag(parser, defaults, name, FIELD_HELP[name], choices=CHOICES.get(name),
                       metavar="PATH" if name == "text" else None)


def check_one_source(fields: dict) -> None:
    """--text and --corpus name the same thing, the text to train on: refuse both at once."""
    if "text" in fields and "corpus" in fields:
        raise ValueError("give --text PATH or --corpus NAME, not both")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.HelpFormatter  # defaults are in the help texts
    parser.epilog = ("Writes to RUN_DIR: config.json, vocab.json, model.safetensors (best), "
                     "checkpoint.safetensors (latest), metrics.json, curves.png. The last line printed "
                     "is the best validation perplexity and bits per character, unless training diverged (a "
                     "validation loss that is NaN, inf, or past a perplexity a float holds): then an error "
                     "(exit status 2). Ctrl-C stops training at the next step with a checkpoint (exit status "
                     "130) that --resume continues. Runs under "
                     "`torchrun --nproc_per_node=N -m lstmkit.cli.main train ...` too (DDP).")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory, new or empty (default: a new "
                                                         "runs/charlm-<date>-<time>, with -2, -3, ... after it if "
                                                         "that is taken)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help=f"continue the run in RUN_DIR exactly where it stopped; only "
                             f"{', '.join(flag(n) for n in sorted(RESUMABLE))} may be changed "
                             "(--epochs not under --schedule cosine: its schedule spans the run's epochs)")
    add_config_arguments(parser, FIELD_HELP)


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.charlm.train import train

    fields = given(args, FIELD_HELP)
    if args.resume is not None:
        fixed = sorted(set(fields) - RESUMABLE)
        if fixed:
            raise ValueError(f"--resume continues a run with its own settings; drop {', '.join(map(flag, fixed))}")
        if args.out is not None:
            raise ValueError("--resume writes into the run directory it continues; drop --out")
        how = dict(cfg=C.CharLMConfig(), resume=args.resume, overrides=fields)
    else:
        check_one_source(fields)
        how = dict(cfg=C.CharLMConfig(**fields), out=args.out)
    # Ctrl-C during training makes train() checkpoint and return; one outside it (reading the
    # text, the final sample, a second Ctrl-C while the stop is saved) leaves the last
    # checkpoint as it was, atomic writes included, so a traceback would tell nothing more.
    try:
        with flag_errors(fields):
            result = train(**how)
    except KeyboardInterrupt:
        print("lstmkit train: interrupted", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0  # the shell's status for SIGINT
