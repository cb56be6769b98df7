"""The Fold engine: record operations per example, run them as a few large batched calls.

Recording. `fold.add(op, *args)` appends one call of `model.<op>` to a graph and returns a
`Node` standing for its result. An argument is
  - a `Node` (or one output of it, `node.split(n)[k]`): gathered into a batch by row index;
  - an `int` (typically a token id) or a numpy integer: batched into a LongTensor (B,);
  - a `float` or a numpy floating scalar: batched into a tensor (B,) of torch's default dtype;
  - a `Tensor`: stacked into (B, *shape);
  - a list or tuple of Nodes (one or more, any number per call): batched as `Segments`;
  - anything else hashable (None, str, bool, numpy bool, ...): a static argument passed as is;
    calls with different static values never share a batch.
A call that repeats an earlier one exactly (same op, same nodes, ints, floats and statics, the
same tensor objects) is not recorded again: `add` returns the earlier node.

Scheduling. A node's depth is 0 without Node arguments, else 1 + the deepest Node argument.
`apply` runs every group of calls with the same (op, depth, argument kinds) as one call of
`model.<op>` on batched arguments, in increasing depth, and returns, for each list of nodes it
is given, one tensor whose rows are those nodes' values in list order.

Batched execution. Every output that something reads is copied into one "memory" tensor per
(row shape, dtype, device); each batched argument is then a single `index_select` from that
memory with a precomputed index, however many groups its rows come from. Gradients flow through
two small autograd functions: a read scatters its gradient into one gradient buffer per memory
with `index_add_`, and the write of a group's output hands the group its slice of that buffer.
Autograd runs the write's backward only after every read of it, so the slice is complete then.
That buffer is filled outside autograd, so higher-order gradients (create_graph=True) cannot
flow through it, nor can batched gradients (is_grads_batched=True), forward-mode AD (while
anything in the fold requires grad) or torch.func's transforms: each raises RuntimeError through
a batched fold.

Eager mode (`Fold(eager=True)`) runs the same recording one call at a time with
batch size 1, in recording order: slow, but each error points at one call. It uses no memory
or gradient buffer, so it supports create_graph=True wherever the model's ops do.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from lstmkit.kernels import batched, in_transform

# A value reference packs a node index and an output code into one int: index << _OUT_BITS | code,
# code 0 for the node's whole result (a single tensor), k + 1 for output k of `split`.
_OUT_BITS = 6
_MAX_OUTPUTS = (1 << _OUT_BITS) - 1
_OUT_MASK = _MAX_OUTPUTS

# Argument kinds, one character each; a group's signature is their string.
_NODE, _INT, _FLOAT, _TENSOR, _LIST, _STATIC = "n", "i", "f", "t", "l", "s"

_UNSUPPORTED = ("lstmkit.fold: {} not supported through a batched Fold; use Fold(eager=True) (where the "
                "model's ops support it), or a Tree-LSTM's mode='recursive'")
_CREATE_GRAPH_UNSUPPORTED = _UNSUPPORTED.format("create_graph=True (higher-order gradients) is")
_BATCHED_GRADS_UNSUPPORTED = _UNSUPPORTED.format("is_grads_batched=True (batched gradients, vectorized jacobians) is")
_FORWARD_AD_UNSUPPORTED = _UNSUPPORTED.format("forward-mode AD (torch.autograd.forward_ad, torch.func.jvp) is")
_TRANSFORMS_UNSUPPORTED = _UNSUPPORTED.format("torch.func's transforms (grad, vjp, jacrev, vmap, ...) are")


class Node:
    """The result of one recorded call (or one output of it, after `split`)."""

    __slots__ = ("fold", "ref")

    def __init__(self, fold: "Fold", ref: int) -> None:
        self.fold = fold
        self.ref = ref

    @property
    def index(self) -> int:
        """The call's position in recording order."""
        return self.ref >> _OUT_BITS

    @property
    def output(self) -> int | None:
        """Which output of the call this node is; None for the whole result."""
        code = self.ref & _OUT_MASK
        return None if code == 0 else code - 1

    def split(self, n: int) -> tuple["Node", ...]:
        """The `n` outputs of a call whose op returns a tuple of `n` tensors."""
        ref = self.ref
        if ref & _OUT_MASK:
            raise ValueError(f"split: expected the node of a whole call's result, got {self!r}, "
                             "already one output of a split")
        if type(n) is not int or not 0 < n <= _MAX_OUTPUTS:
            raise ValueError(f"split: expected an int number of outputs in [1, {_MAX_OUTPUTS}], got {n!r}")
        fold = self.fold
        if n == 2:
            return Node(fold, ref + 1), Node(fold, ref + 2)
        return tuple([Node(fold, ref + k) for k in range(1, n + 1)])

    def __getitem__(self, k: int) -> "Node":
        """`node[k]`: output k of a call that returns a tuple (`node.split(n)[k]`)."""
        if self.ref & _OUT_MASK:
            raise ValueError(f"node[{k!r}]: expected the node of a whole call's result, got {self!r}, "
                             "already one output of a split")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < _MAX_OUTPUTS:
            raise IndexError(f"fold node output: expected an int in [0, {_MAX_OUTPUTS}), got {k!r}")
        return Node(self.fold, self.ref + k + 1)

    # `__getitem__` would otherwise make a Node iterable (over all 63 possible outputs), so that
    # `h, c = fold.add(...)` without `.split(2)`, or a flat list of Nodes where a list of lists
    # is expected, would go on with wrong values and fail later, far from the mistake.
    __iter__ = None

    def __repr__(self) -> str:
        op = self.fold._group_of_node(self.index)[0].op
        out = "" if self.output is None else f"[{self.output}]"
        return f"<fold.Node #{self.index} {op}{out} depth={self.fold._depth[self.index]}>"


