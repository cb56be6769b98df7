"""Tree-LSTM modules (Tai et al. 2015), each with a recursive reference and a Fold-batched path.

`forward(trees, mode=...)` encodes a list of trees and returns (node_h, root_h):
node_h (N, H) holds the hidden state of every node of every tree, tree after tree, each tree
in post-order (children before parents, root last); root_h (B, H) the roots'. Modes:
  - "fold"      (default): recorded on a `Fold` and run batched by depth;
  - "eager":    the same recording run one call at a time (`Fold(eager=True)`);
  - "recursive": the plain reference, a Python recursion over each tree with one call per node.
All three compute the same values and gradients (up to float rounding), also where one Tree
object is the child of several nodes, except that "recursive" raises RecursionError on trees
deeper than Python's recursion limit (about 1000 levels), which "fold" and "eager" handle.
Higher-order gradients (create_graph=True), batched gradients (is_grads_batched=True),
forward-mode AD and torch.func's transforms work in "recursive" and "eager" (where the fused
CPU kernels hand those calls to the reference cell's ops); "fold" raises RuntimeError.
`BinaryTreeLSTM(backend=...)` picks the implementation of its ops in "fold" and "eager"
("auto", "reference", "numba"; see `lstmkit.kernels.resolve_tree_backend`); "recursive" is
always the reference.

The fold ops are the module's methods (`leaf`, `node`, ...), so a module can be passed to
`Fold.apply` directly, or wrapped by a model that adds more ops of its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from lstmkit.cells.gates import BINARY_GATES, BINARY_LEAF_GATES, CHILD_SUM_GATES
from lstmkit.cells.treelstm import binary_tree_lstm_leaf, binary_tree_lstm_node, child_sum_tree_lstm_cell
from lstmkit.fold.engine import Fold, Node, Segments
from lstmkit.fold.tree import Tree
from lstmkit.kernels import TREE_BACKEND_NAMES, check_backend_name, resolve_tree_backend
from lstmkit.nn import checks

MODES = ("fold", "eager", "recursive")


def _each_tree(fn, trees: list[Tree]) -> list:
    """[fn(t) for t in trees]; a TypeError or ValueError names the tree: "trees[k]: ..."."""
    out = []
    for k, t in enumerate(trees):
        try:
            out.append(fn(t))
        except (TypeError, ValueError) as e:
            if type(e) not in (TypeError, ValueError):  # a subclass may take other arguments
                raise
            raise type(e)(f"trees[{k}]: {e}") from e
    return out


class _TreeLSTMBase(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, embedding: nn.Module | None) -> None:
        super().__init__()
        self.input_size = checks.positive_int("input_size", input_size)
        self.hidden_size = checks.positive_int("hidden_size", hidden_size)
        self.embedding = embedding

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as torch's recurrent layers."""
        k = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if not name.startswith("embedding."):
                    p.uniform_(-k, k)

    def embed(self, x: Tensor) -> Tensor:
        """Leaf inputs: token ids (B,) through the embedding, or vectors (B, I) as they are."""
        if self.embedding is not None:
            return self.embedding(x)
        # Checked here, once per batch, not per leaf: reading a parameter costs about 1 us.
        dtype = self._input_weight.dtype
        if x.dtype != dtype:
            raise TypeError(f"word vectors: expected the parameters' dtype {dtype}, got {x.dtype}")
        return x

    @property
    def _input_weight(self) -> Tensor:
        """The weight that reads leaf inputs (`embed` checks word vectors against its dtype)."""
        raise NotImplementedError

    def _leaf_input(self, tree: Tree):
        """A node's word, checked: a token id (int) with an embedding, else a vector (input_size,)."""
        w = tree.word
        if w is None:
            raise ValueError(f"word: expected one at a leaf, got None at {tree!r}")
        if self.embedding is not None:
            if type(w) is int:
                return w
            if isinstance(w, (int, np.integer)) and not isinstance(w, bool):  # np.int64, IntEnum, ...
                return int(w)
            raise TypeError(f"word: expected a token id (int) with an embedding, got {type(w).__name__} at "
                            f"{tree!r} (map the tree through a vocabulary first)")
        if not isinstance(w, Tensor):
            raise TypeError(f"word: expected a tensor of shape ({self.input_size},) without an embedding, got "
                            f"{type(w).__name__} at {tree!r}")
        if w.shape != (self.input_size,):
            raise ValueError(f"word: expected a vector of shape ({self.input_size},) (input_size), got "
                             f"{tuple(w.shape)} at {tree!r}")
        return w

    def _x(self, word) -> Tensor:
        """One leaf's input as a batch of one row."""
        if isinstance(word, Tensor):
            return self.embed(word.unsqueeze(0))
        device = next(self.parameters()).device
        return self.embed(torch.tensor([word], dtype=torch.int64, device=device))

    def record(self, fold: Fold, tree: Tree) -> list[Node]:
        """Record `tree` on `fold`; returns the node of each tree node in post-order, whose value
        holds h (see `hidden`)."""
        raise NotImplementedError

    def recursive(self, tree: Tree) -> list[tuple[Tensor, Tensor]]:
        """The reference: (h, c), each (1, H), of each node in post-order, one call per node."""
        raise NotImplementedError

    def forward(self, trees: list[Tree], mode: str = "fold") -> tuple[Tensor, Tensor]:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
        if isinstance(trees, Tree) or not trees:
            raise ValueError("trees: expected a non-empty list of Tree")
        for k, t in enumerate(trees):
            if not isinstance(t, Tree):
                raise TypeError(f"trees[{k}]: expected a Tree, got {type(t).__name__}")
        if mode == "recursive":
            states = _each_tree(self.recursive, trees)
            node_h = torch.cat([h for s in states for h, _ in s])
            root_h = torch.cat([s[-1][0] for s in states])
            return node_h, root_h
        fold = Fold(eager=mode == "eager")
        nodes = _each_tree(lambda t: self.record(fold, t), trees)
        node_s, root_s = fold.apply(self, [[n for ns in nodes for n in ns], [ns[-1] for ns in nodes]])
        return self.hidden(node_s), self.hidden(root_s)

    def hidden(self, states: Tensor) -> Tensor:
        """h from the values of the nodes `record` returns."""
        return states


