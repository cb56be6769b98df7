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
    from lstmkit.apps.charlm.corpus import check_run_text, load_run_corpus, preprocess
    from lstmkit.apps.charlm.metrics import evaluate
    from lstmkit.apps.charlm.runs import MODEL, MODEL_FORMAT, load_training_state, model_from_state, read_run_file
    from lstmkit.apps.charlm.vocab import tokenize
    from lstmkit.data import CorpusError, read_text_file
    from lstmkit.utils.runs import resolve_device

    device = resolve_device(args.device, "--device")
    saved = read_run_file(args.run_dir, MODEL, MODEL_FORMAT, "RUN_DIR")
    model, vocab, cfg, _ = model_from_state(saved, device)
    if args.text is None:
        check_run_text(cfg, args.run_dir, "put it back there to score its validation split, or pass "
                                          "--text PATH to score a whole file")
        corpus = load_run_corpus(cfg)
        # Model files written before they recorded the sha256 have it in the run's checkpoint.
        run_sha256 = saved.get("corpus_sha256") or load_training_state(args.run_dir, "RUN_DIR")["corpus_sha256"]
        corpus.check_unchanged(run_sha256, args.run_dir, "; pass --text PATH to score a whole file instead")
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
                 device=device)
    print(f"model: {args.run_dir}; text: {what}")
    print(m.line("evaluation"))
    return 0
