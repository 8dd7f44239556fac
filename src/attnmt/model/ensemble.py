"""An ensemble of models that share their vocabularies, as one more model of the step protocol:
search decodes it as it decodes one model, and does not know the difference.

At every step each model scores the next token; the ensemble's log-probabilities are the mean of
the models' log-probabilities, renormalised (``log_softmax`` of the mean: the normalised geometric
mean of the models' distributions, a product of experts). Teacher forcing (``forward``, for forced
decoding, alignments and scoring) combines them the same way, so a translation's score is the same
whether search found it or it was scored given. The attention of the ensemble is the mean of the
models' attention: rows still sum to 1, but no single network computed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from attnmt.model.seq2seq import Seq2Seq


@dataclass(frozen=True)
class EnsembleMemory:
    """Each model's encoder memory."""

    members: tuple

    def reorder(self, indices: Tensor) -> "EnsembleMemory":
        return EnsembleMemory(tuple(member.reorder(indices) for member in self.members))


@dataclass(frozen=True)
class EnsembleState:
    """Each model's decoder state."""

    members: tuple

    def reorder(self, indices: Tensor) -> "EnsembleState":
        return EnsembleState(tuple(member.reorder(indices) for member in self.members))

    def concat(self, other: "EnsembleState") -> "EnsembleState":
        return EnsembleState(tuple(mine.concat(theirs) for mine, theirs in zip(self.members, other.members)))


class Ensemble(nn.Module):
    """Models with the same source and target vocabularies, decoded together."""

    def __init__(self, models: Sequence[Seq2Seq]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    @property
    def has_attention(self) -> bool:
        """Attention is shown when every model has it (it is their mean)."""
        return all(member.has_attention for member in self.members)

    def num_parameters(self) -> int:
        return sum(member.num_parameters() for member in self.members)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EnsembleMemory, EnsembleState]:
        encoded = [member.encode(src, src_lengths) for member in self.members]
        return EnsembleMemory(tuple(m for m, _ in encoded)), EnsembleState(tuple(s for _, s in encoded))

    def step(self, prev_tokens: Tensor, state: EnsembleState, memory: EnsembleMemory,
             ) -> tuple[Tensor, EnsembleState, Tensor | None]:
        """prev_tokens: (batch,) -> log_probs (batch, trg_vocab), next state, mean attention (batch, src_len)."""
        steps = [member.step(prev_tokens, member_state, member_memory)
                 for member, member_state, member_memory in zip(self.members, state.members, memory.members)]
        log_probs = _combine([log_probs for log_probs, _, _ in steps])  # (batch, trg_vocab)
        return log_probs, EnsembleState(tuple(s for _, s, _ in steps)), self._mean_attention([a for _, _, a in steps])

    def forward(self, src: Tensor, src_lengths: Tensor, trg_input: Tensor, trg_mask: Tensor | None = None,
                ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing, as ``Seq2Seq.forward``: the combined log-probabilities (they are their own
        logits: ``log_softmax`` leaves them as they are) and the mean attention."""
        outputs = [member(src, src_lengths, trg_input, trg_mask) for member in self.members]
        log_probs = _combine([torch.log_softmax(logits.float(), dim=-1) for logits, _ in outputs])
        return log_probs, self._mean_attention([attention for _, attention in outputs])

    def _mean_attention(self, attentions: list[Tensor | None]) -> Tensor | None:
        if any(attention is None for attention in attentions):
            return None
        return torch.stack(attentions).float().mean(dim=0)


def _combine(log_probs: list[Tensor]) -> Tensor:
    """The renormalised mean of the models' log-probabilities, (..., vocab)."""
    if len(log_probs) == 1:
        return log_probs[0]
    return torch.log_softmax(torch.stack(log_probs).mean(dim=0), dim=-1)
