"""Task generators: deterministic with a seed, and the answer is what the task says it is."""

import numpy as np
import pytest
import torch

from lstmkit.apps.longrange.models import MODELS, SequenceModel, matched_hidden, parameter_count
from lstmkit.apps.longrange.tasks import TASKS, get_task


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_deterministic_with_a_seed(name):
    task = get_task(name)
    x1, y1 = task.generate(16, 12, np.random.default_rng(7))
    x2, y2 = task.generate(16, 12, np.random.default_rng(7))
    x3, y3 = task.generate(16, 12, np.random.default_rng(8))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not (torch.equal(x1, x3) and torch.equal(y1, y3))
    assert x1.shape == (task.seq_len(12), 16, task.input_size) and x1.dtype == torch.float32


def test_adding_problem():
    task = get_task("adding")
    x, y = task.generate(64, 20, np.random.default_rng(0))
    values, markers = x[..., 0], x[..., 1]
    assert (markers.sum(0) == 2).all()
    assert (markers[:10].sum(0) == 1).all() and (markers[10:].sum(0) == 1).all()  # one in each half
    torch.testing.assert_close(y, (values * markers).sum(0))
    assert ((values >= 0) & (values < 1)).all()
    # Chance: always answering 1 gives Var(U1 + U2) = 1/6.
    _, y = task.generate(20000, 20, np.random.default_rng(1))
    assert float(((y - 1) ** 2).mean()) == pytest.approx(1 / 6, abs=0.01)
    assert task.chance == pytest.approx(1 / 6)


def test_copy_task():
    task = get_task("copy")
    K, A = task.symbols, task.alphabet
    x, y = task.generate(8, 30, np.random.default_rng(0))
    tokens = x.argmax(-1)
    assert torch.equal(tokens[:K], y)  # the symbols to recall come first
    assert (tokens[K:K + 30] == A).all() and (tokens[K + 30] == A + 1).all()  # blanks, then the marker
    assert x.shape[0] == 2 * K + 30 and (x.sum(-1) == 1).all()
    out = torch.zeros(x.shape[0], 8, A)
    out[-K:].scatter_(-1, y[..., None], 1.0)  # a perfect answer at the last K steps
    assert task.score(out, y) == 1.0


def test_agreement_task():
    task = get_task("agreement")
    x, y = task.generate(256, 15, np.random.default_rng(0))
    tokens = x.argmax(-1)
    nouns = 2 * task.nouns
    assert torch.equal(tokens[0] % 2, y)  # the subject's number is the answer
    assert (tokens[0] < nouns).all() and (tokens[1] == nouns).all()  # subject, "which"
    assert (tokens[-2] < nouns).all()  # the nearest noun is always an attractor...
    assert 0.35 < float((tokens[-2] % 2 == y).float().mean()) < 0.65  # ...that agrees only by chance
    assert (tokens[-1] == task.input_size - 1).all()  # the query step


def test_bad_lengths():
    with pytest.raises(ValueError, match="length must be >= 2"):
        get_task("adding").generate(2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="task: expected one of"):
        get_task("parity")


@pytest.mark.parametrize("name", MODELS)
def test_budgets_match_the_lstm(name):
    h = matched_hidden(name, 2, 64, 1, "params")
    model = SequenceModel(name, 2, h, 1, backend="reference")
    n = sum(p.numel() for p in model.parameters())
    assert n == parameter_count(name, 2, h, 1)
    assert abs(n / parameter_count("lstm", 2, 64, 1) - 1) < 0.02
    assert matched_hidden(name, 2, 64, 1, "hidden") == 64
    assert model(torch.zeros(5, 3, 2)).shape == (5, 3, 1)


def test_each_task_has_its_shortest_length():
    from lstmkit.apps.longrange.config import LongRangeConfig

    assert {name: task.min_length for name, task in TASKS.items()} == {"adding": 2, "copy": 0, "agreement": 0}
    for name, task in TASKS.items():
        x, _ = task.generate(3, task.min_length, np.random.default_rng(0))
        assert x.shape[0] == task.seq_len(task.min_length)
        with pytest.raises(ValueError, match=f"{name}: .* must be >= {task.min_length}, got {task.min_length - 1}"):
            task.generate(3, task.min_length - 1, np.random.default_rng(0))
    assert LongRangeConfig(tasks=["copy", "agreement"], lengths=[1]).validate().lengths == [1]
    with pytest.raises(ValueError, match="lengths: adding: length must be >= 2, got 1"):
        LongRangeConfig(tasks=["copy", "adding"], lengths=[3, 1]).validate()


@pytest.mark.parametrize("name", list(TASKS))
def test_read_steps_are_the_steps_read_scores(name):
    task = get_task(name)
    n = task.read_steps()
    out = torch.randn(task.seq_len(4), 3, task.output_size)
    earlier = out.clone()
    earlier[:-n] += 1.0
    assert torch.equal(task.read(out), task.read(earlier))
    later = out.clone()
    later[-n] += 1.0
    assert not torch.equal(task.read(out), task.read(later))


@pytest.mark.parametrize("name, read_at", [("adding", "the last step"), ("copy", "the last 10 steps")])
def test_the_gradient_plot_says_where_the_loss_is_read(name, read_at, monkeypatch, tmp_path):
    """It said "the last step" for copy too, whose loss is read at the last K steps."""
    import lstmkit.apps.longrange.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi: figures.append(fig))
    g = [1.0, 0.5, 0.25]
    plots.plot_gradnorm(tmp_path / "g.png", {"task": name, "length": 1, "init": {"lstm": g}, "trained": {"lstm": g}})
    (fig,) = figures
    labels = {ax.get_xlabel() for ax in fig.axes}
    plots.pyplot().close(fig)
    assert labels == {f"time step t (the loss is read at {read_at})"}