class BinaryTreeLSTM(_TreeLSTMBase):
    """Binary (constituency) Tree-LSTM: leaves read a word; internal nodes have exactly two
    children and no input (Tai et al.'s N-ary Tree-LSTM with N = 2).

    Parameters: leaf_weight (3H, I), leaf_bias (3H,) with gate rows (i, o, u);
    node_weight (5H, 2H), node_bias (5H,) with rows (i, f_l, f_r, o, u) over [h_l; h_r].
    `embedding`: an optional module mapping token ids to (·, input_size) vectors; without it,
    leaf words must be tensors (input_size,). `backend`: the ops' implementation in modes "fold"
    and "eager": "numba" (fused CPU kernels, float32 and float64), "reference" (the cell
    functions' torch ops) or "auto" (numba where it runs, else the reference).
    """

    def __init__(self, input_size: int, hidden_size: int, embedding: nn.Module | None = None,
                 device=None, dtype=None, *, backend: str = "auto") -> None:
        super().__init__(input_size, hidden_size, embedding)
        self.backend = check_backend_name(backend, TREE_BACKEND_NAMES)
        f = {"device": device, "dtype": dtype}
        H = hidden_size
        self.leaf_weight = nn.Parameter(torch.empty(len(BINARY_LEAF_GATES) * H, input_size, **f))
        self.leaf_bias = nn.Parameter(torch.empty(len(BINARY_LEAF_GATES) * H, **f))
        self.node_weight = nn.Parameter(torch.empty(len(BINARY_GATES) * H, 2 * H, **f))
        self.node_bias = nn.Parameter(torch.empty(len(BINARY_GATES) * H, **f))
        self.reset_parameters()

    @property
    def _input_weight(self) -> Tensor:
        return self.leaf_weight

    def hidden(self, states: Tensor) -> Tensor:
        return states[:, : self.hidden_size]

    # fold ops, batched over rows; a node's state is one packed row [h, c] (2H)
    def leaf(self, x: Tensor) -> Tensor:
        """Leaves: token ids (B,) or vectors (B, I) -> states (B, 2H)."""
        x = self.embed(x)
        ops = resolve_tree_backend(self.backend, x.device.type, x.dtype)
        return ops.leaf(x, self.leaf_weight, self.leaf_bias)

    def node(self, children: Segments) -> Tensor:
        """Internal nodes: the states of [left, right] -> states (B, 2H)."""
        P = children.fixed(2)  # (B, 2, 2H)
        ops = resolve_tree_backend(self.backend, P.device.type, P.dtype)
        return ops.node(P, self.node_weight, self.node_bias)

    @staticmethod
    def _check(node: Tree) -> None:
        if len(node.children) not in (0, 2):
            raise ValueError(f"children: expected 0 or 2 at every node of a BinaryTreeLSTM's trees, got "
                             f"{len(node.children)} at {node!r} (binarize the tree first)")

    def record(self, fold: Fold, tree: Tree) -> list[Node]:
        # An explicit stack rather than recursion, so that a tree of any depth records each node
        # once (a recursion would stop at Python's limit after recording part of it). A None on
        # `todo` stands for a node whose two children are done: their states top `stack`.
        out: list[Node] = []
        stack: list[Node] = []
        todo: list[Tree | None] = [tree]
        add, emit, push, pop, take, grow = fold.add, out.append, stack.append, stack.pop, todo.pop, todo.extend
        leaf_input, ids = self._leaf_input, self.embedding is not None
        while todo:
            n = take()
            if n is None:
                right = pop()
                state = add("node", [pop(), right])
            else:
                ch = n.children
                if ch:
                    if len(ch) != 2:
                        self._check(n)
                    grow((None, ch[1], ch[0]))  # the left child is taken first
                    continue
                w = n.word
                state = add("leaf", w if ids and type(w) is int else leaf_input(n))
            push(state)
            emit(state)
        return out

    def recursive(self, tree: Tree) -> list[tuple[Tensor, Tensor]]:
        """The plain reference: a recursion with one call per node of the cell functions of
        lstmkit.cells.treelstm (torch ops, autograd), whatever the dtype."""
        out: list[tuple[Tensor, Tensor]] = []

        def visit(n: Tree) -> tuple[Tensor, Tensor]:
            if n.children:
                self._check(n)
                h_l, c_l = visit(n.children[0])
                h_r, c_r = visit(n.children[1])
                hc = binary_tree_lstm_node(torch.cat([h_l, h_r], 1), c_l, c_r, self.node_weight, self.node_bias)
            else:
                hc = binary_tree_lstm_leaf(self._x(self._leaf_input(n)), self.leaf_weight, self.leaf_bias)
            out.append(hc)
            return hc

        visit(tree)
        return out


