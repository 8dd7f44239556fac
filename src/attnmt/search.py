"""Greedy search, beam search and sampling over any model that follows the step protocol.

Search sees a model only through :class:`StepModel`: ``encode`` once, then ``step`` one target token
at a time. It reorders the model's memory and state with their ``reorder(indices)`` and never looks
inside them. Every hypothesis carries the attention rows the model returned along its path (none for
a model without attention, whose ``step`` returns None for them).

Beam search keeps ``beam_size`` slots per sentence, all sentences of a batch flattened into rows
(sentence-major: row = sentence * beam_size + slot). At each step:

1. every extension (slot, token) of every slot is scored by its total log-probability, and the best
   ``2 * beam_size`` are ranked;
2. an EOS candidate ranked within the best ``beam_size`` ends a hypothesis (it joins the sentence's
   finished ones); the best ``beam_size`` non-EOS candidates continue, so the beam never shrinks;
3. the greedy path is followed inside the beam: its next token (the argmax of its own slot's row)
   always continues, taking the last slot if it ranked too low, or always ends if it is EOS.

Step 3 makes beam search return a best hypothesis that scores at least as well as greedy search's, by
construction: plain beam search can prune the greedy prefix and end up worse. It costs an argmax per
sentence and step, and it changes the beam only when the greedy path would have been lost. With
``beam_size=1`` the one slot *is* the greedy path, so beam search returns exactly what greedy search
returns (the score aside, which carries the length penalty). This holds exactly as long as ``step``
computes a row the same way whatever else is in the batch, as the table-driven tests' fake model does;
on real hardware a different batch composition may change the last bits of a log-probability.

Stopping rule. A sentence is done when its greedy path has ended and its ``beam_size``-th best finished
hypothesis scores at least as well as its best live one would if it ended at its current length
(``log_prob / lp(current length)``); or when it reaches its maximum length, where every live hypothesis
is made to end (all tokens but EOS get -inf). Log-probabilities only fall as a hypothesis grows, so with
``length_penalty <= 0`` no live hypothesis could still beat the kept ones: the rule is exact. With
``length_penalty > 0`` a longer hypothesis could still overtake by its larger length penalty; the exact
bound (divide by ``lp(max length + 1)``) would almost never let a sentence stop before its maximum
length, so, like Hugging Face's default, we accept this for every path but the greedy one, which we
wait for (it has usually ended by then). Stopping at ``beam_size`` finished hypotheses, as
fairseq does, would also drop live hypotheses that already score better than a kept one.
Done sentences leave the batch (their rows are dropped from memory and state), so a long sentence
does not make the short ones cost steps.

Scores use the GNMT length penalty lp(len) = ((5 + len) / 6) ** alpha, len counting EOS (Wu et al.,
2016); alpha = 0 ranks by raw log-probability. With a coverage penalty beta > 0, a finished hypothesis
scores log_prob / lp(len) + beta * sum_i log(min(attention mass on source token i, 1)) (GNMT again):
one that left source tokens unattended ranks lower. Live hypotheses are still ranked by their
log-probabilities; the penalty, never positive, only lowers finished scores, so the stopping rule
stays as it is.

Sampling (``sample_search``) draws each token from the model's distribution instead, several samples
per sentence decoded as one batch, as greedy search decodes one path.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Callable, Protocol, Self, TypeVar

import torch
from torch import Tensor

from attnmt.config import check_sampling
from attnmt.data.vocab import BOS_ID, EOS_ID

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One finished translation of one sentence."""

    tokens: list[int]  # target ids, without BOS and EOS
    score: float  # what search ranked by: log_prob / lp(len(tokens) + 1), plus the coverage penalty if asked for
    log_prob: float  # sum of the token log-probabilities, EOS included
    attention: Tensor | None = field(repr=False)  # (len(tokens)+1, src_length) on the CPU, rows incl. the EOS
    # step; None for a model without attention


class SearchMemory(Protocol):
    """The encoder's output, as search sees it."""

    def reorder(self, indices: Tensor) -> Self:
        """Rows ``indices`` (batch dim, may repeat) of every tensor."""
        ...


