"""The attention decoder of Luong et al. (2015), one step at a time.

At target position t (DESIGN.md, steps 1–5):

1. one RNN step on the previous token's embedding (and, with input feeding, h̃ₜ₋₁) gives hₜ;
2. attention scores hₜ against every encoder state h̄ₛ;
3. masked softmax of the scores gives the attention weights;
4. their weighted sum of the encoder states is the context cₜ;
5. h̃ₜ = tanh(W_c [cₜ; hₜ]) is the attentional vector: it predicts the next token and, with input
   feeding, enters step t+1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnmt.model.attention import AttentionKind, make_attention
from attnmt.model.encoder import EncoderMemory, make_rnn


@dataclass(frozen=True)
class DecoderState:
    """Everything one decoder step hands to the next."""

    hidden: Tensor  # (layers, batch, hidden) — hₜ of every layer
    cell: Tensor | None  # (layers, batch, hidden) for an LSTM, else None
    attentional: Tensor | None  # (batch, attentional_size) h̃ₜ for input feeding, else None

    def reorder(self, indices: Tensor) -> "DecoderState":
        """Select (and repeat) rows of the batch, e.g. to follow the surviving beam hypotheses."""
        return DecoderState(
            self.hidden.index_select(1, indices),
            None if self.cell is None else self.cell.index_select(1, indices),
            None if self.attentional is None else self.attentional.index_select(0, indices),
        )

    def concat(self, other: "DecoderState") -> "DecoderState":
        """The rows of ``self`` followed by those of ``other``, e.g. to start new sentences beside running ones."""
        return DecoderState(
            torch.cat([self.hidden, other.hidden], dim=1),
            None if self.cell is None else torch.cat([self.cell, other.cell], dim=1),
            None if self.attentional is None else torch.cat([self.attentional, other.attentional]),
        )


class Decoder(nn.Module):
    def __init__(
        self,
        embedding: nn.Embedding,
        rnn: str,
        hidden_size: int,
        layers: int,
        dropout: float,
        attention: AttentionKind,
        memory_size: int,
        attentional_size: int,
        input_feeding: bool,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.layers = layers
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.is_lstm = rnn == "lstm"
        rnn_input_size = embedding.embedding_dim + (attentional_size if input_feeding else 0)
        self.rnn = make_rnn(rnn, rnn_input_size, hidden_size, layers, dropout, bidirectional=False)
        self.bridge = nn.Linear(memory_size, layers * hidden_size)  # encoder final state -> h₀
        self.cell_bridge = nn.Linear(memory_size, layers * hidden_size) if self.is_lstm else None
        self.attention = make_attention(attention, hidden_size, memory_size)
        self.attentional_layer = nn.Linear(memory_size + hidden_size, attentional_size, bias=False)  # W_c
        self.dropout = nn.Dropout(dropout)
        self.attentional_size = attentional_size

    def initial_state(self, final: Tensor, final_cell: Tensor | None) -> DecoderState:
        """Bridge: encoder final states (batch, memory_size) -> the decoder's first state."""
        batch = final.size(0)

        def bridged(layer: nn.Linear, value: Tensor) -> Tensor:
            out = torch.tanh(layer(value))  # (batch, layers*hidden)
            return out.view(batch, self.layers, self.hidden_size).transpose(0, 1).contiguous()  # (layers, batch, hidden)

        hidden = bridged(self.bridge, final)
        cell = bridged(self.cell_bridge, final_cell) if self.cell_bridge is not None else None
        attentional = final.new_zeros(batch, self.attentional_size) if self.input_feeding else None
        return DecoderState(hidden, cell, attentional)

    def _rnn(self, inputs: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, Tensor | None]:
        """inputs (batch, steps, rnn_input) -> outputs (batch, steps, hidden), new hidden, new cell."""
        if self.is_lstm:
            outputs, (hidden, cell) = self.rnn(inputs, (state.hidden, state.cell))
            return outputs, hidden, cell
        outputs, hidden = self.rnn(inputs, state.hidden)
        return outputs, hidden, None

    def _attend(self, rnn_outputs: Tensor, memory: EncoderMemory) -> tuple[Tensor, Tensor | None]:
        """Steps 2–5 for any number of target positions.

        rnn_outputs: (batch, steps, hidden) -> attentional (batch, steps, attentional_size),
        weights (batch, steps, src_len), or None without attention
        """
        context, weights = self.attention(rnn_outputs, memory)
        # context: (batch, steps, memory_size)
        attentional = torch.tanh(self.attentional_layer(torch.cat([context, rnn_outputs], dim=-1)))
        return attentional, weights

    def step(self, embedded: Tensor, state: DecoderState, memory: EncoderMemory) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One target position. embedded: (batch, emb) -> attentional (batch, attentional_size),
        new state, attention weights (batch, src_len) or None."""
        rnn_input = embedded if state.attentional is None else torch.cat([embedded, state.attentional], dim=-1)
        outputs, hidden, cell = self._rnn(rnn_input.unsqueeze(1), state)  # outputs: (batch, 1, hidden)
        attentional, weights = self._attend(outputs, memory)  # (batch, 1, attentional), (batch, 1, src_len)
        attentional = attentional.squeeze(1)
        fed_back = attentional if self.input_feeding else None
        return attentional, DecoderState(hidden, cell, fed_back), None if weights is None else weights.squeeze(1)

    def forward(self, trg_input: Tensor, state: DecoderState, memory: EncoderMemory) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing over a whole target batch.

        trg_input: (batch, trg_len) — BOS followed by the reference tokens
        returns attentional vectors (batch, trg_len, attentional_size) and weights (batch, trg_len, src_len)
        or None without attention
        """
        embedded = self.dropout(self.embedding(trg_input))  # (batch, trg_len, emb)
        if not self.input_feeding:
            # Without input feeding no step depends on the previous attentional vector: run the RNN
            # over the whole sequence at once and attend for every position in one batched product.
            outputs, _, _ = self._rnn(embedded, state)  # (batch, trg_len, hidden)
            return self._attend(outputs, memory)
        attentional_steps, weight_steps = [], []
        for t in range(trg_input.size(1)):
            attentional, state, weights = self.step(embedded[:, t], state, memory)
            state = DecoderState(state.hidden, state.cell, self.dropout(state.attentional))
            attentional_steps.append(attentional)
            weight_steps.append(weights)
        weights = None if weight_steps[0] is None else torch.stack(weight_steps, dim=1)
        return torch.stack(attentional_steps, dim=1), weights
