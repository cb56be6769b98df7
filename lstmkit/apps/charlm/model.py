"""The language model: embedding (or one-hot) -> lstmkit.LSTM -> dropout -> linear decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.nn import LSTM

State = tuple[Tensor, Tensor]


class CharLM(nn.Module):
    """forward(x (T, B) int64, state=None) -> logits (T, B, V), state (h, c).

    Time-major throughout, as lstmkit.LSTM is inside. With `tie_weights` the decoder shares the
    embedding matrix (Press & Wolf 2017), which needs embedding_size == the LSTM's output size.
    """

    def __init__(self, vocab_size: int, cfg: CharLMConfig) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding_size = cfg.embedding_size
        in_size = cfg.embedding_size or vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_size) if cfg.embedding_size else None
        self.lstm = LSTM(in_size, cfg.hidden_size, cfg.num_layers, dropout=cfg.dropout,
                         proj_size=cfg.proj_size, cell=cfg.cell, backend=cfg.backend)
        out_size = cfg.proj_size or cfg.hidden_size
        self.drop = nn.Dropout(cfg.output_dropout)
        self.decoder = nn.Linear(out_size, vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.embedding.weight

    def embed(self, x: Tensor) -> Tensor:
        if self.embedding is None:
            return F.one_hot(x, self.vocab_size).to(self.decoder.weight.dtype)
        return self.embedding(x)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        y, state = self.lstm(self.embed(x), state)
        return self.decoder(self.drop(y)), state
