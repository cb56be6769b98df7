"""Entry point of the `lstmkit` console script.

Each subcommand is a module `lstmkit.cli.<name>` that defines `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Adding a subcommand means adding its
module and its name below; nothing is discovered implicitly.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "explain",
    "forecast",
    "longrange",
    "bench",
    "train",
    "generate",
    "eval",
    "ngram",
    "sentiment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstmkit",
        description="LSTM networks from the equations: reference cells, fast kernels, applications.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"lstmkit.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        # Bad input is reported as one line, not a traceback.
        print(f"lstmkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
