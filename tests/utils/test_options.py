"""Numeric option checks: NaN and infinities refused, bounds inclusive or not, seeds in range; and
one flag per config field."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest

from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.forecast.config import ForecastConfig
from lstmkit.apps.longrange.config import LongRangeConfig
from lstmkit.apps.sentiment.config import IMDBConfig, SSTConfig
from lstmkit.utils.options import add_field_flag, check_number, check_seed, check_threads, check_types, flag, given
from lstmkit.utils.runs import config_from_dict


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match=f"clip: expected a finite number >= 0, got {value}"):
        check_number("clip", value, 0)
    with pytest.raises(ValueError, match=f"forget_bias: expected a finite number, got {value}"):
        check_number("forget_bias", value)


def test_an_int_past_any_float_is_refused_not_an_overflow_error():
    """math.isfinite(10**400) raised OverflowError, which no CLI handler catches: a traceback."""
    with pytest.raises(ValueError, match="^epochs: expected a finite number >= 1, got 1000"):
        check_number("epochs", 10**400, 1)


def test_bounds():
    check_number("clip", 0, 0)
    check_number("lr", np.float32(1e-3), 0, above=True)
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got 0"):
        check_number("lr", 0, 0, above=True)
    with pytest.raises(TypeError, match="lr: expected a number, got str '0.1'"):
        check_number("lr", "0.1", 0)
    with pytest.raises(TypeError, match="expected a number, got bool"):
        check_number("lr", True, 0)


def test_seeds():
    check_seed("--seed", 0)
    check_seed("--seed", 2**32 - 1)
    for bad in (-1, 2**32, 10**20):
        with pytest.raises(ValueError, match=r"--seed: expected an integer in \[0, 2\*\*32\), got "):
            check_seed("--seed", bad)
    for bad, shown in ((1.0, "float 1.0"), (True, "bool True"), ("3", "str '3'")):
        with pytest.raises(TypeError, match=rf"--seed: expected an integer in \[0, 2\*\*32\), got {shown}"):
            check_seed("--seed", bad)



@pytest.mark.parametrize("cls", [CharLMConfig, ForecastConfig, LongRangeConfig, SSTConfig, IMDBConfig])
def test_every_app_config_passes_its_own_type_check_with_its_defaults(cls):
    check_types(cls())  # and no annotation of theirs lacks a rule (that would raise)
    assert config_from_dict(cls, dataclasses.asdict(cls())) == cls()


@pytest.mark.parametrize("cls, fields, message", [
    (CharLMConfig, {"hidden_size": "64"}, "hidden_size: expected an integer, got str '64'"),
    (CharLMConfig, {"hidden_size": True}, "hidden_size: expected an integer, got bool True"),
    (CharLMConfig, {"tie_weights": 1}, "tie_weights: expected true or false, got int 1"),
    (CharLMConfig, {"corpus": 3}, "corpus: expected a string or null, got int 3"),  # str | None with a str default
    (CharLMConfig, {"lr": "0.1"}, "lr: expected a number, got str '0.1'"),
    (SSTConfig, {"vectors": ["a"]}, "vectors: expected a string or null, got list ['a']"),
    (LongRangeConfig, {"lengths": [10, "20"]}, "lengths: expected a list of integers or null, got list [10, '20']"),
    (LongRangeConfig, {"tasks": "adding"}, "tasks: expected a list of strings, got str 'adding'"),
])
def test_a_saved_config_of_the_wrong_types_is_refused_naming_the_field(cls, fields, message):
    saved = {**dataclasses.asdict(cls()), **fields}
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        config_from_dict(cls, saved)
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        cls(**saved).validate()  # the same check for a config built in Python


def test_the_error_names_nested_annotations_too():
    @dataclass
    class Nested:
        sizes: list[int | None] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match=r"^sizes: expected a list of integers or nulls, got list \['a'\]$"):
        check_types(Nested(["a"]))
    check_types(Nested([1, None]))


def test_json_numbers_and_python_sequences_pass_where_they_mean_the_field():
    check_types(CharLMConfig(lr=1, max_time=0, corpus=None, text="t.txt"))  # an int is a JSON number
    check_types(LongRangeConfig(lengths=(10, 20)))


def test_threads_up_to_the_core_count():
    """torch.set_num_threads far above the cores kills the process: refused first, by every caller."""
    cores = os.cpu_count() or 1
    check_threads("--threads", [1, cores])
    check_threads("threads", [0], low=0)
    with pytest.raises(ValueError, match=rf"^--threads: expected at most {cores} \(os.cpu_count\(\)\), got 100000$"):
        check_threads("--threads", [1, 100000])
    with pytest.raises(ValueError, match="^threads: expected an integer >= 1, got 0$"):
        check_threads("threads", [0])
    with pytest.raises(ValueError, match="^threads: expected an integer >= 0, got -1$"):
        check_threads("threads", [-1], low=0)
    for bad, shown in ((2.0, "float 2.0"), (True, "bool True"), ("2", "str '2'")):
        with pytest.raises(TypeError, match=f"^threads: expected an integer, got {shown}$"):
            check_threads("threads", [bad])


@dataclass
class _Config:
    path: str | None = None
    size: int = 4
    rate: float = 0.5
    mode: str = "a"
    progress: bool = True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    defaults = _Config()
    add_field_flag(parser, defaults, "path", "a file", metavar="PATH")
    add_field_flag(parser, defaults, "size", "how many")
    add_field_flag(parser, defaults, "rate")
    add_field_flag(parser, defaults, "mode", "which", choices=("a", "b"))
    add_field_flag(parser, defaults, "progress", "a bar", default_text="on")
    return parser


def test_one_flag_per_field_typed_by_its_default_and_absent_unless_given():
    parser = _parser()
    names = [f.name for f in dataclasses.fields(_Config)]
    assert given(parser.parse_args([]), names) == {}
    args = parser.parse_args(["--size", "7", "--rate", "0.25", "--no-progress", "--path", "x.txt"])
    assert given(args, names) == {"path": "x.txt", "size": 7, "rate": 0.25, "progress": False}
    assert given(args, ["size"]) == {"size": 7}
    help_text = " ".join(parser.format_help().split())
    for shown in ("--path PATH a file --size", "how many (default: 4)", "--rate RATE (default: 0.5)",
                  "which (default: a)", "--progress, --no-progress a bar (default: on)"):
        assert shown in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    assert flag("max_time") == "--max-time"
