"""The configuration of a `lstmkit longrange` run (one flag per field, saved as config.json)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from lstmkit.apps.longrange.models import MATCHES, MODELS
from lstmkit.apps.longrange.tasks import DEFAULT_LENGTHS, TASKS
from lstmkit.kernels import BACKEND_NAMES
from lstmkit.utils.options import check_number, check_seed, check_types


@dataclass
class LongRangeConfig:
    tasks: list[str] = field(default_factory=lambda: ["adding"])  # names from TASKS
    lengths: list[int] | None = None  # None: each task's defaults (DEFAULT_LENGTHS)
    models: list[str] = field(default_factory=lambda: list(MODELS))  # names from MODELS, all trained alike
    hidden_size: int = 64  # the LSTM's; see `match`
    match: str = "params"  # "params": RNN/GRU get the hidden size with the LSTM's parameter count
    steps: int = 2000  # optimizer steps per model, task and length: the shared budget
    batch_size: int = 128  # fresh random examples per step
    lr: float = 1e-2  # Adam learning rate
    clip: float = 1.0  # max global gradient norm; 0: none
    forget_bias: float = 1.0  # initial forget-gate bias of the LSTMs
    eval_every: int = 100  # steps between evaluations (validation and held-out sets)
    eval_size: int = 1000  # examples per task and length in each of the fixed validation and held-out sets
    stop_when_solved: bool = True  # stop a model early once its validation metric reaches the task's "solved"
    seed: int = 0  # weights and training examples; not the validation and held-out sets (per task and length)
    backend: str = "auto"  # lstmkit.LSTM backend of the LSTMs
    gradnorm: bool = True  # plot |dL/dx_t| per step, Elman RNN vs LSTM
    progress: bool = True  # a progress bar

    def lengths_of(self, task: str) -> list[int]:
        return list(self.lengths) if self.lengths else list(DEFAULT_LENGTHS[task])

    def validate(self) -> "LongRangeConfig":
        check_types(self)
        if not self.tasks:
            raise ValueError("tasks: expected at least one task")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"tasks: expected names from {list(TASKS)}, got {t!r}")
        if not self.models:
            raise ValueError("models: expected at least one model")
        for m in self.models:
            if m not in MODELS:
                raise ValueError(f"models: expected names from {list(MODELS)}, got {m!r}")
        for name, what in (("tasks", "name"), ("models", "name"), ("lengths", "length")):
            repeated = [n for n, count in Counter(getattr(self, name) or ()).items() if count > 1]
            if repeated:
                raise ValueError(f"{name}: expected each {what} once, got {', '.join(map(repr, repeated))} "
                                 "more than once")
        if self.lengths is not None and not self.lengths:
            raise ValueError("lengths: expected at least one length (or null: each task's defaults)")
        # The range is each task's own (adding from 2, copy and agreement from 0): checked here, not
        # only in the generators, so that it is refused before any task trains or --out is made.
        for t in self.tasks:
            for n in self.lengths_of(t):
                try:
                    TASKS[t].check_length(n)
                except ValueError as e:
                    raise ValueError(f"lengths: {e}") from None
        if self.match not in MATCHES:
            raise ValueError(f"match: expected one of {list(MATCHES)}, got {self.match!r}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend: expected one of {list(BACKEND_NAMES)}, got {self.backend!r}")
        for name in ("hidden_size", "steps", "batch_size", "eval_every", "eval_size"):
            check_number(name, getattr(self, name), 1)
        check_number("lr", self.lr, 0, above=True)
        check_number("clip", self.clip, 0)
        check_number("forget_bias", self.forget_bias)
        check_seed("seed", self.seed)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
