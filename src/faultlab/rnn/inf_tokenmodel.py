"""The torch embedding + GRU classifier for token sequences (kept apart so :mod:`tokens` imports no torch)."""
from __future__ import annotations

import torch
import torch.nn as nn


class TokenGRU(nn.Module):
    """Embedding -> batch-first GRU -> linear head; inputs are token ids as floats (N, T) or (N, T, 1).

    ``steps(x)`` gives the hidden state and logits at every step, which
    :func:`faultlab.rnn.profile_model` uses.
    """

    def __init__(self, *, vocab: int, n_classes: int, embed: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = nn.GRU(embed, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x[..., 0]
        return self.embedding(x.round().long())

    def steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.rnn(self.embed(x))
        return out, self.head(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.head(out[:, -1])
