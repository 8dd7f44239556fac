"""Forced decoding of given translations: the model reads each source and is fed its given target,
as in training but without dropout, giving each target token's log-probability and the attention
(``Translator.score`` and ``align``, ``attnmt shortlist``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from attnmt.data.batching import collate, sentence_batches
from attnmt.errors import NoAttentionError
from attnmt.search import model_has_attention


@dataclass
class ForcedDecoding:
    """What the model computed while being fed one given translation."""

    token_log_probs: np.ndarray  # (len(trg)+1,) log-probability of each target token, then of </s>
    best_log_probs: np.ndarray  # (len(trg)+1,) at each step, the log-probability of the model's first choice
    attention: np.ndarray | None  # (len(trg)+1, len(src)+1) with the </s> row and column; None unless asked for

    @property
    def log_prob(self) -> float:
        """The log-probability of the whole translation, </s> included."""
        return float(self.token_log_probs.sum())

    @property
    def regret(self) -> np.ndarray:
        """(len(trg)+1,) how much less probable, in nats, each given token (</s> last) was than the
        token the model would have chosen there: 0 where the translation took the model's first choice."""
        return self.best_log_probs - self.token_log_probs


@torch.inference_mode()
def forced_decode(
    model: torch.nn.Module,
    src_ids: Sequence[list[int]],
    trg_ids: Sequence[list[int]],
    batch_size: int,
    device: torch.device | str = "cpu",
    need_attention: bool = False,
) -> list[ForcedDecoding]:
    """Forced decoding in length-sorted batches of ``batch_size``; results in input order.
    ``need_attention``: keep each pair's attention (a model without attention is then a
    NoAttentionError); without it only the log-probabilities are kept."""
    if len(src_ids) != len(trg_ids):
        raise ValueError(f"{len(src_ids)} sources but {len(trg_ids)} targets: they must pair up one to one")
    if need_attention and not model_has_attention(model):
        raise NoAttentionError("the model has no attention (model.attention: none): it cannot align words")
    if model.training:  # only then: switching drops the step's cached output weight a concurrent search may use
        model.eval()
    results: list[ForcedDecoding] = [ForcedDecoding(np.zeros(0), np.zeros(0), None)] * len(src_ids)
    for indices in sentence_batches([len(ids) for ids in src_ids], batch_size):
        batch = collate([src_ids[i] for i in indices], [trg_ids[i] for i in indices], indices).to(device)
        logits, attention = model(batch.src, batch.src_lengths, batch.trg_input)  # (batch, trg_len, vocab)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_log_probs = log_probs.gather(2, batch.trg_output.unsqueeze(2)).squeeze(2).cpu().numpy()  # (batch, trg_len)
        best_log_probs = log_probs.max(dim=2).values.cpu().numpy()  # (batch, trg_len)
        attention = attention.float().cpu().numpy() if need_attention else None  # (batch, trg_len, src_len)
        for row, position in enumerate(batch.indices):
            n_trg, n_src = len(trg_ids[position]) + 1, len(src_ids[position]) + 1
            results[position] = ForcedDecoding(
                token_log_probs[row, :n_trg].astype(np.float64),
                best_log_probs[row, :n_trg].astype(np.float64),
                None if attention is None else attention[row, :n_trg, :n_src],
            )
    return results
