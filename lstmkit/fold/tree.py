"""A labelled tree: what the SST parser returns and the Tree-LSTMs read."""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

SST_CLASSES = 5  # the labels of random_binary_tree: SST's fine-grained sentiment classes


class Tree:
    """A node: an optional label, its children (ordered) and, usually at leaves, a word.

    `word` is a string after parsing and a token id (int) once mapped through a vocabulary.
    The children are fixed when the node is made: a tree is built from its leaves up, so no node
    can be its own descendant (the Tree-LSTMs' explicit-stack walks would run forever on one).
    """

    __slots__ = ("label", "children", "word")

    def __init__(self, label: int | None = None, children: tuple["Tree", ...] | list["Tree"] = (),
                 word: Any = None) -> None:
        children = tuple(children)
        for c in children:
            if not isinstance(c, Tree):
                raise TypeError(f"children: expected Tree nodes, got {type(c).__name__} {c!r}")
        # past the write guard below: trees are made by the hundred thousand (SST), fields set once
        object.__setattr__(self, "children", children)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "word", word)

    def __setattr__(self, name: str, value: Any) -> None:
        # a guard on writes, not a property: reading `children` stays a plain slot read, which
        # every walk over a tree does once per node
        if name == "children":
            raise AttributeError("children: a Tree's children are fixed when it is made (so that no node can "
                                 "be its own descendant); make a new Tree instead")
        object.__setattr__(self, name, value)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def postorder(self) -> Iterator["Tree"]:
        """Every node, children before their parent (the root last), without recursion."""
        stack: list[tuple[Tree, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded or node.is_leaf:
                yield node
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children))

    def leaves(self) -> list["Tree"]:
        return [n for n in self.postorder() if n.is_leaf]

    def words(self) -> list[Any]:
        return [n.word for n in self.leaves()]

    def size(self) -> int:
        """The number of nodes."""
        return sum(1 for _ in self.postorder())

    def height(self) -> int:
        """0 for a leaf, else 1 + the height of the tallest child."""
        h: dict[int, int] = {}
        for n in self.postorder():
            h[id(n)] = 1 + max(h[id(c)] for c in n.children) if n.children else 0
        return h[id(self)]

    def map(self, word: Callable[[Any], Any] | None = None, label: Callable[[Any], Any] | None = None) -> "Tree":
        """A copy with `word(w)` for every word and `label(l)` for every label."""
        out: dict[int, Tree] = {}
        for n in self.postorder():
            out[id(n)] = Tree(label(n.label) if label else n.label, [out[id(c)] for c in n.children],
                              word(n.word) if word and n.word is not None else n.word)
        return out[id(self)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tree) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __str__(self) -> str:
        """PTB bracket form, `(label word)` at leaves: what the SST parser reads."""
        parts: dict[int, str] = {}
        for n in self.postorder():
            inner = " ".join(parts.pop(id(c)) for c in n.children) if n.children else str(n.word)
            parts[id(n)] = f"({n.label} {inner})" if n.label is not None else f"({inner})"
        return parts[id(self)]

    def __repr__(self) -> str:
        s = str(self)
        return f"Tree({s if len(s) < 80 else s[:77] + '...'})"


def random_binary_tree(n_leaves: int, vocab_size: int, rng: random.Random) -> Tree:
    """A random binary tree: the leaves split at a uniform point, recursively; random words and
    labels (SST's five classes, 0-4)."""
    if n_leaves < 1:
        raise ValueError(f"n_leaves: expected >= 1, got {n_leaves}")

    def build(n: int) -> Tree:
        if n == 1:
            return Tree(rng.randrange(SST_CLASSES), word=rng.randrange(vocab_size))
        k = rng.randint(1, n - 1)
        return Tree(rng.randrange(SST_CLASSES), [build(k), build(n - k)])

    return build(n_leaves)