class Segments:
    """A batched list argument: row b of the batch has `lengths[b]` items (at least one).

    values:  (N, *shape), every row's items one after the other, rows in batch order;
    lengths: (B,) int64, the number of items of each row; index: (N,) int64, the row of each
    item; size: the number of rows B. `index` and `lengths` are built when first used.
    """

    __slots__ = ("values", "size", "_lengths", "_index", "_uniform")

    def __init__(self, values: Tensor, lengths: "np.ndarray | Sequence[int]", size: int) -> None:
        self.values, self.size = values, size
        self._lengths = np.asarray(lengths, dtype=np.int64)
        self._index: Tensor | None = None
        first = int(self._lengths[0]) if size else 0
        self._uniform = first if size and bool((self._lengths == first).all()) else None

    @property
    def lengths(self) -> Tensor:
        return torch.from_numpy(self._lengths).to(self.values.device)

    @property
    def index(self) -> Tensor:
        if self._index is None:
            self._index = torch.from_numpy(np.repeat(np.arange(self.size), self._lengths)).to(self.values.device)
        return self._index

    def sum(self) -> Tensor:
        """(B, *shape): the sum of each row's items."""
        if self._uniform is not None:
            return self.fixed(self._uniform).sum(1)
        out = self.values.new_zeros((self.size, *self.values.shape[1:]))
        return out.index_add(0, self.index, self.values)

    def fixed(self, k: int) -> Tensor:
        """(B, k, *shape) when every row has exactly k items: a view, no copy."""
        if self._uniform != k:
            raise ValueError(f"Segments.fixed: expected {k} items in every row, got rows of "
                             f"{sorted(set(self._lengths.tolist()))} items")
        return self.values.view(self.size, k, *self.values.shape[1:])

    def __repr__(self) -> str:
        return f"Segments(values={tuple(self.values.shape)}, size={self.size})"


class _Group:
    """The calls of one (op, depth, signature, statics): the batch of one model call."""

    __slots__ = ("op", "depth", "sig", "statics", "cols", "size", "gid", "base")

    def __init__(self, gid: int, op: str, depth: int, sig: str, statics: tuple) -> None:
        self.gid, self.op, self.depth, self.sig, self.statics = gid, op, depth, sig, statics
        self.base = gid << 32  # a node's location: base | its row in the group
        self.cols: list[list] = [[] for s in sig if s != _STATIC]  # one per non-static argument
        self.size = 0


class _Memory:
    """Stored outputs of one row shape/dtype/device, and their gradient buffer for one backward."""

    __slots__ = ("values", "used", "grad", "grad_task")

    def __init__(self, values: Tensor) -> None:
        self.values = values  # (capacity, *shape), no autograd
        self.used = 0
        self.grad: Tensor | None = None
        self.grad_task = None

    def grad_buffer(self) -> Tensor:
        # One fresh buffer per backward pass (graph task), so retain_graph reruns start from zero.
        task = torch._C._current_graph_task_id()
        if self.grad is None or self.grad_task != task:
            self.grad = self.values.new_zeros((self.used, *self.values.shape[1:]))
            self.grad_task = task
        return self.grad


