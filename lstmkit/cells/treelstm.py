r"""Tree-LSTM cells (Tai, Socher & Manning 2015): the state of a node is computed from its
input and the states of its children instead of one predecessor.

Two families, each in two forms that compute the same numbers:
  - the plain form, one matrix per gate (and per child position), as the paper writes it;
  - the fused form, one matrix product for all gates, on a batch of nodes, which the
    recursive reference (batch of one node) and the Fold-batched path both call.

Child-Sum Tree-LSTM: any number of unordered children; their hidden states are summed and
each child gets a forget gate of its own. Binary (N-ary, N = 2) Tree-LSTM: ordered children
with a matrix per child position, so it can tell left from right (constituency trees).
Gate rows of the fused Child-Sum weights are (i, o, u, f); of the binary ones (i, f_l, f_r, o, u).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.gates import BINARY_GATES, BINARY_LEAF_GATES, CHILD_SUM_GATES


def child_sum_tree_lstm_cell_plain(
    x: Tensor, child_h: Tensor, child_c: Tensor,
    W_i: Tensor, W_f: Tensor, W_o: Tensor, W_u: Tensor,
    U_i: Tensor, U_f: Tensor, U_o: Tensor, U_u: Tensor,
    b_i: Tensor, b_f: Tensor, b_o: Tensor, b_u: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""One node of a Child-Sum Tree-LSTM, with the paper's equations (2)-(8).

        \tilde h_j = \sum_{k \in C(j)} h_k
        i_j = \sigma(W^{(i)} x_j + U^{(i)} \tilde h_j + b^{(i)})
        f_{jk} = \sigma(W^{(f)} x_j + U^{(f)} h_k + b^{(f)})         one per child k
        o_j = \sigma(W^{(o)} x_j + U^{(o)} \tilde h_j + b^{(o)})
        u_j = \tanh(W^{(u)} x_j + U^{(u)} \tilde h_j + b^{(u)})
        c_j = i_j \odot u_j + \sum_{k \in C(j)} f_{jk} \odot c_k
        h_j = o_j \odot \tanh(c_j)

    x: (I,); child_h, child_c: (K, H) with K >= 0 children (K = 0: a leaf, \tilde h = 0);
    W_*: (H, I); U_*: (H, H); b_*: (H,). Returns (h_j, c_j), each (H,).
    """
    h_sum = child_h.sum(0)  # (H,); zeros when K = 0
    i = torch.sigmoid(W_i @ x + U_i @ h_sum + b_i)
    f = torch.sigmoid((W_f @ x)[None, :] + child_h @ U_f.T + b_f)  # (K, H)
    o = torch.sigmoid(W_o @ x + U_o @ h_sum + b_o)
    u = torch.tanh(W_u @ x + U_u @ h_sum + b_u)
    c = i * u + (f * child_c).sum(0)
    h = o * torch.tanh(c)
    return h, c


