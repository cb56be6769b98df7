"""The `lstmkit` command's parser: every subcommand's help."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lstmkit.cli.main import COMMANDS, build_parser


def help_of(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")
    return re.sub(r"\s+", " ", sub.choices[command].format_help())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_gives_each_default_once_and_as_typed(command):
    """A help that gave its default in words also got argparse's "(default: None)"; list
    defaults read as Python lists; switches read "(default: False)"."""
    text = help_of(command)
    assert "(default: None)" not in text
    assert not re.search(r"\(default: [^()]*\) \(default:", text)
    assert "(default: ['" not in text and "(default: [" not in text


def test_help_names_what_a_gpu_run_uses_and_every_longrange_default():
    bench = help_of("bench")
    assert "with --device cuda, torch's current count" in bench and "8192 with --device cuda" in bench
    longrange = help_of("longrange")
    for text in ("(default: 128)", "(default: adding)", "(default: rnn,gru,lstm,peephole)", "(default: auto)"):
        assert text in longrange
    assert longrange.split("--seed SEED ")[-1].split(" --")[0].endswith("(default: 0)")


def test_the_cli_runs_without_docstrings():
    """Under python -OO every command died at import: forecast's epilog was read off a docstring."""
    for argv in (["--help"], ["forecast", "--help"]):
        done = subprocess.run([sys.executable, "-OO", "-m", "lstmkit.cli.main", *argv], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "checkpoint.safetensors" in done.stdout
