"""The encoder: embeddings followed by a bidirectional GRU or LSTM over packed sequences,
so padding never changes a result."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class EncoderMemory:
    """What the decoder attends to, computed once per batch of sentences."""

    states: Tensor  # (batch, src_len, 2*encoder_hidden) — the h̄ₛ, zero on padding
    keys: Tensor  # (batch, src_len, query_size) — attention keys projected once
    mask: Tensor  # (batch, src_len) bool, True on real tokens
    summary: Tensor  # (batch, 2*encoder_hidden) — the encoder's final state; the context when there is no attention

    def reorder(self, indices: Tensor) -> "EncoderMemory":
        """Select (and repeat) sentences along the batch dimension, e.g. to expand to a beam."""
        return EncoderMemory(
            self.states.index_select(0, indices), self.keys.index_select(0, indices),
            self.mask.index_select(0, indices), self.summary.index_select(0, indices),
        )


def make_rnn(kind: str, input_size: int, hidden_size: int, layers: int, dropout: float, bidirectional: bool) -> nn.RNNBase:
    """A batch-first GRU or LSTM; dropout applies between layers only."""
    rnn_class = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
    return rnn_class(
        input_size,
        hidden_size,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


class Encoder(nn.Module):
    def __init__(
        self, embedding: nn.Embedding, rnn: str, hidden_size: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(rnn, embedding.embedding_dim, hidden_size, layers, dropout, bidirectional=True)
        self.output_size = 2 * hidden_size

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Encode a padded batch.

        src: (batch, src_len) token ids; src_lengths: (batch,)
        returns states (batch, src_len, 2*hidden) zero on padding,
                final (batch, 2*hidden) = [last forward state; first backward state] of the top layer,
                final_cell (batch, 2*hidden) likewise for an LSTM, else None
        """
        embedded = self.dropout(self.embedding(src))  # (batch, src_len, emb)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=src.size(1))
        # states: (batch, src_len, 2*hidden)
        final_hidden, final_cell = final if isinstance(final, tuple) else (final, None)
        return states, _top_layer(final_hidden), None if final_cell is None else _top_layer(final_cell)


def _top_layer(final: Tensor) -> Tensor:
    """(layers*2, batch, hidden) -> (batch, 2*hidden): forward and backward final states of the top layer."""
    return torch.cat([final[-2], final[-1]], dim=-1)