class SearchState(Protocol):
    """The decoder's state between steps, as search sees it."""

    def reorder(self, indices: Tensor) -> Self:
        """Rows ``indices`` (batch dim, may repeat) of every tensor."""
        ...


MemoryT = TypeVar("MemoryT", bound=SearchMemory)
StateT = TypeVar("StateT", bound=SearchState)


class StepModel(Protocol[MemoryT, StateT]):
    """What search needs from a model (``attnmt.model.Seq2Seq`` is one)."""

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[MemoryT, StateT]:
        """src: (batch, src_len) padded ids, each row ending in EOS; src_lengths: (batch,)."""
        ...

    def step(self, prev_tokens: Tensor, state: StateT, memory: MemoryT) -> tuple[Tensor, StateT, Tensor | None]:
        """prev_tokens: (batch,) -> log_probs (batch, vocab), next state, attention (batch, src_len) or None."""
        ...


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """((5 + length) / 6) ** alpha, length counting EOS (Wu et al., 2016); 1 when alpha = 0."""
    return ((5 + length) / 6) ** alpha


@torch.inference_mode()
def greedy_search(
    model: StepModel[MemoryT, StateT], src: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[list[Hypothesis]]:
    """The most probable next token at every step, for a batch of sentences at once.

    src: (batch, src_len) padded ids, each row ending in EOS; src_lengths, max_lengths: (batch,), the
    latter in target tokens without EOS (EOS is forced after that many). Sentences leave the batch as
    they end. Returns a one-element list per sentence, in batch order; its score is its log-probability.
    """
    return _one_path_search(model, src, src_lengths, max_lengths, copies=1,
                            choose=lambda log_probs: log_probs.argmax(dim=-1))


@torch.inference_mode()
def sample_search(
    model: StepModel[MemoryT, StateT],
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    n_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """``n_samples`` translations of each sentence, each token drawn from the model's distribution
    (``sample_tokens``: sharpened or flattened by ``temperature``, cut to the ``top_k`` most probable
    tokens and to the smallest set holding ``top_p`` of the probability). All samples of all sentences
    are decoded as one batch; with the same ``generator`` state, the same samples come out.
    Shapes as in :func:`greedy_search`; per sentence, its samples in the order drawn, each scored by
    its log-probability under the model itself (before temperature and truncation)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    check_sampling(temperature, top_k, top_p)
    choose = functools.partial(sample_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    return _one_path_search(model, src, src_lengths, max_lengths, copies=n_samples, choose=choose)


def sample_tokens(log_probs: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """One token per row of ``log_probs`` (rows, vocab), drawn from softmax(log_probs / temperature)
    restricted to the ``top_k`` most probable tokens (0: all) and then to the fewest most probable
    ones whose probability adds up to ``top_p`` (nucleus sampling; 1: all). Returns (rows,)."""
    logits = log_probs / temperature  # (rows, vocab)
    if top_k and top_k < logits.size(1):
        kth_best = logits.topk(top_k, dim=1).values[:, -1:]  # (rows, 1)
        logits = logits.masked_fill(logits < kth_best, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probs = sorted_logits.softmax(dim=1)
        before = probs.cumsum(dim=1) - probs  # (rows, vocab) the mass of the tokens ranked above
        sorted_logits = sorted_logits.masked_fill(before >= top_p, NEG_INF)  # the best token always stays
        logits = torch.full_like(logits, NEG_INF).scatter(1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)


def _one_path_search(
    model: StepModel[MemoryT, StateT], src: Tensor, src_lengths: Tensor, max_lengths: Tensor, copies: int,
    choose: Callable[[Tensor], Tensor],
) -> list[list[Hypothesis]]:
    """``copies`` paths per sentence, each extended by the token ``choose`` picks from the step's
    log-probabilities (rows, vocab) -> (rows,): greedy search (argmax, one copy) or sampling."""
    memory, state = model.encode(src, src_lengths)
    batch, device = src.size(0), src.device
    if copies > 1:  # row = sentence * copies + copy
        expand = torch.arange(batch, device=device).repeat_interleave(copies)  # (batch*copies,)
        memory, state = memory.reorder(expand), state.reorder(expand)
    rows = list(range(batch * copies))  # each active row's path
    lengths, limits = src_lengths.tolist(), max_lengths.tolist()
    prev_tokens = torch.full((len(rows),), BOS_ID, dtype=torch.long, device=device)
    log_prob = torch.zeros(len(rows), device=device)
    tokens = torch.zeros(len(rows), 0, dtype=torch.long, device=device)  # (n, t)
    attention_rows: Tensor | None = torch.zeros(len(rows), 0, src.size(1), device=device)  # (n, t, src_len)
    results: list[Hypothesis | None] = [None] * len(rows)
    for t in itertools.count():
        log_probs, state, attention = model.step(prev_tokens, state, memory)  # (n, vocab), (n, src_len)
        log_probs = _force_eos(log_probs, [limits[row // copies] <= t for row in rows])
        prev_tokens = choose(log_probs)  # (n,)
        log_prob = log_prob + log_probs.gather(1, prev_tokens.unsqueeze(1)).squeeze(1)
        tokens = torch.cat([tokens, prev_tokens.unsqueeze(1)], dim=1)  # (n, t+1)
        attention_rows = _extend(attention_rows, slice(None), attention)  # (n, t+1, src_len)
        ended = prev_tokens == EOS_ID
        ended_rows = ended.nonzero().squeeze(1)
        if ended_rows.numel() == 0:
            continue
        ended_paths = [rows[row] for row in ended_rows.tolist()]
        hypotheses = _hypotheses(
            tokens[ended_rows, :-1],
            log_prob[ended_rows].tolist(),
            None if attention_rows is None else attention_rows[ended_rows],
            [lengths[path // copies] for path in ended_paths],
            alpha=0.0,
        )
        for path, hypothesis in zip(ended_paths, hypotheses):
            results[path] = hypothesis
        keep = (~ended).nonzero().squeeze(1)  # (m,)
        if keep.numel() == 0:
            break
        rows = [rows[row] for row in keep.tolist()]
        prev_tokens, log_prob, tokens = (x[keep] for x in (prev_tokens, log_prob, tokens))
        attention_rows = None if attention_rows is None else attention_rows[keep]
        state, memory = state.reorder(keep), memory.reorder(keep)
    return [results[sentence * copies : (sentence + 1) * copies] for sentence in range(batch)]


@torch.inference_mode()
def beam_search(
    model: StepModel[MemoryT, StateT],
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    beam_size: int,
    n_best: int = 1,
    length_penalty: float = 1.0,
    coverage_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """The ``n_best`` best hypotheses per sentence (best first, by score), found with beam search.

    Shapes as in :func:`greedy_search`; ``length_penalty`` is the GNMT alpha, ``coverage_penalty``
    the GNMT beta (``gnmt_coverage_penalty``: finished hypotheses that left source words without
    attention score lower). See the module docstring for the algorithm and its stopping rule. A
    sentence returns fewer than ``n_best`` hypotheses only when fewer with a non-zero probability fit
    within its max length.
    """
    if coverage_penalty and not model_has_attention(model):
        raise ValueError("the coverage penalty needs attention: this model has none")
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
    memory, state = model.encode(src, src_lengths)
    batch, device = src.size(0), src.device
    beams = _Beams.start(batch, beam_size, src.size(1), device)
    lengths, limits = src_lengths.tolist(), max_lengths.tolist()
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for t in itertools.count():
        if t == 0:
            # Every slot of a sentence starts from the same empty hypothesis: step it once per sentence,
            # then give each slot a copy (a fifth of the first step's work with a beam of five).
            first_tokens = beams.last_tokens()[::beam_size]  # (batch,) one slot of each sentence
            log_probs, state, memory, attention = _first_step(model, first_tokens, state, memory, beam_size)
        else:
            log_probs, state, attention = model.step(beams.last_tokens(), state, memory)  # (n*beam, vocab)
        at_limit = [limits[s] <= t for s in beams.sentences]  # (n,)
        log_probs = _force_eos(log_probs, [limit for limit in at_limit for _ in range(beam_size)])
        ranked = _rank(beams, log_probs)
        _collect_endings(finished, beams, ranked.endings, attention, lengths, length_penalty, coverage_penalty)
        pools = [finished[s] for s in beams.sentences]
        done = torch.tensor(at_limit, device=device) | _settled(ranked, pools, t + 1, length_penalty)  # (n,)
        keep = (~done).nonzero().squeeze(1)  # (m,) active sentences that go on
        if keep.numel() == 0:
            break
        rows = (keep * beam_size).unsqueeze(1) + ranked.slots[keep]  # (m, beam) rows each slot continues
        state = state.reorder(rows.flatten())
        if keep.numel() < len(beams.sentences):
            slots = torch.arange(beam_size, device=device)
            memory = memory.reorder(((keep * beam_size).unsqueeze(1) + slots).flatten())
        beams = beams.advance(ranked, keep, rows.flatten(), attention)
    return [sorted(pool, key=lambda h: h.score, reverse=True)[:n_best] for pool in finished]


def _first_step(model: StepModel[MemoryT, StateT], tokens: Tensor, state: StateT, memory: MemoryT,
                beam_size: int) -> tuple[Tensor, StateT, MemoryT, Tensor | None]:
    """Step 0 from ``tokens`` (batch,), one row per sentence, then everything repeated for each of
    ``beam_size`` slots: log_probs (batch*beam, vocab), state and memory of batch*beam rows, attention
    (batch*beam, src_len) or None."""
    log_probs, state, attention = model.step(tokens, state, memory)  # (batch, vocab)
    expand = torch.arange(tokens.size(0), device=tokens.device).repeat_interleave(beam_size)  # (batch*beam,)
    attention = None if attention is None else attention.index_select(0, expand)
    return log_probs.index_select(0, expand), state.reorder(expand), memory.reorder(expand), attention


@dataclass
class _Beams:
    """The live hypotheses of the sentences still searched: ``size`` slots each, best first."""

    sentences: list[int]  # (n,) each active sentence's index in the batch
    log_probs: Tensor  # (n, size) total log-probability of each slot, descending; -inf: an empty slot
    tokens: Tensor  # (n*size, t) target ids so far
    attention: Tensor | None  # (n*size, t, src_len) attention rows so far; None without attention
    greedy_slot: Tensor  # (n,) the slot that holds the greedy path
    greedy_live: Tensor  # (n,) bool: the greedy path has not ended yet

    @classmethod
    def start(cls, batch: int, size: int, src_len: int, device: torch.device) -> "_Beams":
        log_probs = torch.full((batch, size), NEG_INF, device=device)
        log_probs[:, 0] = 0.0  # one empty hypothesis per sentence; the other slots fill at step 1
        return cls(
            sentences=list(range(batch)),
            log_probs=log_probs,
            tokens=torch.zeros(batch * size, 0, dtype=torch.long, device=device),
            attention=torch.zeros(batch * size, 0, src_len, device=device),
            greedy_slot=torch.zeros(batch, dtype=torch.long, device=device),
            greedy_live=torch.ones(batch, dtype=torch.bool, device=device),
        )

    @property
    def size(self) -> int:
        return self.log_probs.size(1)

    def last_tokens(self) -> Tensor:
        """(n*size,) the token each slot feeds to the next step."""
        if self.tokens.size(1) == 0:
            return torch.full((self.tokens.size(0),), BOS_ID, dtype=torch.long, device=self.tokens.device)
        return self.tokens[:, -1]

    def advance(self, ranked: "_Ranked", keep: Tensor, rows: Tensor, attention: Tensor | None) -> "_Beams":
        """The beams of the kept sentences after this step; ``rows``: (m*size,) the row each continues."""
        return _Beams(
            sentences=[self.sentences[i] for i in keep.tolist()],
            log_probs=ranked.log_probs[keep],
            tokens=torch.cat([self.tokens[rows], ranked.tokens[keep].view(-1, 1)], dim=1),  # (m*size, t+1)
            attention=_extend(self.attention, rows, attention),
            greedy_slot=ranked.greedy_slot[keep],
            greedy_live=ranked.greedy_live[keep],
        )


@dataclass
class _Ranked:
    """One step's outcome for the active sentences: what continues and what ends."""

    log_probs: Tensor  # (n, size) continuing hypotheses' totals, best first
    slots: Tensor  # (n, size) the slot each one extends
    tokens: Tensor  # (n, size) the token it adds
    greedy_slot: Tensor  # (n,) where the greedy path continues
    greedy_live: Tensor  # (n,) bool
    endings: list[tuple[int, int, float]]  # (active sentence, slot, total log-prob incl. EOS)


def _rank(beams: _Beams, log_probs: Tensor) -> _Ranked:
    """Steps 1-3 of the module docstring. log_probs: (n*size, vocab), this step's, EOS forced."""
    n, size = beams.log_probs.shape
    vocab = log_probs.size(1)
    log_probs = log_probs.reshape(n, size, vocab)
    totals = beams.log_probs.unsqueeze(2) + log_probs  # (n, size, vocab)
    scores, ids = totals.view(n, size * vocab).topk(2 * size, dim=1)  # (n, 2*size), best first
    slots, tokens = ids // vocab, ids % vocab
    is_eos = tokens == EOS_ID
    ends = is_eos[:, :size] & (scores[:, :size] > NEG_INF)  # (n, size) EOS ranked within the best `size`
    endings = zip(ends.nonzero()[:, 0].tolist(), slots[:, :size][ends].tolist(), scores[:, :size][ends].tolist())
    # At most `size` candidates are EOS (one per slot), so at least `size` are not.
    order = is_eos.long().argsort(dim=1, stable=True)[:, :size]  # the best non-EOS, in rank order
    continuing = (x.gather(1, order) for x in (scores, slots, tokens))  # each (n, size)
    ranked = _Ranked(*continuing, beams.greedy_slot, beams.greedy_live, list(endings))
    _follow_greedy(ranked, totals, log_probs)
    return ranked


def _follow_greedy(ranked: _Ranked, totals: Tensor, log_probs: Tensor) -> None:
    """Step 3, in place: the greedy path's next token continues, in the last slot if it ranked too low,
    or ends. On entry ``ranked.greedy_*`` still describe the previous step. totals, log_probs: (n, size, vocab)."""
    sentence = torch.arange(totals.size(0), device=totals.device)
    slot = ranked.greedy_slot  # (n,)
    token = log_probs[sentence, slot].argmax(dim=-1)  # (n,) the argmax greedy_search takes
    total = totals[sentence, slot, token]  # (n,)
    ends = ranked.greedy_live & (token == EOS_ID)
    goes_on = ranked.greedy_live & ~ends
    is_greedy = (ranked.slots == slot.unsqueeze(1)) & (ranked.tokens == token.unsqueeze(1))  # (n, size)
    # Ranked below every continuing candidate, the greedy token takes the last slot: the slots stay sorted.
    lost = goes_on & ~is_greedy.any(dim=1)  # (n,)
    ranked.log_probs[lost, -1] = total[lost]
    ranked.slots[lost, -1] = slot[lost]
    ranked.tokens[lost, -1] = token[lost]
    is_greedy[lost, -1] = True
    ranked.greedy_slot, ranked.greedy_live = is_greedy.long().argmax(dim=1), goes_on
    ended = {(i, s) for i, s, _ in ranked.endings}
    for i, s, total_i in zip(ends.nonzero().squeeze(1).tolist(), slot[ends].tolist(), total[ends].tolist()):
        if (i, s) not in ended:  # its EOS ranked below the best `size`
            ranked.endings.append((i, s, total_i))


def _settled(ranked: _Ranked, finished: list[list[Hypothesis]], length: int, alpha: float) -> Tensor:
    """(n,) bool: the stopping rule of the module docstring; ``length``: the live hypotheses' length."""
    size = ranked.log_probs.size(1)
    kept_worst = [_kth_best_score(pool, size) for pool in finished]
    kept_worst_t = torch.tensor(kept_worst, device=ranked.log_probs.device)  # (n,); -inf: fewer than size
    best_live = ranked.log_probs[:, 0] / gnmt_length_penalty(length, alpha)  # (n,)
    return ~ranked.greedy_live & (best_live <= kept_worst_t)


def _kth_best_score(hypotheses: list[Hypothesis], k: int) -> float:
    if len(hypotheses) < k:
        return NEG_INF
    return sorted((h.score for h in hypotheses), reverse=True)[k - 1]


def _collect_endings(
    finished: list[list[Hypothesis]],
    beams: _Beams,
    endings: list[tuple[int, int, float]],
    attention: Tensor | None,
    src_lengths: list[int],
    alpha: float,
    beta: float = 0.0,
) -> None:
    """Turn this step's endings into hypotheses of their sentences. attention: (n*size, src_len) or None."""
    if not endings:
        return
    rows = torch.tensor([i * beams.size + slot for i, slot, _ in endings], device=beams.tokens.device)
    sentences = [beams.sentences[i] for i, _, _ in endings]
    attention_rows = _extend(beams.attention, rows, attention)  # (e, t+1, src_len)
    hypotheses = _hypotheses(
        beams.tokens[rows], [total for *_, total in endings], attention_rows, [src_lengths[s] for s in sentences], alpha,
        beta,
    )
    for sentence, hypothesis in zip(sentences, hypotheses):
        finished[sentence].append(hypothesis)


def _hypotheses(
    tokens: Tensor, log_probs: list[float], attention: Tensor | None, src_lengths: list[int], alpha: float,
    beta: float = 0.0,
) -> list[Hypothesis]:
    """tokens: (e, t) without EOS; attention: (e, t+1, src_len) or None, trimmed here to each real source.
    Scores: log_prob / lp(len) + cp (``beta`` > 0 only)."""
    penalty = gnmt_length_penalty(tokens.size(1) + 1, alpha)
    attention = None if attention is None else attention.float().cpu()
    hypotheses = []
    for i, (row, log_prob, length) in enumerate(zip(tokens.tolist(), log_probs, src_lengths)):
        rows = None if attention is None else attention[i, :, :length].clone()  # (t+1, length)
        score = log_prob / penalty + (gnmt_coverage_penalty(rows, beta) if beta else 0.0)
        hypotheses.append(Hypothesis(row, score, log_prob, rows))
    return hypotheses


def gnmt_coverage_penalty(attention: Tensor, beta: float) -> float:
    """beta * sum over source tokens of log(min(attention mass received, 1)) (Wu et al., 2016): 0 when
    every source token received at least one unit of attention, negative for each that got less.
    attention: (target steps, source tokens with the source </s> last); the </s> column is left out
    (it has no word to cover), a mass of 0 is taken as 1e-10."""
    coverage = attention[:, :-1].sum(dim=0).clamp(min=1e-10, max=1.0)  # (source tokens,)
    return beta * float(coverage.log().sum())


def model_has_attention(model) -> bool:
    """A step model without attention says so (``has_attention`` False); one that does not say has it."""
    return getattr(model, "has_attention", True)


def _extend(history: Tensor | None, rows: Tensor | slice, attention: Tensor | None) -> Tensor | None:
    """The attention rows so far of ``rows``, with this step's appended: history (n, t, src_len) and
    attention (n, src_len) -> (len(rows), t+1, src_len). None for a model without attention."""
    if history is None or attention is None:
        return None
    return torch.cat([history[rows], attention[rows].unsqueeze(1)], dim=1)


def _force_eos(log_probs: Tensor, at_limit: list[bool]) -> Tensor:
    """Rows whose hypotheses reached their max length may only end. log_probs: (rows, vocab)."""
    if not any(at_limit):
        return log_probs
    rows = torch.tensor(at_limit, device=log_probs.device).unsqueeze(1)  # (rows, 1)
    not_eos = torch.arange(log_probs.size(1), device=log_probs.device) != EOS_ID  # (vocab,)
    return log_probs.masked_fill(rows & not_eos, NEG_INF)
