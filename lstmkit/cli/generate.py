"""`lstmkit generate RUN_DIR`: sample text from a trained character language model."""

from __future__ import annotations

import argparse
import sys

HELP = "generate text from a model trained by `lstmkit train`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `lstmkit train`")
    parser.add_argument("--prefix", default=None,
                        help="text to start from, read once (default: the run's sample prefix); symbols "
                             "outside the model's vocabulary are an error that names them")
    parser.add_argument("--length", type=int, default=200, help="symbols to generate after the prefix")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="softmax temperature: < 1 safer, > 1 wilder, 0 greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample only from the k most likely symbols (0: all)")
    parser.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run the model")


def run(args: argparse.Namespace) -> int:
    from lstmkit.apps.charlm.corpus import preprocess_prefix
    from lstmkit.apps.charlm.generate import encode_prefix, generate
    from lstmkit.apps.charlm.runs import load_model
    from lstmkit.utils.options import check_number, check_seed
    from lstmkit.utils.runs import resolve_device

    # Checked before the prefix is printed, under the flags' names; generate() would only
    # refuse them, by its parameters' names, once the prefix is out.
    for name in ("length", "temperature", "top_k"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), 0)
    if args.seed is not None:
        check_seed("--seed", args.seed)
    device = resolve_device(args.device, "--device")
    model, vocab, cfg, _ = load_model(args.run_dir, device, what="RUN_DIR")
    prefix = preprocess_prefix(cfg.sample_prefix if args.prefix is None else args.prefix, cfg.preprocess)
    encode_prefix(vocab, prefix, "--prefix")  # fail before printing anything
    sys.stdout.write(prefix)

    def emit(token: str) -> None:
        sys.stdout.write(token)
        sys.stdout.flush()

    generate(model, vocab, prefix, args.length, args.temperature, args.top_k, args.seed, device, on_token=emit)
    sys.stdout.write("\n")
    return 0
