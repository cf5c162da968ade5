"""The torch subject class (kept apart so that importing :mod:`faultlab.rnn.subjects` does not import torch)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import FaultlabError

ARCHS = ("lstm", "gru")


class RecurrentClassifier(nn.Module):
    """Batch-first LSTM/GRU (``rnn``) followed by a linear ``head``.

    ``forward(x)`` returns the logits of the last step; ``steps(x)`` returns the top
    layer's hidden state and the head's logits at every step, which profiling needs.
    """

    def __init__(self, *, arch: str, input_size: int, hidden_size: int, n_classes: int, num_layers: int = 1) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise FaultlabError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
        self.arch = arch
        self.config = dict(arch=arch, input_size=int(input_size), hidden_size=int(hidden_size),
                           n_classes=int(n_classes), num_layers=int(num_layers))
        rnn_cls = nn.LSTM if arch == "lstm" else nn.GRU
        self.rnn = rnn_cls(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)

    def steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (N, T, H) of the top layer and per-step logits (N, T, C)."""
        out, _ = self.rnn(x)
        return out, self.head(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
