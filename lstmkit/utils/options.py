"""What every app's config and its command line share: the numeric checks (errors name the
option) and one flag per config field."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import numbers
import os
import types
import typing
from typing import Any, Iterable

SEEDS = 2**32  # numpy's seed range [0, 2**32), the narrowest of the RNGs a run seeds


def check_number(name: str, value: object, low: float | None = None, *, above: bool = False) -> None:
    """Refuse anything but a finite real number, >= low (> low with above=True).

    Written as what is accepted, not as `value < low`: every comparison with NaN is false, so a
    rejection test lets NaN through; and no option means anything at infinity (their "no limit"
    is spelled 0).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    bound = "" if low is None else f" {'>' if above else '>='} {low:g}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int past any float, as 10**400: no option means anything there
        finite = False
    if not finite or (low is not None and (value <= low if above else value < low)):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value}")


def check_seed(name: str, value: object) -> None:
    """Refuse anything but an int every seeded RNG accepts (a TypeError or ValueError naming `name`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer in [0, 2**32), got {type(value).__name__} {value!r}")
    if not 0 <= value < SEEDS:
        raise ValueError(f"{name}: expected an integer in [0, 2**32), got {value!r}")


def check_types(config: Any) -> None:
    """Refuse a dataclass config with a field not of the type its annotation names (a TypeError
    naming the field): a hand-edited config.json or checkpoint gets the checks the command line's
    typed flags give, not an AttributeError deep in a run. An int passes for a float, as in JSON."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _is_a(value, hint):
            raise TypeError(f"{f.name}: expected {_a(hint)}, got {type(value).__name__} {value!r}")


# What each annotation is called in check_types' errors (JSON's words: a config is read from JSON).
_NAMES = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings"), type(None): ("null", "nulls")}


def _is_a(value: object, hint: Any) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_is_a(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # a bool is an Integral, but no integer or number field means one
        return False
    if hint is int:
        return isinstance(value, numbers.Integral)
    if hint is float:
        return isinstance(value, numbers.Real)
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"check_types: no rule for the annotation {hint!r}")


def _a(hint: Any, plural: bool = False) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_a(h, plural) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"{'lists' if plural else 'a list'} of {_a(typing.get_args(hint)[0], plural=True)}"
    return _NAMES[hint][plural]


def check_threads(name: str, values: Iterable[object], low: int = 1) -> None:
    """Refuse any of `values` that is not an int in [low, os.cpu_count()] (low=0 where 0 means
    torch's default). The upper bound because torch.set_num_threads far above the core count
    crashes the process instead of raising."""
    cores = os.cpu_count() or 1
    for n in values:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {type(n).__name__} {n!r}")
        if n < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {n}")
        if n > cores:
            raise ValueError(f"{name}: expected at most {cores} (os.cpu_count()), got {n}")


@contextlib.contextmanager
def flag_errors(given: dict[str, Any]):
    """A ValueError or TypeError raised inside that starts with the name of one of `given` (the
    config fields or arguments the command line gave, with their values), as the library names
    them (`val_fraction: ...`), is raised again naming its flag instead (`--val-fraction: ...`):
    the option the user typed. A message that starts with one of the values is left as it is: a
    file's errors start with its path, which may read like a field's name (`--text level`)."""
    values = {str(v) for v in given.values()}
    try:
        yield
    except (ValueError, TypeError) as e:
        name, sep, rest = str(e).partition(": ")
        if not sep or name not in given or name in values:
            raise
        raise type(e)(f"{flag(name)}: {rest}") from None


def flag(name: str) -> str:
    """The command-line flag of config field `name`: `--hidden-size` for `hidden_size`."""
    return "--" + name.replace("_", "-")


def add_field_flag(parser, defaults: Any, name: str, help: str = "", *, default_text: str | None = None,
                   choices: Iterable | None = None, metavar: str | None = None) -> None:
    """On `parser` (or an argument group of one), the flag of config field `name`, typed like its
    value in the config `defaults`; a bool is a --name / --no-name pair. The help ends with the
    default (`default_text` where given; none for None). A flag left out is absent from the
    namespace (SUPPRESS): the config's own default applies, and --resume can tell a flag given
    from one that was not (`given`)."""
    default = getattr(defaults, name)
    kw: dict[str, Any] = {}
    if isinstance(default, bool):
        kw["action"] = argparse.BooleanOptionalAction
    elif default is not None:
        kw["type"] = type(default)
    if choices is not None:
        kw["choices"] = choices
    if metavar is not None:
        kw["metavar"] = metavar
    shown = default if default_text is None else default_text
    if shown is not None:
        help = f"{help} (default: {shown})".strip()
    parser.add_argument(flag(name), dest=name, default=argparse.SUPPRESS, help=help, **kw)


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The config fields among `names` that were named on the command line (see `add_field_flag`)."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}
