"""Greedy search, beam search and sampling over any model that follows the step protocol.

Search sees a model only through :class:`StepModel`: ``encode`` once, then ``step`` one target token
at a time. It reorders the model's memory and state with their ``reorder(indices)``, joins two
states' rows with ``concat`` and never looks inside them. Every hypothesis carries the attention rows
the model returned along its path (none for a model without attention, whose ``step`` returns None
for them).

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
does not make the short ones cost steps. Search can also step a part of a larger batch at a time
and give the rows of done sentences to waiting ones (``width``, continuous batching): then a long
sentence does not cost whole steps of its own at the end of the batch either.

Scores use the GNMT length penalty lp(len) = ((5 + len) / 6) ** alpha, len counting EOS (Wu et al.,
2016); alpha = 0 ranks by raw log-probability. With a coverage penalty beta > 0, a finished hypothesis
scores log_prob / lp(len) + beta * sum_i log(min(attention mass on source token i, 1)) (GNMT again):
one that left source tokens unattended ranks lower. Live hypotheses are still ranked by their
log-probabilities; the penalty, never positive, only lowers finished scores, so the stopping rule
stays as it is.

A model may score only part of the vocabulary (a shortlist, attnmt.model.shortlist): its ``step``
then returns one column per target id of its ``output_tokens``, and search ranks, chooses and forces
EOS among those columns, mapping the chosen ones back to target ids on the host.

Sampling (``sample_search``) draws each token from the model's distribution instead, several samples
per sentence decoded as one batch, as greedy search decodes one path.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Protocol, Self, TypeVar

import numpy as np
from array_api_compat import array_namespace, device as _device, is_torch_array

from attnmt.config import check_sampling
from attnmt.data.vocab import BOS_ID, EOS_ID

if TYPE_CHECKING:
    import torch

Array = Any  # a torch.Tensor for the PyTorch models, a numpy array for the ONNX ones (attnmt.export)
NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One finished translation of one sentence."""

    tokens: list[int]  # target ids, without BOS and EOS
    score: float  # what search ranked by: log_prob / lp(len(tokens) + 1), plus the coverage penalty if asked for
    log_prob: float  # sum of the token log-probabilities, EOS included
    attention: np.ndarray | None = field(repr=False)  # (len(tokens)+1, src_length) float32, rows incl. the EOS
    # step; None for a model without attention


class SearchMemory(Protocol):
    """The encoder's output, as search sees it."""

    def reorder(self, indices: Array) -> Self:
        """Rows ``indices`` (batch dim, may repeat) of every array."""
        ...


class SearchState(Protocol):
    """The decoder's state between steps, as search sees it."""

    def reorder(self, indices: Array) -> Self:
        """Rows ``indices`` (batch dim, may repeat) of every array."""
        ...

    def concat(self, other: Self) -> Self:
        """The rows of ``self`` followed by those of ``other`` (the same model's state)."""
        ...


MemoryT = TypeVar("MemoryT", bound=SearchMemory)
StateT = TypeVar("StateT", bound=SearchState)


class StepModel(Protocol[MemoryT, StateT]):
    """What search needs from a model (``attnmt.model.Seq2Seq`` is one, on torch tensors;
    ``attnmt.export.onnx_model.OnnxModel`` another, on numpy arrays). Search does the work over the
    vocabulary (the top-k of beam search, argmax, sampling) with the array library of the ``src`` it
    is given (through the array API standard, ``array_api_compat``), so it runs without PyTorch for a
    model that does; the bookkeeping of the few candidates each sentence keeps (tokens so far,
    attention rows, endings, which rows go on) it does in numpy on the host, where a step's handful
    of numbers costs less than as many small tensor operations."""

    def encode(self, src: Array, src_lengths: Array) -> tuple[MemoryT, StateT]:
        """src: (batch, src_len) padded ids, each row ending in EOS; src_lengths: (batch,)."""
        ...

    def step(self, prev_tokens: Array, state: StateT, memory: MemoryT) -> tuple[Array, StateT, Array | None]:
        """prev_tokens: (batch,) -> log_probs (batch, vocab), next state, attention (batch, src_len) or None.
        A model that scores only part of the vocabulary (a shortlist) returns log_probs (batch, columns)
        and says which target id each column is with ``output_tokens``."""
        ...


