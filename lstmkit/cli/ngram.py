"""`lstmkit ngram`: an interpolated Kneser-Ney n-gram baseline on the same split as `lstmkit train`."""

from __future__ import annotations

import argparse
import time

from lstmkit.cli.train import DATA_FIELDS, add_config_arguments, check_one_source
from lstmkit.utils.options import flag_errors, given

HELP = "character n-gram baseline (interpolated Kneser-Ney) on the same train/validation split as `train`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.HelpFormatter
    parser.add_argument("--order", type=int, nargs="+", default=[5], metavar="N",
                        help="n-gram order(s); several (e.g. --order 3 4 5 6 7) print one line each and end with "
                             "the best (default: 5)")
    add_config_arguments(parser, DATA_FIELDS)


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.charlm.config import CharLMConfig
    from lstmkit.apps.charlm.corpus import load_run_corpus
    from lstmkit.apps.charlm.ngram import KneserNey

    fields = given(args, DATA_FIELDS)
    check_one_source(fields)
    for n in args.order:
        if n < 1:
            raise ValueError(f"--order: expected n >= 1, got {n}")
    with flag_errors(fields):
        cfg = CharLMConfig(**fields).validate()
        corpus = load_run_corpus(cfg)
    corpus.require_train(2, "counting n-grams", "a smaller --val-fraction")
    print(f"data: {corpus.describe()}")
    char_lengths = corpus.vocab.char_lengths() if cfg.level == "word" else None
    best = None
    for n in args.order:
        t0 = time.perf_counter()
        model = KneserNey(n, len(corpus.vocab)).fit(corpus.train.tolist())
        m = model.evaluate(corpus.val.tolist(), char_lengths)
        print(f"order {n}: validation perplexity {m.perplexity:.4f}, bits per character {m.bpc:.4f} "
              f"({time.perf_counter() - t0:.1f} s)")
        if best is None or m.bpc < best[1].bpc:
            best = (n, m)
    n, m = best
    print(m.line(f"validation (order {n}, interpolated Kneser-Ney)"))
    return 0
