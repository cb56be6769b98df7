"""The two sentiment models.

TreeSentiment (SST): word embedding -> constituency Tree-LSTM (lstmkit.fold.BinaryTreeLSTM,
batched with a Fold) -> dropout -> linear classifier on every node's h.

ReviewClassifier (IMDB): embedding -> bidirectional lstmkit.LSTM on a PackedSequence -> mean
of the outputs over each review's own steps (padding never enters) -> dropout -> linear.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from lstmkit.fold import BinaryTreeLSTM, Tree
from lstmkit.nn import LSTM


class TreeSentiment(nn.Module):
    """forward(trees, mode) -> (node logits (N, C), root logits (B, C)); node rows follow each
    tree's post-order, tree after tree; trees carry token ids as words."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_classes: int,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.tree = BinaryTreeLSTM(embedding_size, hidden_size, embedding=self.embedding)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, trees: list[Tree], mode: str = "fold") -> tuple[Tensor, Tensor]:
        node_h, root_h = self.tree(trees, mode=mode)
        return self.classifier(self.drop(node_h)), self.classifier(self.drop(root_h))


def packed_mean(packed: PackedSequence) -> Tensor:
    """(B, F): the mean over each sequence's own steps of a PackedSequence's data, rows in the
    original batch order. Works on the packed rows directly, so padding cannot enter."""
    data, batch_sizes = packed.data, packed.batch_sizes  # (N, F), (T,) on CPU
    B = int(batch_sizes[0])
    # Packed row k at step t belongs to sorted sequence k - offset[t].
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes
    seq = torch.arange(data.shape[0]) - torch.repeat_interleave(offsets, batch_sizes)
    seq = seq.to(data.device)
    sums = data.new_zeros(B, data.shape[1]).index_add(0, seq, data)
    lengths = torch.bincount(seq, minlength=B).to(data.dtype)  # (B,), sorted order
    mean = sums / lengths[:, None]
    if packed.unsorted_indices is not None:
        mean = mean.index_select(0, packed.unsorted_indices)
    return mean


class ReviewClassifier(nn.Module):
    """forward(tokens (B, T) int64 padded, lengths (B,)) -> logits (B, C)."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_classes: int = 2,
                 num_layers: int = 1, dropout: float = 0.3, backend: str = "auto") -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        self.lstm = LSTM(embedding_size, hidden_size, num_layers, bidirectional=True,
                         dropout=dropout if num_layers > 1 else 0.0, backend=backend)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, num_classes)

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, 2H): the mean bidirectional LSTM output over each review's valid steps."""
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        return packed_mean(out)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.classifier(self.drop(self.features(tokens, lengths)))