def output_tokens(model: StepModel[MemoryT, StateT], memory: MemoryT) -> np.ndarray | None:
    """The target id of each column of ``model.step``'s log-probabilities for a batch encoded into
    ``memory``, sorted, as a host array (columns,) — for a model that has ``output_tokens(memory)``
    (attnmt.model.shortlist) — or None: column i is target id i. The ids must include EOS."""
    method = getattr(model, "output_tokens", None)
    if method is None:
        return None
    tokens = _host(method(memory)).astype(np.int64, copy=False)
    if not (tokens == EOS_ID).any():
        raise ValueError("a model's output tokens must include </s>: search could never end a hypothesis")
    return tokens


def _eos_column(columns: np.ndarray | None) -> int:
    """The column of EOS in a step's log-probabilities."""
    return EOS_ID if columns is None else int(np.flatnonzero(columns == EOS_ID)[0])


def _as_tokens(columns: np.ndarray | None, chosen: np.ndarray) -> np.ndarray:
    """Chosen columns of a step's log-probabilities (host, any shape) as target ids."""
    return chosen if columns is None else columns[chosen]


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """((5 + length) / 6) ** alpha, length counting EOS (Wu et al., 2016); 1 when alpha = 0."""
    return ((5 + length) / 6) ** alpha


def greedy_search(
    model: StepModel[MemoryT, StateT], src: Array, src_lengths: Array, max_lengths: Array, width: int | None = None,
) -> list[list[Hypothesis]]:
    """The most probable next token at every step, for a batch of sentences at once.

    src: (batch, src_len) padded ids, each row ending in EOS; src_lengths, max_lengths: (batch,), the
    latter in target tokens without EOS (EOS is forced after that many). Sentences leave the batch as
    they end; with ``width``, at most that many are stepped at once and waiting ones take the rows of
    those that end (all are encoded at once). Returns a one-element list per sentence, in batch order;
    its score is its log-probability.
    """
    xp = array_namespace(src)
    with _inference_mode(src):
        return _one_path_search(model, src, src_lengths, max_lengths, copies=1,
                                choose=lambda log_probs: xp.astype(xp.argmax(log_probs, axis=-1), xp.int64),
                                width=width)