class _Write(torch.autograd.Function):
    """Marks a group output as stored in a memory; its backward returns the accumulated gradient."""

    @staticmethod
    def forward(ctx, value: Tensor, memory: _Memory, offset: int) -> Tensor:
        ctx.memory, ctx.offset, ctx.rows = memory, offset, value.shape[0]
        ctx.set_materialize_grads(False)
        return value.new_empty(0)  # a token: readers take it as an input so autograd orders them first

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_AD_UNSUPPORTED)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _token_grad):
        m = ctx.memory
        return m.grad_buffer()[ctx.offset:ctx.offset + ctx.rows], None, None


class _Read(torch.autograd.Function):
    """memory.values.index_select(0, rows); the gradient is scattered into the memory's buffer."""

    @staticmethod
    def forward(ctx, memory: _Memory, rows: Tensor, *tokens: Tensor) -> Tensor:
        ctx.memory, ctx.rows, ctx.n_tokens = memory, rows, len(tokens)
        ctx.token_like = tokens[0] if tokens else None
        return memory.values.index_select(0, rows)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_AD_UNSUPPORTED)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Every backward through a batched fold starts at a read, so these checks cover it.
        if torch.is_grad_enabled():
            raise RuntimeError(_CREATE_GRAPH_UNSUPPORTED)
        if batched(grad):
            raise RuntimeError(_BATCHED_GRADS_UNSUPPORTED)
        ctx.memory.grad_buffer().index_add_(0, ctx.rows, grad)
        empty = ctx.token_like.new_empty(0) if ctx.token_like is not None else None
        return (None, None) + (empty,) * ctx.n_tokens


def _as_ref_list(fold: "Fold", items: Sequence, what: str) -> list[int]:
    refs = []
    for a in items:
        if type(a) is not Node:
            raise TypeError(f"{what}: expected fold Nodes, got {type(a).__name__}")
        if a.fold is not fold:
            raise ValueError(f"{what}: node {a!r} belongs to another Fold")
        refs.append(a.ref)
    return refs


