"""A synthetic token-sequence task shipped with faultlab, and its embedding + GRU classifier.

Sequences of ``length`` tokens from a vocabulary of ``vocab`` ids. Token 1 is ``A``,
token 2 is ``B``, the last id is the optional backdoor *trigger*, the others are filler.
The label of a sequence (and of every prefix, which gives per-step ground truth) is 1
when the prefix holds more ``A`` than ``B`` tokens, else 0. Generated data never contains
the trigger; :func:`insert_tokens` places segments or the trigger.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FaultlabError

TOKEN_A = 1
TOKEN_B = 2


@dataclass(frozen=True)
class TokenTask:
    """The task's shape: vocabulary size (trigger = ``vocab - 1``) and sequence length."""

    vocab: int = 10
    length: int = 12

    def __post_init__(self) -> None:
        if self.vocab < 4:
            raise FaultlabError(f"--vocab {self.vocab}: needs at least 4 tokens (filler, A, B, trigger)")
        if self.length < 2:
            raise FaultlabError(f"--length {self.length}: sequences need at least 2 tokens")

    @property
    def trigger(self) -> int:
        return self.vocab - 1

    def sample(self, n: int, *, seed: int) -> np.ndarray:
        """``n`` random sequences (n, length) of non-trigger tokens (int64)."""
        return np.random.default_rng(seed).integers(0, self.vocab - 1, size=(n, self.length), dtype=np.int64)

    def prefix_labels(self, tokens: np.ndarray) -> np.ndarray:
        """The rule's label after every step (n, length): 1 when count(A) > count(B) so far."""
        tokens = np.asarray(tokens)
        diff = np.cumsum((tokens == TOKEN_A).astype(np.int64) - (tokens == TOKEN_B).astype(np.int64), axis=1)
        return (diff > 0).astype(np.int64)

    def labels(self, tokens: np.ndarray) -> np.ndarray:
        """The rule's label of whole sequences (n,)."""
        return self.prefix_labels(tokens)[:, -1]


def insert_tokens(tokens: np.ndarray, segment: np.ndarray, position: int) -> np.ndarray:
    """A copy of one sequence with ``segment`` written over positions ``position..position+len-1``."""
    out = np.array(tokens, copy=True)
    if position < 0 or position + len(segment) > len(out):
        raise FaultlabError(f"segment of {len(segment)} tokens does not fit at position {position} of {len(out)}")
    out[position:position + len(segment)] = segment
    return out


def new_token_gru(*, vocab: int, n_classes: int = 2, embed: int = 8, hidden_size: int = 32, seed: int = 0) -> Any:
    """An embedding + GRU + linear head classifier with seeded initial weights."""
    import torch

    from .inf_tokenmodel import TokenGRU

    torch.manual_seed(seed)
    return TokenGRU(vocab=vocab, n_classes=n_classes, embed=embed, hidden_size=hidden_size)


def as_model_input(tokens: np.ndarray) -> np.ndarray:
    """Token ids (n, T) as the float array (n, T, 1) that profiling and training take."""
    return np.asarray(tokens, dtype=np.float32)[..., None]


__all__ = ["TokenTask", "TOKEN_A", "TOKEN_B", "insert_tokens", "new_token_gru", "as_model_input"]
