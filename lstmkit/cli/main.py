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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, unless the help already gives it, there is none
    (None), or the flag is a switch (store_true); a list default reads as typed on the command line.
    A description or epilog with line breaks of its own (a table of a run's files) is kept line for
    line; others are wrapped to the terminal."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return text if "\n" in text else super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        if (action.default is None or action.default is argparse.SUPPRESS
                or (action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction))
                or "(default" in help or "%(default)" in help):
            return action.help
        if isinstance(action.default, (list, tuple)):
            shown = " ".join(map(str, action.default)).replace("%", "%%")
            return f"{help} (default: {shown})"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstmkit",
        description="LSTM networks from the equations: reference cells, fast kernels, applications.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"lstmkit.cli.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # what was parsed, for a subcommand that records its own command line (bench): sys.argv is
    # the caller's when main() is called from Python (a test, a notebook, a wrapper script)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, OSError) as e:
        # Bad input is reported as one line, not a traceback: a wrong value, or a path that cannot
        # be read or written (missing, a directory, no permission, a name too long).
        print(f"lstmkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
