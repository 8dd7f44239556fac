"""A vocabulary shortlist (as Marian's ``--shortlist`` and CTranslate2's ``vmap``): for each source
piece, the target pieces likely in its translation. A batch is decoded with an output layer of only
the union of its source pieces' lists and the most frequent target pieces, so each step multiplies
by a few hundred rows of the output matrix instead of all of them. (The batch is what search
encodes at once: attnmt.decoding's pool of ``POOL_BATCHES`` decoding batches.)

``Shortlist`` is the table; ``Shortlisted`` wraps a model as one more model of the step protocol,
whose log-probabilities cover the batch's shortlist alone (the softmax is taken over it; search maps
their columns to target ids with ``output_tokens``, so no step touches the rest of the vocabulary).
A shortlist of every target piece decodes exactly as the full vocabulary.
How the table is built from data is attnmt.apps.shortlist (``attnmt shortlist``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnmt.data.vocab import EOS_ID, UNK_ID
from attnmt.model.seq2seq import Seq2Seq


@dataclass(frozen=True)
class Shortlist:
    """lists: (src_vocab, k) target ids per source id, -1 padding; frequent: (m,) target ids always allowed."""

    lists: Tensor
    frequent: Tensor

    def allowed(self, src: Tensor) -> Tensor:
        """The sorted target ids a batch of source ids (batch, src_len) may produce: its pieces'
        lists, the frequent pieces, </s> and <unk>."""
        candidates = torch.cat([self.lists[src.reshape(-1)].reshape(-1), self.frequent,
                                torch.tensor([EOS_ID, UNK_ID], device=src.device)])
        return torch.unique(candidates[candidates >= 0])  # sorted


@dataclass(frozen=True)
class ShortlistMemory:
    """The model's encoder memory, the target ids the batch may produce and their rows of the
    output layer (gathered once per batch)."""

    inner: object
    allowed: Tensor  # (n_allowed,) sorted target ids
    weight: Tensor  # (n_allowed, attentional)
    bias: Tensor | None  # (n_allowed,)

    def reorder(self, indices: Tensor) -> "ShortlistMemory":
        return ShortlistMemory(self.inner.reorder(indices), self.allowed, self.weight, self.bias)


class Shortlisted(nn.Module):
    """A model decoded with a shortlist: the output layer computes only the allowed rows."""

    def __init__(self, model: Seq2Seq, shortlist: Shortlist) -> None:
        super().__init__()
        self.model = model
        self.shortlist = shortlist
        # the output matrix: the layer's own for a float model, dequantized once for an int8 one
        self.output_weight = _output_weight(model.output_layer)  # (trg_vocab, attentional)
        self.output_bias = _output_bias(model.output_layer)

    @property
    def has_attention(self) -> bool:
        return self.model.has_attention

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[ShortlistMemory, object]:
        memory, state = self.model.encode(src, src_lengths)
        allowed = self.shortlist.allowed(src)  # (n_allowed,)
        bias = None if self.output_bias is None else self.output_bias.index_select(0, allowed)
        return ShortlistMemory(memory, allowed, self.output_weight.index_select(0, allowed), bias), state

    def step(self, prev_tokens: Tensor, state, memory: ShortlistMemory) -> tuple[Tensor, object, Tensor | None]:
        """prev_tokens (batch,) target ids -> log_probs (batch, n_allowed) over the batch's shortlist
        only, column i being target id ``memory.allowed[i]`` (``output_tokens``): search ranks and
        chooses among these columns and never touches the rest of the vocabulary."""
        attentional, state, weights = self.model.attentional_step(prev_tokens, state, memory.inner)
        logits = F.linear(attentional, memory.weight, memory.bias)  # (batch, n_allowed)
        return torch.log_softmax(logits.float(), dim=-1), state, weights  # (batch, n_allowed)

    def output_tokens(self, memory: ShortlistMemory) -> Tensor:
        """(n_allowed,) the sorted target id of each column of ``step``'s log-probabilities."""
        return memory.allowed

    def forward(self, *args, **kwargs):
        """Teacher forcing (forced decoding, scoring) uses the full vocabulary."""
        return self.model(*args, **kwargs)


def _output_weight(layer: nn.Module) -> Tensor:
    """The output matrix (trg_vocab, attentional) of a float or an int8 (dynamically quantized) layer."""
    weight = layer.weight
    return weight().dequantize() if callable(weight) else weight


def _output_bias(layer: nn.Module) -> Tensor | None:
    bias = layer.bias
    return bias() if callable(bias) else bias
