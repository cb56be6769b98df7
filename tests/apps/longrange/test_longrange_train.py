"""The data streams and the evaluation protocol of `lstmkit longrange`'s training."""

import numpy as np
import pytest
import torch

import lstmkit.apps.longrange.train as train
from lstmkit.apps.longrange.config import LongRangeConfig
from lstmkit.apps.longrange.tasks import get_task
from lstmkit.apps.longrange.train import data_rng, fixed_sets, train_one


def _tiny(**kw):
    return LongRangeConfig(**{**dict(tasks=["adding"], lengths=[3], models=["lstm"], hidden_size=4, steps=6,
                                     eval_every=2, eval_size=8, batch_size=4, backend="reference",
                                     progress=False), **kw}).validate()


@pytest.mark.parametrize("name", ["adding", "copy", "agreement"])
def test_validation_and_held_out_sets_depend_on_task_and_length_not_the_seed(name):
    """The held-out set had the seed in its key: seed-to-seed spread mixed in eval-sample noise."""
    task = get_task(name)
    (vx0, vy0), (hx0, hy0) = fixed_sets(_tiny(seed=0, eval_size=64), task, 4)
    (vx1, vy1), (hx1, hy1) = fixed_sets(_tiny(seed=1, eval_size=64), task, 4)
    assert torch.equal(hx0, hx1) and torch.equal(hy0, hy1)
    assert torch.equal(vx0, vx1) and torch.equal(vy0, vy1)
    assert hx0.shape[1] == vx0.shape[1] == 64 and not torch.equal(hx0, vx0)
    # The training stream still follows the seed, and is neither fixed set.
    train0 = task.generate(64, 4, data_rng(name, 4, "train", 0))[0]
    assert not torch.equal(train0, task.generate(64, 4, data_rng(name, 4, "train", 1))[0])
    assert not torch.equal(train0, hx0) and not torch.equal(train0, vx0)
    with pytest.raises(TypeError, match="seed: expected None for the 'eval' stream, got 0"):
        data_rng(name, 4, "eval", 0)
    with pytest.raises(TypeError, match="seed: expected an integer for the 'train' stream, got None"):
        data_rng(name, 4, "train")


def _fake_evaluate(sets, val_value, held_value):
    val_x = sets[0][0]
    return lambda model, task, x, y: val_value if x is val_x else held_value


def test_the_stop_decision_is_taken_on_validation_and_the_held_out_metric_is_reported(monkeypatch):
    """Stopping and reporting used the same held-out set: selection on the test set."""
    cfg, task = _tiny(), get_task("adding")
    sets = fixed_sets(cfg, task, 3)
    # Solved on validation (adding: MSE <= 0.002), not on the held-out set: stops, reports held-out.
    monkeypatch.setattr(train, "evaluate", _fake_evaluate(sets, 0.0, 0.5))
    record, _ = train_one(cfg, task, 3, "lstm", sets)
    assert record["solved_at_step"] == 2 and record["steps_run"] == 2
    assert record["final"] == 0.5 and record["curve"] == [[2, 0.5]] and record["val_curve"] == [[2, 0.0]]
    assert "best" not in record  # selection on the held-out set; nothing read it
    # Solved on the held-out set only: that is no reason to stop.
    monkeypatch.setattr(train, "evaluate", _fake_evaluate(sets, 0.5, 0.0))
    record, _ = train_one(cfg, task, 3, "lstm", sets)
    assert record["solved_at_step"] is None and record["steps_run"] == 6
    assert [s for s, _ in record["curve"]] == [2, 4, 6] and record["final"] == 0.0


def _seen_in_training(task, length, steps, batch):
    """The share of the held-out sequences that the first `steps` training batches (seed 0) contain."""
    _, (x, _) = fixed_sets(_tiny(tasks=[task.name], lengths=[length], eval_size=1000), task, length)
    held = {bytes(s) for s in x.argmax(-1).T.numpy().astype(np.uint8)}
    rng, seen = data_rng(task.name, length, "train", 0), set()
    for _ in range(steps):
        seen.update(bytes(s) for s in task.generate(batch, length, rng)[0].argmax(-1).T.numpy().astype(np.uint8))
    return len(held & seen) / len(held)


def test_copy_held_out_sequences_are_not_in_the_training_data():
    """With 5 symbols (8^5 = 32,768 sequences) the default budget drew 99.9% of the held-out ones."""
    task, d = get_task("copy"), LongRangeConfig()
    assert task.symbols == 10 and task.alphabet ** task.symbols > 1000 * d.steps * d.batch_size
    assert _seen_in_training(task, 0, 200, d.batch_size) < 0.01  # 25,600 draws: 54% with 5 symbols
