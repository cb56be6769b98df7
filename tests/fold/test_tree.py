"""The Tree node: its structure is fixed once made."""

from __future__ import annotations

import pytest
from torch import nn

from lstmkit.fold import BinaryTreeLSTM, Tree


def test_children_are_fixed_so_no_tree_has_a_cycle():
    """A node made its own descendant by reassigning `children` sent the Tree-LSTMs' explicit-stack
    walks (and size, str) into an endless loop that kept allocating; children are now read-only."""
    leaf = Tree(0, word=1)
    t = Tree(0, [leaf, Tree(1, word=2)])
    with pytest.raises(AttributeError, match="children: a Tree's children are fixed"):
        t.children = (t, leaf)
    assert t.children[0] is leaf and t.size() == 3
    BinaryTreeLSTM(4, 5, embedding=nn.Embedding(3, 4))([t], mode="fold")


def test_children_must_be_trees():
    with pytest.raises(TypeError, match="children: expected Tree nodes, got str 'a'"):
        Tree(0, ["a"])