def sample_search(
    model: StepModel[MemoryT, StateT],
    src: Array,
    src_lengths: Array,
    max_lengths: Array,
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
    its log-probability under the model itself (before temperature and truncation). Sampling draws
    with torch's generator: it needs a torch model."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    check_sampling(temperature, top_k, top_p)
    if not is_torch_array(src):
        raise ValueError("sampling draws with torch's random generator: it needs a PyTorch model")
    choose = functools.partial(sample_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    with _inference_mode(src):
        return _one_path_search(model, src, src_lengths, max_lengths, copies=n_samples, choose=choose)


def sample_tokens(log_probs: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``log_probs`` (rows, vocab), drawn from softmax(log_probs / temperature)
    restricted to the ``top_k`` most probable tokens (0: all) and then to the fewest most probable
    ones whose probability adds up to ``top_p`` (nucleus sampling; 1: all). Returns (rows,)."""
    import torch  # only ever called on torch tensors (sample_search checks), so torch is loaded already

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
    model: StepModel[MemoryT, StateT], src: Array, src_lengths: Array, max_lengths: Array, copies: int,
    choose: Callable[[Array], Array], width: int | None = None,
) -> list[list[Hypothesis]]:
    """``copies`` paths per sentence, each extended by the token ``choose`` picks from the step's
    log-probabilities (rows, vocab) -> (rows,): greedy search (argmax, one copy) or sampling. The
    paths' tokens, log-probabilities and attention rows are kept on the host, in numpy.

    All sentences are encoded at once, but at most ``width`` paths (default: all) are stepped at a
    time, in order: when paths end, waiting ones take their rows at the next step (continuous
    batching), so steps stay full until the last paths start, instead of a few long paths costing
    whole steps of their own at the end of every batch."""
    xp = array_namespace(src)
    batch, device = src.shape[0], _device(src)
    n_paths = batch * copies  # path = sentence * copies + copy
    width = n_paths if width is None else width
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    if n_paths == 0:
        return []
    pool_memory, pool_state = model.encode(src, src_lengths)  # every sentence's, whether stepped yet or not
    columns = output_tokens(model, pool_memory)  # (columns,) target ids, or None: the whole vocabulary
    eos_column = _eos_column(columns)
    lengths, limits = src_lengths.tolist(), np.asarray(max_lengths.tolist(), dtype=np.int64)
    active = _Paths.start(room=int(limits.max()) + 1, src_len=src.shape[1])
    rows_memory = _RowsMemory(xp, pool_memory, device)
    state: StateT | None = None
    prev_tokens: Array = xp.zeros((0,), dtype=xp.int64, device=device)
    results: list[Hypothesis | None] = [None] * n_paths
    waiting = 0  # the first path not started yet
    while True:
        new = _starting(waiting, n_paths, active.count, width)  # (m,) paths that take free rows now
        if new.size:
            waiting += new.size
            fresh = pool_state.reorder(_on_model(xp, new // copies, device))
            state = fresh if state is None else state.concat(fresh)
            active = active.admit(new)
            prev_tokens = xp.concat([prev_tokens, xp.full((new.size,), BOS_ID, dtype=xp.int64, device=device)])
        memory = rows_memory.of(active.paths // copies)
        log_probs, state, attention = model.step(prev_tokens, state, memory)  # (n, vocab), (n, src_len)
        log_probs = _force_eos(xp, log_probs, (limits[active.paths // copies] <= active.steps).tolist(), eos_column)
        chosen_columns = choose(log_probs)  # (n,)
        chosen_log_prob = xp.take_along_axis(log_probs, chosen_columns[:, None], axis=1)[:, 0]  # (n,)
        chosen = _as_tokens(columns, _host(chosen_columns))  # (n,) target ids
        prev_tokens = chosen_columns if columns is None else _on_model(xp, chosen, device)
        active.record(chosen, _host(chosen_log_prob), _host_attention(attention))
        ended = chosen == EOS_ID
        if not ended.any():
            continue
        for row in np.flatnonzero(ended).tolist():
            path = int(active.paths[row])
            results[path] = active.hypothesis(row, lengths[path // copies])
        keep = np.flatnonzero(~ended)  # (m,) rows that go on
        if keep.size == 0 and waiting == n_paths:
            break
        active = active.keep(keep)
        keep_rows = _on_model(xp, keep, device)
        prev_tokens, state = prev_tokens[keep_rows], state.reorder(keep_rows)
    return [results[sentence * copies : (sentence + 1) * copies] for sentence in range(batch)]


def _starting(waiting: int, total: int, active: int, width: int) -> np.ndarray:
    """The waiting sentences (or paths) ``waiting`` … ``total - 1`` that take the free rows of ``width``
    now, ``active`` being busy: (m,), empty until a quarter of the width is free, not at every ending,
    since each refill gathers every row's memory anew (measured in docs/performance.md)."""
    if waiting >= total or active > width - max(1, width // 4):
        return np.zeros(0, dtype=np.int64)
    return np.arange(waiting, min(total, waiting + width - active))


class _RowsMemory:
    """The encoder memory of a pool of sentences, gathered for the rows being stepped — again only
    when which sentence each row holds has changed."""

    def __init__(self, xp, pool: MemoryT, device: Any) -> None:
        self.xp, self.pool, self.device = xp, pool, device
        self.layout: np.ndarray | None = None  # (rows,) the sentence of each row of ``memory``
        self.memory: MemoryT | None = None

    def of(self, row_sentences: np.ndarray) -> MemoryT:
        """The memory for rows holding ``row_sentences`` (rows,), in that order."""
        if self.layout is None or not np.array_equal(self.layout, row_sentences):
            self.memory = self.pool.reorder(_on_model(self.xp, row_sentences, self.device))
            self.layout = row_sentences
        return self.memory


@dataclass
class _Paths:
    """The paths greedy search or sampling is stepping, one per row, on the host. Each row's tokens and
    attention rows fill its buffer from the left, ``steps`` of them so far (rows start at different steps)."""

    paths: np.ndarray  # (n,) int64 each row's path
    steps: np.ndarray  # (n,) int64 tokens chosen so far
    log_probs: np.ndarray  # (n,) float32 their total log-probability
    tokens: np.ndarray  # (n, room) int64
    attention: np.ndarray | None  # (n, room, src_len) float32; None for a model without attention

    @classmethod
    def start(cls, room: int, src_len: int) -> "_Paths":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32),
                   np.zeros((0, room), dtype=np.int64), np.zeros((0, room, src_len), dtype=np.float32))

    @property
    def count(self) -> int:
        return self.paths.size

    def admit(self, paths: np.ndarray) -> "_Paths":
        """These rows followed by a row for each of ``paths`` (m,), starting empty."""
        m = paths.size
        return _Paths(
            np.concatenate([self.paths, paths]),
            np.concatenate([self.steps, np.zeros(m, dtype=np.int64)]),
            np.concatenate([self.log_probs, np.zeros(m, dtype=np.float32)]),
            np.concatenate([self.tokens, np.zeros((m, *self.tokens.shape[1:]), dtype=np.int64)]),
            None if self.attention is None
            else np.concatenate([self.attention, np.zeros((m, *self.attention.shape[1:]), dtype=np.float32)]),
        )

    def record(self, tokens: np.ndarray, log_probs: np.ndarray, attention: np.ndarray | None) -> None:
        """Append this step's token (n,), its log-probability (n,) and attention row (n, src_len) or None to every row."""
        rows = np.arange(self.count)
        self.tokens[rows, self.steps] = tokens
        self.log_probs = self.log_probs + log_probs
        if attention is None:
            self.attention = None
        elif self.attention is not None:
            self.attention[rows, self.steps] = attention
        self.steps = self.steps + 1

    def hypothesis(self, row: int, src_length: int) -> Hypothesis:
        """The ended path of ``row`` (its last token EOS), scored by its log-probability."""
        length = int(self.steps[row])
        attention = None if self.attention is None else self.attention[row, :length]
        return _hypothesis(self.tokens[row, : length - 1], float(self.log_probs[row]), attention, src_length, alpha=0.0)

    def keep(self, rows: np.ndarray) -> "_Paths":
        return _Paths(self.paths[rows], self.steps[rows], self.log_probs[rows], self.tokens[rows],
                      None if self.attention is None else self.attention[rows])


def beam_search(
    model: StepModel[MemoryT, StateT],
    src: Array,
    src_lengths: Array,
    max_lengths: Array,
    beam_size: int,
    n_best: int = 1,
    length_penalty: float = 1.0,
    coverage_penalty: float = 0.0,
    width: int | None = None,
) -> list[list[Hypothesis]]:
    """The ``n_best`` best hypotheses per sentence (best first, by score), found with beam search.

    Shapes as in :func:`greedy_search`; ``length_penalty`` is the GNMT alpha, ``coverage_penalty``
    the GNMT beta (``gnmt_coverage_penalty``: finished hypotheses that left source words without
    attention score lower). See the module docstring for the algorithm and its stopping rule. A
    sentence returns fewer than ``n_best`` hypotheses only when fewer with a non-zero probability fit
    within its max length. With ``width``, at most that many sentences are searched at once and waiting
    ones take the rows of those that are done (all are encoded at once).
    """
    if coverage_penalty and not model_has_attention(model):
        raise ValueError("the coverage penalty needs attention: this model has none")
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
    if width is not None and width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    if src.shape[0] == 0:
        return []
    with _inference_mode(src):
        return _beam_search(model, src, src_lengths, max_lengths, beam_size, n_best, length_penalty, coverage_penalty,
                            width)


def _beam_search(model: StepModel[MemoryT, StateT], src: Array, src_lengths: Array, max_lengths: Array,
                 beam_size: int, n_best: int, length_penalty: float, coverage_penalty: float,
                 width: int | None) -> list[list[Hypothesis]]:
    xp = array_namespace(src)
    batch, device = src.shape[0], _device(src)
    width = batch if width is None else width
    pool_memory, pool_state = model.encode(src, src_lengths)  # every sentence's, whether searched yet or not
    columns = output_tokens(model, pool_memory)  # (columns,) target ids, or None: the whole vocabulary
    eos_column = _eos_column(columns)
    beams = _Beams.start(beam_size, src.shape[1])
    lengths, limits = src_lengths.tolist(), np.asarray(max_lengths.tolist(), dtype=np.int64)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    rows_memory = _RowsMemory(xp, pool_memory, device)
    state: StateT | None = None  # the rows of the sentences that have taken a step
    waiting = 0  # the first sentence not started yet
    while True:
        new = _starting(waiting, batch, beams.count, width)  # (m,) sentences that take free rows now
        if new.size:
            waiting += new.size
            beams = beams.admit(new)
        # A new sentence (admitted last) has one empty hypothesis: it takes one row for its first step,
        # copied to all its slots after it (a fifth of the first step's work with a beam of five).
        started = beams.steps > 0  # (n,)
        new = beams.sentences[~started]  # (m,)
        row_sentences = np.concatenate([np.repeat(beams.sentences[started], beam_size), new])  # (r,)
        memory = rows_memory.of(row_sentences)
        if new.size:
            fresh = pool_state.reorder(_on_model(xp, new, device))
            state = fresh if state is None else state.concat(fresh)
        last_tokens = np.concatenate([beams.last_tokens()[np.repeat(started, beam_size)],
                                      np.full(new.size, BOS_ID, dtype=np.int64)])  # (r,)
        log_probs, state, attention = model.step(_on_model(xp, last_tokens, device), state, memory)  # (r, vocab)
        if new.size:
            n_started = row_sentences.size - new.size
            copies = _on_model(xp, np.concatenate([np.arange(n_started),
                                                  n_started + np.repeat(np.arange(new.size), beam_size)]), device)
            log_probs, state = log_probs[copies], state.reorder(copies)  # (n*beam, vocab)
            attention = None if attention is None else attention[copies]
        at_limit = limits[beams.sentences] <= beams.steps  # (n,)
        log_probs = _force_eos(xp, log_probs, np.repeat(at_limit, beam_size).tolist(), eos_column)
        ranked = _rank(xp, beams, log_probs, columns)
        attention = _host_attention(attention)  # (n*beam, src_len) or None
        _collect_endings(finished, beams, ranked.endings, attention, lengths, length_penalty, coverage_penalty)
        pools = [finished[s] for s in beams.sentences.tolist()]
        done = at_limit | _settled(ranked, pools, beams.steps + 1, length_penalty)  # (n,)
        keep = np.flatnonzero(~done)  # (k,) active sentences that go on
        if keep.size == 0 and waiting == batch:
            break
        rows = (keep[:, None] * beam_size + ranked.slots[keep]).reshape(-1)  # (k*beam,) the row each slot continues
        state = state.reorder(_on_model(xp, rows, device))
        beams = beams.advance(ranked, keep, rows, attention)
    return [sorted(pool, key=lambda h: h.score, reverse=True)[:n_best] for pool in finished]


@dataclass
class _Beams:
    """The live hypotheses of the sentences being searched: ``size`` slots each, best first. Numpy
    arrays on the host: a step's bookkeeping is a few hundred numbers, cheaper there than as many
    small tensor operations. Sentences start at different steps (a waiting one takes the rows of one
    that ended), so each row's tokens and attention rows are its last ``steps`` columns (right-aligned,
    zeros before them), cut to the longest."""

    sentences: np.ndarray  # (n,) int64 each active sentence's index in the batch
    steps: np.ndarray  # (n,) int64 tokens each sentence's hypotheses have so far
    log_probs: np.ndarray  # (n, size) float32 total log-probability of each slot, descending; -inf: an empty slot
    tokens: np.ndarray  # (n*size, t) int64 target ids so far
    attention: np.ndarray | None  # (n*size, t, src_len) float32 attention rows so far; None without attention
    greedy_slot: np.ndarray  # (n,) int64 the slot that holds the greedy path
    greedy_live: np.ndarray  # (n,) bool: the greedy path has not ended yet

    @classmethod
    def start(cls, size: int, src_len: int) -> "_Beams":
        """No sentences yet (``admit`` them)."""
        return cls(
            sentences=np.zeros(0, dtype=np.int64),
            steps=np.zeros(0, dtype=np.int64),
            log_probs=np.zeros((0, size), dtype=np.float32),
            tokens=np.zeros((0, 0), dtype=np.int64),
            attention=np.zeros((0, 0, src_len), dtype=np.float32),
            greedy_slot=np.zeros(0, dtype=np.int64),
            greedy_live=np.ones(0, dtype=bool),
        )

    @property
    def size(self) -> int:
        return self.log_probs.shape[1]

    @property
    def count(self) -> int:
        return self.sentences.size

    def admit(self, sentences: np.ndarray) -> "_Beams":
        """These beams followed by one for each of ``sentences`` (m,): one empty hypothesis each, the
        other slots filling at its first step."""
        m, size = sentences.size, self.size
        log_probs = np.full((m, size), NEG_INF, dtype=np.float32)
        log_probs[:, 0] = 0.0
        return _Beams(
            sentences=np.concatenate([self.sentences, sentences]),
            steps=np.concatenate([self.steps, np.zeros(m, dtype=np.int64)]),
            log_probs=np.concatenate([self.log_probs, log_probs]),
            tokens=np.concatenate([self.tokens, np.zeros((m * size, self.tokens.shape[1]), dtype=np.int64)]),
            attention=None if self.attention is None else np.concatenate(
                [self.attention, np.zeros((m * size, *self.attention.shape[1:]), dtype=np.float32)]),
            greedy_slot=np.concatenate([self.greedy_slot, np.zeros(m, dtype=np.int64)]),
            greedy_live=np.concatenate([self.greedy_live, np.ones(m, dtype=bool)]),
        )

    def last_tokens(self) -> np.ndarray:
        """(n*size,) the token each slot feeds to the next step: BOS at a sentence's first."""
        started = np.repeat(self.steps > 0, self.size)
        if self.tokens.shape[1] == 0:
            return np.full(started.shape, BOS_ID, dtype=np.int64)
        return np.where(started, self.tokens[:, -1], BOS_ID)

    def path(self, row: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Row ``row``'s tokens so far (t,) and attention rows (t, src_len) or None."""
        length = int(self.steps[row // self.size])
        start = self.tokens.shape[1] - length
        return self.tokens[row, start:], None if self.attention is None else self.attention[row, start:]

    def advance(self, ranked: "_Ranked", keep: np.ndarray, rows: np.ndarray, attention: np.ndarray | None) -> "_Beams":
        """The beams of the kept sentences after this step; ``rows``: (m*size,) the row each continues."""
        steps = self.steps[keep] + 1
        start = self.tokens.shape[1] + 1 - (int(steps.max()) if steps.size else 0)  # columns no kept row uses
        tokens = np.concatenate([self.tokens[rows, start:], ranked.tokens[keep].reshape(-1, 1)], axis=1)
        history = None if self.attention is None else self.attention[:, start:]
        return _Beams(
            sentences=self.sentences[keep],
            steps=steps,
            log_probs=ranked.log_probs[keep],
            tokens=tokens,  # (m*size, t')
            attention=_extend(history, rows, attention),
            greedy_slot=ranked.greedy_slot[keep],
            greedy_live=ranked.greedy_live[keep],
        )


@dataclass
class _Ranked:
    """One step's outcome for the active sentences: what continues and what ends (numpy, host)."""

    log_probs: np.ndarray  # (n, size) continuing hypotheses' totals, best first
    slots: np.ndarray  # (n, size) the slot each one extends
    tokens: np.ndarray  # (n, size) the token it adds
    greedy_slot: np.ndarray  # (n,) where the greedy path continues
    greedy_live: np.ndarray  # (n,) bool
    endings: list[tuple[int, int, float]]  # (active sentence, slot, total log-prob incl. EOS)


def _rank(xp, beams: _Beams, log_probs: Array, columns: np.ndarray | None) -> _Ranked:
    """Steps 1-3 of the module docstring. log_probs: (n*size, vocab), this step's, EOS forced, in the
    model's arrays: the sums, top-k and the greedy path's argmax over the vocabulary run there; what
    follows, on the 2 * size candidates of each sentence, in numpy. ``columns``: the target id of each
    column of log_probs (``output_tokens``), or None."""
    n, size = beams.log_probs.shape
    vocab, device = log_probs.shape[1], _device(log_probs)
    log_probs = xp.reshape(log_probs, (n, size, vocab))
    totals = _on_model(xp, beams.log_probs, device)[:, :, None] + log_probs  # (n, size, vocab)
    scores, ids = _top_k(xp.reshape(totals, (n, size * vocab)), 2 * size)  # (n, 2*size), best first
    sentence, slot = xp.arange(n, device=device), _on_model(xp, beams.greedy_slot, device)
    greedy_token = xp.argmax(log_probs[sentence, slot], axis=-1)  # (n,) the argmax greedy_search takes
    greedy_total = totals[sentence, slot, greedy_token]  # (n,)
    scores, ids, greedy_token, greedy_total = (_host(x) for x in (scores, ids, greedy_token, greedy_total))
    slots, tokens = ids // vocab, _as_tokens(columns, ids % vocab)
    greedy_token = _as_tokens(columns, greedy_token)
    is_eos = tokens == EOS_ID
    ends = is_eos[:, :size] & (scores[:, :size] > NEG_INF)  # (n, size) EOS ranked within the best `size`
    endings = zip(np.nonzero(ends)[0].tolist(), slots[:, :size][ends].tolist(), scores[:, :size][ends].tolist())
    # At most `size` candidates are EOS (one per slot), so at least `size` are not.
    order = np.argsort(is_eos, axis=1, kind="stable")[:, :size]  # the best non-EOS, in rank order
    continuing = (np.take_along_axis(x, order, axis=1) for x in (scores, slots, tokens))  # each (n, size)
    ranked = _Ranked(*continuing, beams.greedy_slot, beams.greedy_live, list(endings))
    _follow_greedy(ranked, greedy_token, greedy_total)
    return ranked


def _top_k(x: Array, k: int) -> tuple[Array, Array]:
    """The ``k`` largest values of each row of ``x`` (rows, n) and their columns, best first. Which of
    several equal values is taken may differ between torch and numpy (neither promises an order)."""
    if is_torch_array(x):
        return x.topk(k, dim=1)
    columns = np.argpartition(-x, k - 1, axis=1)[:, :k]  # (rows, k) unordered
    values = np.take_along_axis(x, columns, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)


def _follow_greedy(ranked: _Ranked, token: np.ndarray, total: np.ndarray) -> None:
    """Step 3, in place: the greedy path's next token continues, in the last slot if it ranked too low,
    or ends. On entry ``ranked.greedy_*`` still describe the previous step; ``token`` (n,) is the
    argmax of the greedy slot's row and ``total`` (n,) the greedy path's log-probability with it."""
    slot = ranked.greedy_slot  # (n,)
    ends = ranked.greedy_live & (token == EOS_ID)
    goes_on = ranked.greedy_live & ~ends
    is_greedy = (ranked.slots == slot[:, None]) & (ranked.tokens == token[:, None])  # (n, size)
    # Ranked below every continuing candidate, the greedy token takes the last slot: the slots stay sorted.
    lost = goes_on & ~is_greedy.any(axis=1)  # (n,)
    ranked.log_probs[lost, -1] = total[lost]
    ranked.slots[lost, -1] = slot[lost]
    ranked.tokens[lost, -1] = token[lost]
    is_greedy[lost, -1] = True
    ranked.greedy_slot, ranked.greedy_live = is_greedy.argmax(axis=1), goes_on
    ended = {(i, s) for i, s, _ in ranked.endings}
    for i, s, total_i in zip(np.flatnonzero(ends).tolist(), slot[ends].tolist(), total[ends].tolist()):
        if (i, s) not in ended:  # its EOS ranked below the best `size`
            ranked.endings.append((i, s, total_i))


def _settled(ranked: _Ranked, finished: list[list[Hypothesis]], length: np.ndarray, alpha: float) -> np.ndarray:
    """(n,) bool: the stopping rule of the module docstring; ``length``: (n,) the live hypotheses' length."""
    size = ranked.log_probs.shape[1]
    kept_worst = np.array([_kth_best_score(pool, size) for pool in finished], dtype=np.float32)  # (n,); -inf: fewer than size
    best_live = ranked.log_probs[:, 0] / ranked.log_probs.dtype.type(gnmt_length_penalty(length, alpha))  # (n,)
    return ~ranked.greedy_live & (best_live <= kept_worst)


def _kth_best_score(hypotheses: list[Hypothesis], k: int) -> float:
    if len(hypotheses) < k:
        return NEG_INF
    return sorted((h.score for h in hypotheses), reverse=True)[k - 1]


def _collect_endings(
    finished: list[list[Hypothesis]],
    beams: _Beams,
    endings: list[tuple[int, int, float]],
    attention: np.ndarray | None,
    src_lengths: list[int],
    alpha: float,
    beta: float = 0.0,
) -> None:
    """Turn this step's endings into hypotheses of their sentences. attention: (n*size, src_len) or None."""
    for i, slot, total in endings:
        row = i * beams.size + slot
        tokens, history = beams.path(row)  # (t,), (t, src_len)
        rows = None if history is None or attention is None else np.concatenate([history, attention[row][None]])
        sentence = int(beams.sentences[i])
        finished[sentence].append(_hypothesis(tokens, total, rows, src_lengths[sentence], alpha, beta))


def _hypothesis(tokens: np.ndarray, log_prob: float, attention: np.ndarray | None, src_length: int, alpha: float,
                beta: float = 0.0) -> Hypothesis:
    """tokens: (t,) without EOS; attention: (t+1, src_len) or None, trimmed here to the real source.
    Score: log_prob / lp(t+1) + cp (``beta`` > 0 only)."""
    rows = None if attention is None else attention[:, :src_length].copy()  # (t+1, src_length)
    score = log_prob / gnmt_length_penalty(len(tokens) + 1, alpha) + (gnmt_coverage_penalty(rows, beta) if beta else 0.0)
    return Hypothesis(tokens.tolist(), score, log_prob, rows)


def _host(array: Array) -> np.ndarray:
    """``array`` as a numpy array on the host (a torch tensor leaves its device; numpy stays as it is)."""
    if is_torch_array(array):
        import torch  # loaded already: array is a torch tensor

        array = array.float() if array.dtype == torch.bfloat16 else array  # numpy has no bfloat16; exact
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _host_attention(attention: Array | None) -> np.ndarray | None:
    """A step's attention (rows, src_len) as float32 on the host (bf16 under autocast included), or None."""
    return None if attention is None else _host(attention).astype(np.float32, copy=False)


def _on_model(xp, array: np.ndarray, device: Any) -> Array:
    """A host numpy array (indices, tokens, scores) as the model's kind of array on its device."""
    return xp.asarray(np.ascontiguousarray(array), device=device)


def gnmt_coverage_penalty(attention: np.ndarray, beta: float) -> float:
    """beta * sum over source tokens of log(min(attention mass received, 1)) (Wu et al., 2016): 0 when
    every source token received at least one unit of attention, negative for each that got less.
    attention: (target steps, source tokens with the source </s> last); the </s> column is left out
    (it has no word to cover), a mass of 0 is taken as 1e-10."""
    coverage = np.clip(np.asarray(attention)[:, :-1].sum(axis=0, dtype=np.float32), 1e-10, 1.0)  # (source tokens,)
    return beta * float(np.log(coverage).sum())


def model_has_attention(model) -> bool:
    """A step model without attention says so (``has_attention`` False); one that does not say has it."""
    return getattr(model, "has_attention", True)


def _inference_mode(src: Array) -> ContextManager:
    """torch.inference_mode() for a torch model (no autograd graph while searching); nothing for numpy."""
    if is_torch_array(src):
        import torch  # loaded already: src is a torch tensor

        return torch.inference_mode()
    return contextlib.nullcontext()


def _extend(history: np.ndarray | None, rows: np.ndarray | slice, attention: np.ndarray | None) -> np.ndarray | None:
    """The attention rows so far of ``rows``, with this step's appended: history (n, t, src_len) and
    attention (n, src_len) -> (len(rows), t+1, src_len). None for a model without attention."""
    if history is None or attention is None:
        return None
    return np.concatenate([history[rows], attention[rows][:, None, :]], axis=1)


def _force_eos(xp, log_probs: Array, at_limit: list[bool], eos_column: int = EOS_ID) -> Array:
    """Rows whose hypotheses reached their max length may only end. log_probs: (rows, vocab), EOS in
    ``eos_column``."""
    if not any(at_limit):
        return log_probs
    rows = xp.asarray(at_limit, device=_device(log_probs))[:, None]  # (rows, 1)
    not_eos = xp.arange(log_probs.shape[1], device=_device(log_probs)) != eos_column  # (vocab,)
    return xp.where(rows & not_eos, xp.asarray(NEG_INF, dtype=log_probs.dtype, device=_device(log_probs)), log_probs)