def child_sum_tree_lstm_cell(
    x: Tensor | None, child_h: Tensor, child_c: Tensor, parent: Tensor,
    weight_ih: Tensor | None, weight_hh: Tensor, bias: Tensor, size: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""A batch of B Child-Sum nodes in the fused form: the children of all nodes in one tensor.

        \tilde h = \mathrm{segment\_sum}(h_{children}, parent)                  (B, H)
        [i; o; u] = W_{iou} x + U_{iou} \tilde h + b_{iou}                      (B, 3H)
        f = \sigma(W_f x[parent] + U_f h_{children} + b_f)                      (N, H)
        c = \sigma(i) \odot \tanh(u) + \mathrm{segment\_sum}(f \odot c_{children}, parent)
        h = \sigma(o) \odot \tanh(c)

    x: (B, I), or None for nodes without an input (W x = 0; then `size` = B is required);
    child_h, child_c: (N, H), the children of all B nodes; parent: (N,) int64, the row in
    0..B-1 of each child's parent (a node may have no child: its sums are zero).
    weight_ih: (4H, I) or None, weight_hh: (4H, H), bias: (4H,), gate rows (i, o, u, f).
    Returns (h, c), each (B, H).
    """
    H = weight_hh.shape[1]
    if x is None and size is None:
        raise ValueError("child_sum_tree_lstm_cell: size (the number of nodes) is required when x is None")
    B = x.shape[0] if x is not None else size
    n_iou = CHILD_SUM_GATES.index("f")  # the gates i, o, u, before f
    F = n_iou * H  # the first row of f
    h_sum = child_h.new_zeros(B, H).index_add(0, parent, child_h)
    iou = h_sum @ weight_hh[:F].T + bias[:F]  # (B, 3H)
    f_pre = child_h @ weight_hh[F:].T + bias[F:]  # (N, H)
    if x is not None:
        wx = x @ weight_ih.T  # (B, 4H)
        iou = iou + wx[:, :F]
        f_pre = f_pre + wx[:, F:].index_select(0, parent)
    i, o, u = iou.chunk(n_iou, 1)  # 3 x (B, H)
    f = torch.sigmoid(f_pre)
    c = torch.sigmoid(i) * torch.tanh(u) + child_c.new_zeros(B, H).index_add(0, parent, f * child_c)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def nary_tree_lstm_cell_plain(
    x: Tensor | None, child_h: list[Tensor], child_c: list[Tensor],
    W_i: Tensor | None, W_f: Tensor | None, W_o: Tensor | None, W_u: Tensor | None,
    U_i: list[Tensor], U_f: list[list[Tensor]], U_o: list[Tensor], U_u: list[Tensor],
    b_i: Tensor, b_f: list[Tensor], b_o: Tensor, b_u: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""One node of an N-ary Tree-LSTM, with the paper's equations (9)-(14).

        i_j = \sigma(W^{(i)} x_j + \sum_{l=1}^N U^{(i)}_l h_{jl} + b^{(i)})
        f_{jk} = \sigma(W^{(f)} x_j + \sum_{l=1}^N U^{(f)}_{kl} h_{jl} + b^{(f)}_k)   k = 1..N
        o_j = \sigma(W^{(o)} x_j + \sum_{l=1}^N U^{(o)}_l h_{jl} + b^{(o)})
        u_j = \tanh(W^{(u)} x_j + \sum_{l=1}^N U^{(u)}_l h_{jl} + b^{(u)})
        c_j = i_j \odot u_j + \sum_{l=1}^N f_{jl} \odot c_{jl}
        h_j = o_j \odot \tanh(c_j)

    The paper shares one forget bias b^{(f)} between children; a bias per child position is
    the general form (pass the same tensor N times for the paper's). A node without input
    (x None: the internal nodes of a constituency tree) drops the W terms; a leaf has children
    whose h and c are zero. x: (I,); child_h, child_c: N tensors (H,); W_*: (H, I);
    U_i, U_o, U_u: N matrices (H, H); U_f[k][l]: (H, H); b_*: (H,). Returns (h_j, c_j).
    """
    N = len(child_h)

    def pre(W: Tensor | None, Us: list[Tensor], b: Tensor) -> Tensor:
        s = b + sum(Us[l] @ child_h[l] for l in range(N))
        return s + W @ x if x is not None else s

    i = torch.sigmoid(pre(W_i, U_i, b_i))
    f = [torch.sigmoid(pre(W_f, U_f[k], b_f[k])) for k in range(N)]
    o = torch.sigmoid(pre(W_o, U_o, b_o))
    u = torch.tanh(pre(W_u, U_u, b_u))
    c = i * u + sum(f[l] * child_c[l] for l in range(N))
    h = o * torch.tanh(c)
    return h, c


def binary_tree_lstm_leaf(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""A batch of leaves of a binary (constituency) Tree-LSTM: a node with input and no children.

        [i; o; u] = W x + b          W: (3H, I)
        c = \sigma(i) \odot \tanh(u)
        h = \sigma(o) \odot \tanh(c)

    (equations (9)-(14) with zero child states). x: (B, I). Returns (h, c), each (B, H).
    """
    gates = x @ weight.T
    if bias is not None:
        gates = gates + bias
    return binary_leaf_state(gates)


def binary_leaf_state(gates: Tensor) -> tuple[Tensor, Tensor]:
    """The leaf equations after the matrix product: gates (B, 3H), blocks (i, o, u) -> (h, c)."""
    i, o, u = gates.chunk(len(BINARY_LEAF_GATES), 1)  # 3 x (B, H)
    c = torch.sigmoid(i) * torch.tanh(u)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def binary_tree_lstm_node(
    h_children: Tensor, c_l: Tensor, c_r: Tensor, weight: Tensor, bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""A batch of internal nodes of a binary (constituency) Tree-LSTM: two children, no input.

        [i; f_l; f_r; o; u] = U [h_l; h_r] + b        U: (5H, 2H)
        c = \sigma(i) \odot \tanh(u) + \sigma(f_l) \odot c_l + \sigma(f_r) \odot c_r
        h = \sigma(o) \odot \tanh(c)

    (equations (9)-(14) with N = 2 and no input). h_children: (B, 2H), the rows [h_l; h_r];
    c_l, c_r: (B, H). Returns (h, c), each (B, H).
    """
    gates = h_children @ weight.T
    if bias is not None:
        gates = gates + bias
    return binary_node_state(gates, c_l, c_r)


def binary_node_state(gates: Tensor, c_l: Tensor, c_r: Tensor) -> tuple[Tensor, Tensor]:
    """The node equations after the matrix product: gates (B, 5H), blocks (i, f_l, f_r, o, u)."""
    i, f_l, f_r, o, u = gates.chunk(len(BINARY_GATES), 1)  # 5 x (B, H)
    c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f_l) * c_l + torch.sigmoid(f_r) * c_r
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


__all__ = [
    "child_sum_tree_lstm_cell_plain", "child_sum_tree_lstm_cell",
    "nary_tree_lstm_cell_plain", "binary_tree_lstm_leaf", "binary_tree_lstm_node",
    "binary_leaf_state", "binary_node_state",
]