class Fold:
    """Records calls of a model's methods on a graph, then runs them batched by depth.

        fold = Fold()
        h, c = fold.add("leaf", word_id).split(2)
        ...
        roots, = fold.apply(model, [root_nodes])       # (len(root_nodes), H)

    eager=True runs the same recording one call at a time (for debugging); cache=False records
    repeated identical calls again instead of returning the earlier node; `device` is where
    batched ints/floats go (default: the model's first parameter's device, else CPU).
    """

    def __init__(self, eager: bool = False, device: torch.device | str | None = None,
                 cache: bool = True) -> None:
        self.eager = bool(eager)
        self.cache = bool(cache)
        self._cache: dict[tuple, int] | None = {} if cache else None
        self.device = None if device is None else torch.device(device)
        self._depth: list[int] = []  # depth of each node
        self._where: list[int] = []  # group id << 32 | row in the group, of each node
        self._groups: list[_Group] = []
        self._group_of: dict[tuple, _Group] = {}

    def __len__(self) -> int:
        """The number of distinct calls recorded."""
        return len(self._depth)

    # --- recording --------------------------------------------------------------------------

    def add(self, op: str, *args: Any) -> Node:
        """Record `model.<op>(*args)` (batched at apply) and return its Node."""
        # The hot path (every argument a Node, an int or a list of Nodes) makes no call but for
        # a new group's first node: recording runs once per tree node, in Python. `key` is built
        # as the arguments are read; one setdefault both probes and fills the cache.
        depth = 0
        sig = ""
        key = [op, sig]
        depths = self._depth
        for a in args:
            t = type(a)
            if t is int:
                sig += _INT
                key.append(a)
            elif t is list and a:
                refs = []
                for b in a:
                    if type(b) is not Node or b.fold is not self:
                        return self._add_general(op, args)
                    r = b.ref
                    d = depths[r >> _OUT_BITS]
                    if d >= depth:
                        depth = d + 1
                    refs.append(r)
                sig += _LIST
                key.append(tuple(refs))
            elif t is Node and a.fold is self:
                r = a.ref
                d = depths[r >> _OUT_BITS]
                if d >= depth:
                    depth = d + 1
                sig += _NODE
                key.append(r)
            else:
                return self._add_general(op, args)
        key[1] = sig
        key = tuple(key)
        index = len(depths)
        cache = self._cache
        if cache is not None:
            hit = cache.setdefault(key, index)
            if hit != index:
                return Node(self, hit << _OUT_BITS)
        group = self._group_of.get((op, depth, sig))
        if group is None:
            return self._record(op, depth, sig, key[2:], (), key)
        cols = group.cols
        if len(cols) == 1:
            cols[0].append(key[2])
        else:
            for col, v in zip(cols, key[2:]):
                col.append(v)
        depths.append(depth)
        size = group.size
        self._where.append(group.base | size)
        group.size = size + 1
        return Node(self, index << _OUT_BITS)

    def _add_general(self, op: str, args: tuple) -> Node:
        depth = 0
        sig = ""
        cols: list = []
        key: list = [op]
        statics: list = []
        depths = self._depth
        for a in args:
            t = type(a)
            if t is Node:
                if a.fold is not self:
                    raise ValueError(f"fold.add({op!r}): node {a!r} belongs to another Fold")
                depth = max(depth, depths[a.ref >> _OUT_BITS] + 1)
                sig += _NODE
                cols.append(a.ref)
                key.append(a.ref)
            elif t is int or t is float:
                sig += _INT if t is int else _FLOAT
                cols.append(a)
                key.append(a)
            elif isinstance(a, (int, np.integer)) and t is not bool:  # np.int64 ids, IntEnum, ...
                a = int(a)
                sig += _INT
                cols.append(a)
                key.append(a)
            elif isinstance(a, (float, np.floating)):  # np.float64 (a float subclass), np.float32, ...
                a = float(a)
                sig += _FLOAT
                cols.append(a)
                key.append(a)
            elif isinstance(a, Tensor):
                sig += _TENSOR
                cols.append(a)
                key.append(id(a))  # the same tensor object; it stays alive in the group's column
            elif t is list or t is tuple:
                if not a:
                    raise ValueError(f"fold.add({op!r}): a list argument needs at least one node "
                                     "(record calls without children as an op of their own)")
                refs = tuple(_as_ref_list(self, a, f"fold.add({op!r}) list argument"))
                depth = max(depth, 1 + max(depths[r >> _OUT_BITS] for r in refs))
                sig += _LIST
                cols.append(refs)
                key.append(refs)
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(f"fold.add({op!r}): argument of type {t.__name__} is neither a Node, "
                                    "int, float, Tensor, list of Nodes, nor a hashable static value") from None
                sig += _STATIC
                statics.append(a)
                key.append(a)
        return self._record(op, depth, sig, cols, tuple(statics), (op, sig, *key[1:]))

    def _new_group(self, op: str, depth: int, sig: str, statics: tuple) -> _Group:
        if not isinstance(op, str):
            raise TypeError(f"fold.add: op must be a method name (str), got {type(op).__name__}")
        group = _Group(len(self._groups), op, depth, sig, statics)
        self._group_of[(op, depth, sig, *statics)] = group
        self._groups.append(group)
        return group

    def _record(self, op: str, depth: int, sig: str, cols: list, statics: tuple, key: tuple) -> Node:
        """The bookkeeping of `add` (inline there for the hot path's existing groups)."""
        index = len(self._depth)
        cache = self._cache
        if cache is not None:
            hit = cache.setdefault(key, index)
            if hit != index:
                return Node(self, hit << _OUT_BITS)
        group = self._group_of.get((op, depth, sig, *statics))
        if group is None:
            try:
                group = self._new_group(op, depth, sig, statics)
            except BaseException:
                if cache is not None:
                    del cache[key]
                raise
        for col, v in zip(group.cols, cols):
            col.append(v)
        self._depth.append(depth)
        self._where.append(group.base | group.size)
        group.size += 1
        return Node(self, index << _OUT_BITS)

    def _group_of_node(self, index: int) -> tuple[_Group, int]:
        w = self._where[index]
        return self._groups[w >> 32], w & 0xFFFFFFFF

    def schedule(self) -> list[tuple[str, int, int]]:
        """(op, depth, number of calls) of each batched call, in execution order."""
        return [(g.op, g.depth, g.size) for g in self._ordered_groups()]

    def _ordered_groups(self) -> list[_Group]:
        return sorted(self._groups, key=lambda g: (g.depth, g.gid))

    # --- execution --------------------------------------------------------------------------

    def apply(self, model: Any, nodes: Sequence[Sequence[Node]]) -> list[Tensor]:
        """Run every recorded call; return one tensor per list in `nodes`, rows in list order."""
        if isinstance(nodes, Node) or not isinstance(nodes, (list, tuple)):
            raise TypeError("fold.apply: nodes must be a list of lists of Nodes, e.g. [[root1, root2]]")
        for k, lst in enumerate(nodes):
            if not isinstance(lst, (list, tuple)):
                raise TypeError(f"fold.apply: nodes[{k}]: expected a list of Nodes, got {type(lst).__name__}")
        out_refs = [np.asarray(_as_ref_list(self, lst, "fold.apply"), dtype=np.int64) for lst in nodes]
        for k, refs in enumerate(out_refs):
            if refs.size == 0:
                raise ValueError(f"fold.apply: output list {k} is empty")
        device = self.device
        if device is None:
            p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
            device = p.device if p is not None else torch.device("cpu")
        if self.eager:
            return self._apply_eager(model, out_refs, device)
        return self._apply_batched(model, out_refs, device)

    def _method(self, model: Any, op: str):
        fn = getattr(model, op, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"fold: the model ({type(model).__name__}) has no method {op!r} for the recorded op {op!r}")
        return fn

    @staticmethod
    def _outputs(group: _Group, result: Any, rows: int) -> tuple[Tensor, ...]:
        outs = (result,) if isinstance(result, Tensor) else tuple(result) if isinstance(result, (tuple, list)) else None
        if outs is None or not all(isinstance(o, Tensor) for o in outs):
            raise TypeError(f"fold: op {group.op!r} must return a tensor or a tuple of tensors, got {type(result).__name__}")
        for k, o in enumerate(outs):
            if o.dim() == 0 or o.shape[0] != rows:
                raise ValueError(f"fold: op {group.op!r} (depth {group.depth}) was called on {rows} rows but its "
                                 f"output {k} has shape {tuple(o.shape)}: the first dimension must be the batch")
        return outs

    @staticmethod
    def _pick(group: _Group, outs: tuple[Tensor, ...], code: int) -> Tensor:
        if code == 0:
            if len(outs) != 1:
                raise ValueError(f"fold: op {group.op!r} returns {len(outs)} outputs; "
                                 f"use node.split({len(outs)}) to take them apart")
            return outs[0]
        if code > len(outs):
            raise ValueError(f"fold: output {code - 1} of op {group.op!r} was used, but it returns {len(outs)} output(s)")
        return outs[code - 1]

    def _apply_batched(self, model: Any, out_refs: list[np.ndarray], device: torch.device) -> list[Tensor]:
        if in_transform():
            raise RuntimeError(_TRANSFORMS_UNSUPPORTED)
        where = np.asarray(self._where, dtype=np.int64)
        gid_of, pos_of = where >> 32, where & 0xFFFFFFFF

        def locate(refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Value refs -> (slot = gid << bits | output code, row within the group)."""
            nodes = refs >> _OUT_BITS
            return (gid_of[nodes] << _OUT_BITS) | (refs & _OUT_MASK), pos_of[nodes]

        groups = self._ordered_groups()
        # Per group and argument position: the slots/rows it reads (node and list arguments).
        reads: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        used = list(out_refs)
        for g in groups:
            for p, (kind, col) in enumerate(zip((s for s in g.sig if s != _STATIC), g.cols)):
                if kind == _NODE:
                    refs = np.asarray(col, dtype=np.int64)
                    lengths = None
                elif kind == _LIST:
                    lengths = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
                    refs = np.fromiter(chain.from_iterable(col), dtype=np.int64, count=int(lengths.sum()))
                else:
                    continue
                slots, rows = locate(refs)
                reads[g.gid, p] = (slots, rows, lengths)
                used.append(refs)
        all_refs = np.concatenate(used) if used else np.zeros(0, np.int64)
        used_slots = np.unique(locate(all_refs)[0])
        used_by_group: dict[int, list[int]] = {}
        for s in used_slots.tolist():
            used_by_group.setdefault(s >> _OUT_BITS, []).append(s & _OUT_MASK)
        capacity = sum(self._groups[s >> _OUT_BITS].size for s in used_slots.tolist())

        n_slots = len(self._groups) << _OUT_BITS
        slot_offset = np.zeros(n_slots, dtype=np.int64)
        slot_memory: dict[int, _Memory] = {}
        slot_token: dict[int, Tensor] = {}
        memories: dict[tuple, _Memory] = {}
        grad = torch.is_grad_enabled()

        def read(slots: np.ndarray, rows: np.ndarray, what: str) -> Tensor:
            distinct = np.unique(slots).tolist()
            memory = slot_memory[distinct[0]]
            if any(slot_memory[s] is not memory for s in distinct[1:]):
                shapes = sorted({str((tuple(slot_memory[s].values.shape[1:]), slot_memory[s].values.dtype)) for s in distinct})
                raise ValueError(f"fold: {what} gathers values of different shapes/dtypes {shapes}; they cannot be batched")
            index = torch.from_numpy(slot_offset[slots] + rows).to(device=memory.values.device)
            tokens = [slot_token[s] for s in distinct if s in slot_token] if grad else []
            if tokens:
                return _Read.apply(memory, index, *tokens)
            return memory.values.index_select(0, index)

        for g in groups:
            args: list[Any] = []
            statics = iter(g.statics)
            cols = iter(enumerate(g.cols))
            for kind in g.sig:
                if kind == _STATIC:
                    args.append(next(statics))
                    continue
                p, col = next(cols)
                if kind == _NODE:
                    slots, rows, _ = reads[g.gid, p]
                    args.append(read(slots, rows, f"argument {p} of op {g.op!r} (depth {g.depth})"))
                elif kind == _INT:
                    args.append(torch.tensor(col, dtype=torch.int64, device=device))
                elif kind == _FLOAT:
                    args.append(torch.tensor(col, dtype=torch.get_default_dtype(), device=device))
                elif kind == _TENSOR:
                    args.append(torch.stack(col))
                else:  # list
                    slots, rows, lengths = reads[g.gid, p]
                    values = read(slots, rows, f"list argument {p} of op {g.op!r} (depth {g.depth})")
                    args.append(Segments(values, lengths, g.size))
            outs = self._outputs(g, self._method(model, g.op)(*args), g.size)
            for code in used_by_group.get(g.gid, ()):
                value = self._pick(g, outs, code)
                key = (tuple(value.shape[1:]), value.dtype, value.device)
                memory = memories.get(key)
                if memory is None:
                    memory = memories[key] = _Memory(value.new_empty((capacity, *value.shape[1:])))
                slot = (g.gid << _OUT_BITS) | code
                offset = memory.used
                with torch.no_grad():
                    memory.values[offset:offset + g.size].copy_(value)
                memory.used += g.size
                slot_offset[slot] = offset
                slot_memory[slot] = memory
                if grad and value.requires_grad:
                    slot_token[slot] = _Write.apply(value, memory, offset)
        return [read(*locate(refs), f"output list {k}") for k, refs in enumerate(out_refs)]

    def _apply_eager(self, model: Any, out_refs: list[np.ndarray], device: torch.device) -> list[Tensor]:
        results: list[tuple[Tensor, ...] | None] = [None] * len(self._depth)

        def value(ref: int) -> Tensor:
            i = ref >> _OUT_BITS
            return self._pick(self._group_of_node(i)[0], results[i], ref & _OUT_MASK)

        for i in range(len(self._depth)):
            g, pos = self._group_of_node(i)
            op = g.op
            args: list[Any] = []
            statics = iter(g.statics)
            cols = iter(g.cols)
            for kind in g.sig:
                if kind == _STATIC:
                    args.append(next(statics))
                    continue
                v = next(cols)[pos]
                if kind == _NODE:
                    args.append(value(v))
                elif kind == _INT:
                    args.append(torch.tensor([v], dtype=torch.int64, device=device))
                elif kind == _FLOAT:
                    args.append(torch.tensor([v], dtype=torch.get_default_dtype(), device=device))
                elif kind == _TENSOR:
                    args.append(v.unsqueeze(0))
                else:
                    args.append(Segments(torch.cat([value(r) for r in v]), [len(v)], 1))
            results[i] = self._outputs(g, self._method(model, op)(*args), 1)
        return [torch.cat([value(int(r)) for r in refs]) for refs in out_refs]
