"""Dynamic batching for recursive networks: record per-example operations, run them batched.

    fold = lstmkit.fold.Fold()
    h, c = fold.add("leaf", word_id).split(2)          # one call of model.leaf, recorded
    ...
    root_h, = fold.apply(model, [[root1, root2, ...]])  # each (op, depth) group: one call

See `lstmkit.fold.engine` for the rules, `lstmkit.fold.treelstm` for Tree-LSTMs built on it.
"""

from lstmkit.fold.engine import Fold, Node, Segments
from lstmkit.fold.tree import Tree, random_binary_tree
from lstmkit.fold.treelstm import BinaryTreeLSTM, ChildSumTreeLSTM

__all__ = ["Fold", "Node", "Segments", "Tree", "random_binary_tree",
           "BinaryTreeLSTM", "ChildSumTreeLSTM"]
