"""Tree-LSTM cells against Tai et al.'s equations, written out here element by element."""

from __future__ import annotations

import torch

from lstmkit.cells.treelstm import (
    binary_tree_lstm_leaf, binary_tree_lstm_node, child_sum_tree_lstm_cell, child_sum_tree_lstm_cell_plain,
    nary_tree_lstm_cell_plain,
)

D = torch.float64
I, H = 3, 4


def sig(x):
    return 1 / (1 + torch.exp(-x))


def rand(*shape, g):
    return torch.randn(*shape, dtype=D, generator=g)


def test_child_sum_plain_is_the_equations():
    g = torch.Generator().manual_seed(0)
    W = {k: rand(H, I, g=g) for k in "ifou"}
    U = {k: rand(H, H, g=g) for k in "ifou"}
    b = {k: rand(H, g=g) for k in "ifou"}
    x = rand(I, g=g)
    for K in (0, 1, 3):
        hs, cs = rand(K, H, g=g), rand(K, H, g=g)
        h_sum = sum((hs[k] for k in range(K)), torch.zeros(H, dtype=D))
        i = sig(W["i"] @ x + U["i"] @ h_sum + b["i"])
        o = sig(W["o"] @ x + U["o"] @ h_sum + b["o"])
        u = torch.tanh(W["u"] @ x + U["u"] @ h_sum + b["u"])
        c = i * u
        for k in range(K):
            c = c + sig(W["f"] @ x + U["f"] @ hs[k] + b["f"]) * cs[k]
        h = o * torch.tanh(c)
        got = child_sum_tree_lstm_cell_plain(
            x, hs, cs, W["i"], W["f"], W["o"], W["u"], U["i"], U["f"], U["o"], U["u"],
            b["i"], b["f"], b["o"], b["u"])
        torch.testing.assert_close(got, (h, c))


def test_child_sum_fused_batch_equals_plain_per_node():
    g = torch.Generator().manual_seed(1)
    W, U, bias = rand(4 * H, I, g=g), rand(4 * H, H, g=g), rand(4 * H, g=g)
    Wi, Wo, Wu, Wf = W.chunk(4)  # gate rows (i, o, u, f)
    Ui, Uo, Uu, Uf = U.chunk(4)
    bi, bo, bu, bf = bias.chunk(4)
    counts = [2, 0, 3, 1]  # children per node; a node without children is a leaf
    x = rand(len(counts), I, g=g)
    hs, cs = rand(sum(counts), H, g=g), rand(sum(counts), H, g=g)
    parent = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    h, c = child_sum_tree_lstm_cell(x, hs, cs, parent, W, U, bias)
    start = 0
    for j, k in enumerate(counts):
        ref = child_sum_tree_lstm_cell_plain(x[j], hs[start:start + k], cs[start:start + k],
                                             Wi, Wf, Wo, Wu, Ui, Uf, Uo, Uu, bi, bf, bo, bu)
        torch.testing.assert_close((h[j], c[j]), ref)
        start += k
    # Without input: the W x terms vanish.
    h0, c0 = child_sum_tree_lstm_cell(None, hs, cs, parent, None, U, bias, size=len(counts))
    h1, c1 = child_sum_tree_lstm_cell(torch.zeros_like(x), hs, cs, parent, W, U, bias)
    torch.testing.assert_close((h0, c0), (h1, c1))


def test_binary_cells_are_the_nary_equations_with_two_children():
    g = torch.Generator().manual_seed(2)
    B = 5
    # Internal nodes: no input, U (5H, 2H) with rows (i, f_l, f_r, o, u), columns [h_l; h_r].
    U, bias = rand(5 * H, 2 * H, g=g), rand(5 * H, g=g)
    hl, cl, hr, cr = (rand(B, H, g=g) for _ in range(4))
    h, c = binary_tree_lstm_node(torch.cat([hl, hr], 1), cl, cr, U, bias)
    rows = dict(zip(("i", "fl", "fr", "o", "u"), U.chunk(5)))
    bs = dict(zip(("i", "fl", "fr", "o", "u"), bias.chunk(5)))

    def per_child(M):  # the column blocks U_1 (left), U_2 (right)
        return list(M.chunk(2, 1))

    for j in range(B):
        ref = nary_tree_lstm_cell_plain(
            None, [hl[j], hr[j]], [cl[j], cr[j]], None, None, None, None,
            per_child(rows["i"]), [per_child(rows["fl"]), per_child(rows["fr"])], per_child(rows["o"]),
            per_child(rows["u"]), bs["i"], [bs["fl"], bs["fr"]], bs["o"], bs["u"])
        torch.testing.assert_close((h[j], c[j]), ref)
        # and element by element
        i = sig(rows["i"] @ torch.cat([hl[j], hr[j]]) + bs["i"])
        fl = sig(rows["fl"] @ torch.cat([hl[j], hr[j]]) + bs["fl"])
        fr = sig(rows["fr"] @ torch.cat([hl[j], hr[j]]) + bs["fr"])
        o = sig(rows["o"] @ torch.cat([hl[j], hr[j]]) + bs["o"])
        u = torch.tanh(rows["u"] @ torch.cat([hl[j], hr[j]]) + bs["u"])
        cj = i * u + fl * cl[j] + fr * cr[j]
        torch.testing.assert_close((h[j], c[j]), (o * torch.tanh(cj), cj))

    # Leaves: an input and children whose states are zero.
    Wl, bl = rand(3 * H, I, g=g), rand(3 * H, g=g)
    x = rand(B, I, g=g)
    h, c = binary_tree_lstm_leaf(x, Wl, bl)
    Wi, Wo, Wu = Wl.chunk(3)
    bi, bo, bu = bl.chunk(3)
    zero_U = [torch.zeros(H, H, dtype=D)] * 2
    zeros = [torch.zeros(H, dtype=D)] * 2
    for j in range(B):
        ref = nary_tree_lstm_cell_plain(
            x[j], zeros, zeros, Wi, torch.zeros(H, I, dtype=D), Wo, Wu,
            zero_U, [zero_U, zero_U], zero_U, zero_U, bi, [bi * 0, bi * 0], bo, bu)
        torch.testing.assert_close((h[j], c[j]), ref)
