"""lstmkit.fold: batched execution equals the eager (one call at a time) run, values and gradients;
depth scheduling; caching of identical calls; the errors a user can make."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from lstmkit.fold import Fold, Segments

D = torch.float64


class Graph(nn.Module):
    """Ops of every argument kind, with a log of (op, rows) of each call."""

    def __init__(self, d: int = 5, vocab: int = 7) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Parameter(torch.randn(vocab, d, generator=g, dtype=D))
        self.w = nn.Parameter(torch.randn(2 * d, d, generator=g, dtype=D) / d)
        self.u = nn.Parameter(torch.randn(d, 3 * d, generator=g, dtype=D) / d)
        self.calls: list[tuple[str, int]] = []

    def source(self, ids):  # int -> (B, d)
        self.calls.append(("source", ids.shape[0]))
        return self.emb[ids]

    def vec(self, x):  # tensor (d,) -> (B, d)
        self.calls.append(("vec", x.shape[0]))
        return torch.tanh(x)

    def mix(self, a, b, scale):  # two nodes and a float -> (B, d)
        self.calls.append(("mix", a.shape[0]))
        return torch.tanh(torch.cat([a, b], 1) @ self.w) * scale[:, None]

    def three(self, a, mode):  # one node, a static -> three outputs of different widths
        self.calls.append(("three", a.shape[0]))
        sign = 1.0 if mode == "plus" else -1.0
        return a.sin() * sign, torch.cat([a, a.cos()], 1), (a * a).sum(1, keepdim=True)

    def gather(self, xs: Segments, wide):  # a list of nodes (any number) and a wide node
        self.calls.append(("gather", xs.size))
        return torch.tanh(xs.sum() + wide @ self.u[:, : wide.shape[1]].T)


def build_dag(fold: Fold, inputs: list[torch.Tensor], seed: int = 0):
    """A graph that is no tree: shared nodes, several consumers, mixed depths, all argument kinds."""
    rng = random.Random(seed)
    leaves = [fold.add("source", rng.randrange(7)) for _ in range(6)] + [fold.add("vec", x) for x in inputs]
    layer = leaves
    outs = []
    for depth in range(4):
        nxt = []
        for _ in range(5):
            a, b = rng.choice(layer), rng.choice(leaves)  # reuse across levels
            m = fold.add("mix", a, b, rng.choice([0.5, 1.5]))
            s, wide, norm = fold.add("three", m, rng.choice(["plus", "minus"])).split(3)
            g = fold.add("gather", [s, m] + rng.sample(leaves, rng.randrange(0, 3)), wide)
            nxt += [g, s]
            outs.append(norm)
        layer = nxt
    return layer, outs


def run(fold_cls, **kw):
    model = Graph()
    inputs = [torch.randn(5, dtype=D, generator=torch.Generator().manual_seed(k), requires_grad=True)
              for k in range(3)]
    fold = fold_cls(**kw)
    heads, norms = build_dag(fold, inputs)
    a, b = fold.apply(model, [heads, norms])
    loss = (a * torch.arange(a.numel(), dtype=D).view_as(a)).sin().sum() + b.square().sum()
    loss.backward()
    grads = [p.grad for p in model.parameters()] + [x.grad for x in inputs]
    return (a, b), grads, model.calls, fold


def test_non_tree_graph_batched_equals_eager():
    (a1, b1), g1, calls, fold = run(Fold)
    (a2, b2), g2, eager_calls, _ = run(Fold, eager=True)
    torch.testing.assert_close(a1, a2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b1, b2, rtol=1e-12, atol=1e-12)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    # Batched: one call per group; eager: one per recorded node, each of one row.
    assert len(calls) == len(fold.schedule()) < len(eager_calls) == len(fold)
    assert all(rows == 1 for _, rows in eager_calls)
    assert Fold(eager=True).eager and not Fold().eager


def test_depth_scheduling():
    model = Graph()
    fold = Fold()
    x = fold.add("source", 0)
    chain = [x]
    for k in range(4):
        chain.append(fold.add("mix", chain[-1], x, 1.0))
    side = fold.add("mix", x, fold.add("source", 1), 1.0)  # depth 1, like chain[1]
    deep = fold.add("mix", chain[-1], side, 1.0)  # depth 5
    sched = fold.schedule()
    assert sched == [("source", 0, 2), ("mix", 1, 2), ("mix", 2, 1), ("mix", 3, 1), ("mix", 4, 1), ("mix", 5, 1)]
    (out,) = fold.apply(model, [[deep, side, x]])
    assert model.calls == [(op, n) for op, _, n in sched]
    assert out.shape == (3, 5)


def test_identical_calls_are_computed_once():
    model = Graph()
    fold = Fold()
    a, b = fold.add("source", 3), fold.add("source", 3)
    assert a.index == b.index
    t = torch.ones(5, dtype=D)
    assert fold.add("vec", t).index == fold.add("vec", t).index  # the same tensor object
    assert fold.add("vec", t).index != fold.add("vec", torch.ones(5, dtype=D)).index
    m1 = fold.add("mix", a, b, 0.5)
    m2 = fold.add("mix", b, a, 0.5)
    assert m1.index == m2.index and fold.add("mix", a, b, 1.5).index != m1.index
    assert fold.add("gather", [m1, a], m1).index == fold.add("gather", [m2, b], m2).index
    (out,) = fold.apply(model, [[m1, m2, a]])
    assert dict(model.calls)["source"] == 1 and dict(model.calls)["mix"] == 2
    torch.testing.assert_close(out[0], out[1])

    nocache = Fold(cache=False)
    assert nocache.add("source", 3).index != nocache.add("source", 3).index


def test_a_rejected_call_is_not_cached():
    fold = Fold()
    for _ in range(2):  # the second try must raise again, not return a cached node
        with pytest.raises(TypeError, match="op must be a method name"):
            fold.add(7, 3)
    assert len(fold) == 0 and fold.add("source", 3).index == 0


def test_rows_come_back_in_list_order_and_repeat():
    model = Graph()
    fold = Fold()
    nodes = [fold.add("source", k) for k in (4, 2, 6)]
    (out,) = fold.apply(model, [[nodes[2], nodes[0], nodes[2], nodes[1]]])
    torch.testing.assert_close(out, model.emb[[6, 4, 6, 2]])


def test_gradients_with_retain_graph_and_autograd_grad():
    model = Graph()
    fold = Fold()
    heads, _ = build_dag(fold, [torch.randn(5, dtype=D)])
    (out,) = fold.apply(model, [heads])
    loss = out.pow(2).sum()
    (g1,) = torch.autograd.grad(loss, [model.w], retain_graph=True)
    (g2,) = torch.autograd.grad(loss, [model.w], retain_graph=True)  # a second pass starts from zero
    torch.testing.assert_close(g1, g2)
    loss.backward()
    torch.testing.assert_close(model.w.grad, g1)


def test_no_grad_and_inputs_without_grad():
    model = Graph().requires_grad_(False)
    fold = Fold()
    heads, _ = build_dag(fold, [torch.randn(5, dtype=D)])
    (out,) = fold.apply(model, [heads])
    assert not out.requires_grad
    with torch.no_grad():
        model.requires_grad_(True)
        fold2 = Fold()
        heads, _ = build_dag(fold2, [torch.randn(5, dtype=D)])
        (out2,) = fold2.apply(model, [heads])
    assert not out2.requires_grad


def test_user_errors():
    model = Graph()
    fold = Fold()
    x = fold.add("source", 1)
    with pytest.raises(ValueError, match="another Fold"):
        Fold().add("mix", x, x, 1.0)
    with pytest.raises(ValueError, match="at least one node"):
        fold.add("gather", [], x)
    with pytest.raises(TypeError, match="neither a Node"):
        fold.add("mix", x, {"a": 1}, 1.0)
    with pytest.raises(ValueError, match="split: expected the node of a whole call's result, got .*already one output"):
        x.split(2)[0].split(2)
    with pytest.raises(ValueError, match=r"node\[1\]: expected the node of a whole call's result"):
        x[0][1]

    f = Fold()
    f.add("nonexistent", 1)
    with pytest.raises(AttributeError, match="no method 'nonexistent'"):
        f.apply(model, [[f.add("source", 1)]])

    f = Fold()
    three = f.add("three", f.add("source", 1), "plus")
    with pytest.raises(ValueError, match=r"use node.split\(3\)"):
        f.apply(model, [[three]])

    f = Fold()
    s, wide, _ = f.add("three", f.add("source", 1), "plus").split(3)
    with pytest.raises(ValueError, match="different shapes"):
        f.apply(model, [[s, wide]])

    class Bad(nn.Module):
        def op(self, ids):
            return torch.zeros(1, 3)
    f = Fold()
    n = [f.add("op", k) for k in range(4)]
    with pytest.raises(ValueError, match="first dimension must be the batch"):
        f.apply(Bad(), [n])
    with pytest.raises(TypeError, match="list of lists"):
        f.apply(Bad(), n[0])


def test_numpy_scalars_are_batched_as_ints_and_floats():
    model = Graph()
    fold = Fold()
    ids = np.array([4, 2, 6])
    nodes = [fold.add("source", k) for k in ids]  # np.int64
    assert fold.add("source", np.int32(2)).index == nodes[1].index == fold.add("source", 2).index
    x = nodes[0]
    mixes = [fold.add("mix", x, x, s) for s in (np.float64(0.5), np.float32(1.5), 2.5)]
    assert fold.schedule() == [("source", 0, 3), ("mix", 1, 3)]  # one group each, as with Python scalars
    heads = fold.add("three", x, True), fold.add("three", x, False)  # bools stay static: two groups
    assert [g[2] for g in fold.schedule() if g[0] == "three"] == [1, 1]
    out, mixed = fold.apply(model, [nodes, mixes])
    torch.testing.assert_close(out, model.emb[[4, 2, 6]])
    ref = Fold()
    y = ref.add("source", 4)
    (expected,) = ref.apply(model, [[ref.add("mix", y, y, s) for s in (0.5, 1.5, 2.5)]])
    torch.testing.assert_close(mixed, expected)
    assert heads[0].index != heads[1].index


def test_apply_wants_lists_and_nodes_are_not_iterable():
    fold = Fold()
    a, b = fold.add("source", 1), fold.add("source", 2)
    for nodes in ([a, b], (a,)):
        with pytest.raises(TypeError, match=r"fold.apply: nodes\[0\]: expected a list of Nodes, got Node"):
            fold.apply(Graph(), nodes)
    with pytest.raises(TypeError, match="not iterable"):
        h, c = fold.add("three", a, "plus")  # without .split(3)
    with pytest.raises(TypeError, match="not iterable"):
        list(a)


def test_create_graph_raises_through_a_fold_and_works_eagerly():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor([[1.5]], dtype=D))
            self.b = nn.Parameter(torch.tensor(2.0, dtype=D))

        def leaf(self, ids):
            return self.a[ids]

        def node(self, x):
            return x * self.b

    model = M()
    for eager in (False, True):
        fold = Fold(eager=eager)
        (y,) = fold.apply(model, [[fold.add("node", fold.add("leaf", 0))]])  # y = a b
        loss = y.square().sum()
        if not eager:
            with pytest.raises(RuntimeError, match=r"create_graph=True .* not supported through a batched Fold"):
                torch.autograd.grad(loss, model.b, create_graph=True)
            (gb,) = torch.autograd.grad(loss, model.b)  # first order is unaffected
            assert gb.item() == pytest.approx(9.0)
        else:
            (gb,) = torch.autograd.grad(loss, model.b, create_graph=True)  # 2 a^2 b = 9
            (ga,) = torch.autograd.grad(gb, model.a)  # 4 a b = 12
            assert (gb.item(), ga.item()) == pytest.approx((9.0, 12.0))


class _Segments(nn.Module):
    def pair(self, xs: Segments):
        return xs.fixed(2).sum(1)

    def leaf(self, ids):
        return ids.double()[:, None]


def test_segments_fixed_names_the_expected_count():
    fold = Fold()
    a, b = fold.add("leaf", 1), fold.add("leaf", 2)
    out = [fold.add("pair", [a, b]), fold.add("pair", [a, b, a])]
    with pytest.raises(ValueError, match=r"Segments.fixed: expected 2 items in every row, got rows of \[2, 3\] items"):
        fold.apply(_Segments(), [out])


@pytest.mark.parametrize("eager", [False, True])
def test_device_places_the_batched_scalars_of_a_model_without_parameters(eager):
    """Without parameters to follow (ops over buffers, say), Fold(device=...) says where ints and
    floats go; the meta device stands in for an accelerator here."""
    seen = []

    class NoParams(nn.Module):
        def leaf(self, ids, scale):
            seen.append((ids.device.type, scale.device.type))
            return ids.double()[:, None] * scale[:, None]

    for device, want in ((None, "cpu"), ("meta", "meta")):
        seen.clear()
        fold = Fold(eager=eager, device=device)
        (out,) = fold.apply(NoParams(), [[fold.add("leaf", k, 0.5) for k in range(3)]])
        assert out.device.type == want and out.shape == (3, 1)
        assert set(seen) == {(want, want)}
