"""`lstmkit eval RUN_DIR`: perplexity and bits per character of a trained model on a text."""

from __future__ import annotations

import argparse

HELP = "evaluate a model trained by `lstmkit train` on a text: perplexity and bits per character"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `lstmkit train`")
    parser.add_argument("--text", metavar="PATH", default=None,
                        help="a UTF-8 text file to evaluate on (default: the run's own validation split)")
    parser.add_argument("--unknown", choices=("error", "skip"), default="error",
                        help="symbols outside the model's vocabulary: an error naming them, or skip them "
                             "(their count is reported)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run the model")


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.charlm.corpus import load_run_corpus, preprocess
    from lstmkit.apps.charlm.metrics import evaluate
    from lstmkit.apps.charlm.runs import load_model
    from lstmkit.apps.charlm.vocab import tokenize
    from lstmkit.data import CorpusError, read_text_file

    model, vocab, cfg, _ = load_model(args.run_dir, args.device)
    if args.text is None:
        corpus = load_run_corpus(cfg)
        if corpus.vocab != vocab:
            raise ValueError(f"the run's corpus ({corpus.source}) changed since training; pass --text PATH")
        ids, what = corpus.val, f"validation split of {corpus.source}"
    else:
        text = preprocess(read_text_file(args.text), cfg.preprocess)
        ids, what = vocab.encode(text, unknown=args.unknown, what=args.text), args.text
        skipped = len(tokenize(text, cfg.level)) - len(ids)
        if skipped:
            print(f"skipped {skipped:,} {cfg.level}(s) outside the vocabulary")
    if len(ids) < 2:
        raise CorpusError(f"{what}: needs at least 2 {cfg.level}s to evaluate, got {len(ids)}")
    m = evaluate(model, ids, char_lengths=vocab.char_lengths() if cfg.level == "word" else None,
                 device=args.device)
    print(f"model: {args.run_dir}; text: {what}")
    print(m.line("evaluation"))
    return 0