class ChildSumTreeLSTM(_TreeLSTMBase):
    """Child-Sum Tree-LSTM: any number of unordered children (dependency trees); a node has an
    input if it has a word (every node of a dependency tree) and none otherwise.

    Parameters: weight_ih (4H, I), weight_hh (4H, H), bias (4H,), gate rows (i, o, u, f).
    It runs the reference cell's torch ops in every mode (there are no fused kernels for it).
    """

    def __init__(self, input_size: int, hidden_size: int, embedding: nn.Module | None = None,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, embedding)
        f = {"device": device, "dtype": dtype}
        G = len(CHILD_SUM_GATES) * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **f))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **f))
        self.bias = nn.Parameter(torch.empty(G, **f))
        self.reset_parameters()

    @property
    def _input_weight(self) -> Tensor:
        return self.weight_ih

    def _cell(self, x, child_h, child_c, parent, size):
        return child_sum_tree_lstm_cell(x, child_h, child_c, parent, self.weight_ih, self.weight_hh,
                                        self.bias, size=size)

    # fold ops
    def leaf(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Nodes with a word and no children."""
        x = self.embed(x)
        empty = x.new_zeros(0, self.hidden_size)
        return self._cell(x, empty, empty, torch.zeros(0, dtype=torch.int64, device=x.device), x.shape[0])

    def node(self, x: Tensor, hs: Segments, cs: Segments) -> tuple[Tensor, Tensor]:
        """Nodes with a word and children."""
        return self._cell(self.embed(x), hs.values, cs.values, hs.index, hs.size)

    def inner(self, hs: Segments, cs: Segments) -> tuple[Tensor, Tensor]:
        """Nodes with children and no word."""
        return self._cell(None, hs.values, cs.values, hs.index, hs.size)

    def record(self, fold: Fold, tree: Tree) -> list[Node]:
        state: dict[int, tuple[Node, Node]] = {}
        out = []
        for n in tree.postorder():
            if n.children:
                kids = [state[id(c)] for c in n.children]  # no pop: a subtree may be a child twice
                hs, cs = [k[0] for k in kids], [k[1] for k in kids]
                if n.word is None:
                    hc = fold.add("inner", hs, cs).split(2)
                else:
                    hc = fold.add("node", self._leaf_input(n), hs, cs).split(2)
            else:
                hc = fold.add("leaf", self._leaf_input(n)).split(2)
            state[id(n)] = hc
            out.append(hc[0])
        return out

    def recursive(self, tree: Tree) -> list[tuple[Tensor, Tensor]]:
        out: list[tuple[Tensor, Tensor]] = []
        device = self.weight_hh.device

        def visit(n: Tree) -> tuple[Tensor, Tensor]:
            kids = [visit(c) for c in n.children]
            x = self._x(self._leaf_input(n)) if (n.word is not None or not kids) else None
            if kids:
                child_h = torch.cat([k[0] for k in kids])
                child_c = torch.cat([k[1] for k in kids])
            else:
                child_h = child_c = self.weight_hh.new_zeros(0, self.hidden_size)
            parent = torch.zeros(len(kids), dtype=torch.int64, device=device)
            hc = self._cell(x, child_h, child_c, parent, 1)
            out.append(hc)
            return hc

        visit(tree)
        return out
