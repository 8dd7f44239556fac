"""Attention: score the decoder state against every encoder state, softmax, weighted sum.

Three scores (Luong et al. 2015, Bahdanau et al. 2014), for a decoder state hₜ and encoder states h̄ₛ:

    dot       hₜ · h̄ₛ
    general   hₜ · W h̄ₛ
    additive  vᵀ tanh(W₁ hₜ + W₂ h̄ₛ)        (Bahdanau's "concat")

Everything that depends only on the encoder states (W h̄ₛ, W₂ h̄ₛ) is computed once per sentence by
``project_keys`` and reused at every decoder step.

``none`` is the baseline without attention, the plain encoder–decoder (Cho et al. 2014, the
"RNNencdec" of Bahdanau et al. 2014): every step's context is the encoder's final state, one
fixed-size vector for the whole sentence. Everything else in the decoder stays the same, so the two
are compared fairly; there are no attention weights.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from attnmt.model.encoder import EncoderMemory

AttentionKind = Literal["dot", "general", "additive", "none"]


class Attention(nn.Module):
    """One attention layer; ``query_size`` is the decoder state size, ``memory_size`` the encoder's."""

    def __init__(self, kind: AttentionKind, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "dot":
            if query_size != memory_size:
                raise ValueError(
                    f"dot attention needs equal decoder state and encoder output sizes, got {query_size} and "
                    f"{memory_size}; use 'general' or 'additive', or make hidden_size == 2 * encoder_hidden_size"
                )
        elif kind == "general":
            self.key_projection = nn.Linear(memory_size, query_size, bias=False)  # W
        elif kind == "additive":
            self.key_projection = nn.Linear(memory_size, query_size, bias=False)  # W₂
            self.query_projection = nn.Linear(query_size, query_size, bias=True)  # W₁ (+ bias)
            self.energy = nn.Linear(query_size, 1, bias=False)  # vᵀ
        else:
            raise ValueError(f"unknown attention kind {kind!r}; choose dot, general, additive or none")

    def project_keys(self, memory_states: Tensor) -> Tensor:
        """(batch, src_len, memory_size) -> keys (batch, src_len, query_size), once per sentence."""
        if self.kind == "dot":
            return memory_states
        return self.key_projection(memory_states)

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores. queries (batch, trg_len, query_size) -> (batch, trg_len, src_len)."""
        if self.kind == "additive":
            projected = self.query_projection(queries)  # (batch, trg_len, query_size)
            hidden = torch.tanh(projected.unsqueeze(2) + keys.unsqueeze(1))  # (batch, trg_len, src_len, query_size)
            return self.energy(hidden).squeeze(-1)  # (batch, trg_len, src_len)
        return torch.bmm(queries, keys.transpose(1, 2))  # (batch, trg_len, src_len)

    def forward(self, queries: Tensor, memory: EncoderMemory) -> tuple[Tensor, Tensor]:
        """Attend with one query per target position.

        queries: (batch, trg_len, query_size) — decoder states (trg_len is 1 in a decoding step)
        memory:  the encoder states h̄ₛ (batch, src_len, memory_size), their keys from ``project_keys``
                 and the mask of real source tokens
        returns  context (batch, trg_len, memory_size), weights (batch, trg_len, src_len)
        """
        scores = self.scores(queries, memory.keys)  # (batch, trg_len, src_len)
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # rows sum to 1, exactly 0 on padding
        context = torch.bmm(weights, memory.states)  # (batch, trg_len, memory_size)
        return context, weights


class FinalStateContext(nn.Module):
    """No attention: the context of every step is the encoder's final state (``memory.summary``)."""

    kind = "none"

    def project_keys(self, memory_states: Tensor) -> Tensor:
        """No keys: (batch, src_len, memory_size) -> (batch, src_len, 0)."""
        return memory_states[..., :0]

    def forward(self, queries: Tensor, memory: EncoderMemory) -> tuple[Tensor, None]:
        """queries (batch, trg_len, query_size) -> context (batch, trg_len, memory_size), no weights."""
        context = memory.summary.unsqueeze(1).expand(-1, queries.size(1), -1)  # (batch, trg_len, memory_size)
        return context, None


def make_attention(kind: AttentionKind, query_size: int, memory_size: int) -> Attention | FinalStateContext:
    """The attention layer of ``kind``, or the fixed final-state context for ``none``."""
    if kind == "none":
        return FinalStateContext()
    return Attention(kind, query_size, memory_size)
