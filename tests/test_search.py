"""Greedy and beam search on hand-made log-probability tables, with no network (as OpenNMT-py tests its
beam search), plus property tests on random tables and one smoke test on the real model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID
from attnmt.search import Hypothesis, beam_search, gnmt_length_penalty, greedy_search, sample_search

A, B, C = 4, 5, 6  # target words; 0-3 are PAD, UNK, BOS, EOS
VOCAB = 7

# (sentence key, target prefix without BOS) -> log-probabilities of the next token, (VOCAB,)
Table = Callable[[int, tuple[int, ...]], Sequence[float]]


# --- a fake model that follows search's protocol ---------------------------------------------------


@dataclass(frozen=True)
class TableMemory:
    keys: tuple[int, ...]  # each row's sentence key: its first source token
    mask: torch.Tensor  # (batch, src_len) True on real source tokens

    def reorder(self, indices: torch.Tensor) -> "TableMemory":
        return TableMemory(tuple(self.keys[i] for i in indices.tolist()), self.mask.index_select(0, indices))


@dataclass(frozen=True)
class TableState:
    prefixes: tuple[tuple[int, ...] | None, ...]  # target tokens fed after BOS; None before the first step

    def reorder(self, indices: torch.Tensor) -> "TableState":
        return TableState(tuple(self.prefixes[i] for i in indices.tolist()))

    def concat(self, other: "TableState") -> "TableState":
        return TableState(self.prefixes + other.prefixes)


def fake_attention(mask: torch.Tensor, step: int, prev_token: int) -> torch.Tensor:
    """(src_len,) weights that change from step to step, zero on padding, summing to 1."""
    positions = torch.arange(mask.numel())
    weights = (1 + (positions + 2 * step + prev_token) % 4).float() * mask
    return weights / weights.sum()


class TableModel:
    """Implements ``StepModel``: log-probabilities come from a table, attention from ``fake_attention``
    (or none, like a model without attention, when ``with_attention`` is False)."""

    def __init__(self, table: Table, with_attention: bool = True) -> None:
        self.table = table
        self.with_attention = with_attention
        self.step_batch_sizes: list[int] = []

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[TableMemory, TableState]:
        mask = src != PAD_ID
        assert mask.sum(1).tolist() == src_lengths.tolist()
        return TableMemory(tuple(src[:, 0].tolist()), mask), TableState((None,) * src.size(0))

    def step(
        self, prev_tokens: torch.Tensor, state: TableState, memory: TableMemory
    ) -> tuple[torch.Tensor, TableState, torch.Tensor | None]:
        self.step_batch_sizes.append(len(prev_tokens))
        prefixes = []
        for prefix, token in zip(state.prefixes, prev_tokens.tolist()):
            assert prefix is not None or token == BOS_ID  # BOS comes first, once
            prefixes.append(() if prefix is None else prefix + (token,))
        log_probs = torch.tensor([list(self.table(key, prefix)) for key, prefix in zip(memory.keys, prefixes)])
        rows = zip(memory.mask, prefixes, prev_tokens.tolist())
        attention = torch.stack([fake_attention(mask, len(prefix), token) for mask, prefix, token in rows])
        if not self.with_attention:
            attention = None
        return log_probs, TableState(tuple(prefixes)), attention  # (batch, VOCAB), (batch, src_len)


def prefix_table(
    probabilities: dict[tuple[int, ...], dict[int, float]], default: dict[int, float] | None = None
) -> Table:
    """Next-token probabilities per prefix (0 for tokens not named); unlisted prefixes use ``default``."""
    default = default or {EOS_ID: 1.0}

    def table(key: int, prefix: tuple[int, ...]) -> list[float]:
        probs = probabilities.get(prefix, default)
        return [math.log(probs[token]) if token in probs else -math.inf for token in range(VOCAB)]

    return table


def sources(src_lengths: Sequence[int], first_key: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch whose sentence i has key first_key+i and src_lengths[i] tokens (its EOS included)."""
    width = max(src_lengths)
    assert min(src_lengths) >= 2, "a key and EOS at least"
    rows = [[first_key + i] + [7] * (n - 2) + [EOS_ID] for i, n in enumerate(src_lengths)]
    rows = [row + [PAD_ID] * (width - len(row)) for row in rows]
    return torch.tensor(rows), torch.tensor(list(src_lengths))


def decode_one(table: Table, max_length: int = 10, beam_size: int = 0, **options) -> list[Hypothesis]:
    """The hypotheses for one sentence: greedy when beam_size is 0."""
    src, src_lengths = sources([3])
    max_lengths = torch.tensor([max_length])
    if beam_size == 0:
        return greedy_search(TableModel(table), src, src_lengths, max_lengths)[0]
    return beam_search(TableModel(table), src, src_lengths, max_lengths, beam_size, **options)[0]


def summary(hypotheses: list[Hypothesis]) -> list[tuple[list[int], float]]:
    return [(h.tokens, round(h.score, 6)) for h in hypotheses]


def lp(length: int, alpha: float = 1.0) -> float:
    return ((5 + length) / 6) ** alpha


# --- hand-made tables -------------------------------------------------------------------------------

BEAM_BEATS_GREEDY = prefix_table(
    {
        (): {A: 0.5, B: 0.4, EOS_ID: 0.1},
        (A,): {A: 0.3, B: 0.3, EOS_ID: 0.4},  # A </s>: 0.20
        (B,): {EOS_ID: 0.9, A: 0.1},  # B </s>: 0.36
    }
)

# Short: </s> at once (0.45). Long: A A </s> (0.4 * 0.95 * 0.95 = 0.361).
# alpha = 0: 0.45 wins. alpha = 1: log(0.361) / lp(3) = -0.764 beats log(0.45) / lp(1) = -0.799.
SHORT_OR_LONG = prefix_table(
    {
        (): {EOS_ID: 0.45, A: 0.4, B: 0.15},
        (A,): {A: 0.95, EOS_ID: 0.05},
        (A, A): {EOS_ID: 0.95, A: 0.05},
    }
)


def test_greedy_follows_the_most_probable_token():
    table = prefix_table({(): {A: 0.6, B: 0.4}, (A,): {B: 0.7, EOS_ID: 0.3}, (A, B): {EOS_ID: 0.8, A: 0.2}})
    [best] = decode_one(table)
    assert best.tokens == [A, B]
    assert best.log_prob == pytest.approx(math.log(0.6 * 0.7 * 0.8))
    assert best.score == best.log_prob


def test_beam_finds_the_sequence_greedy_misses():
    [greedy] = decode_one(BEAM_BEATS_GREEDY)
    assert (greedy.tokens, greedy.log_prob) == ([A], pytest.approx(math.log(0.5 * 0.4)))
    found = decode_one(BEAM_BEATS_GREEDY, beam_size=2, n_best=2, length_penalty=0.0)
    assert summary(found) == [([B], round(math.log(0.36), 6)), ([A], round(math.log(0.20), 6))]


def test_length_penalty_changes_the_winner():
    assert summary(decode_one(SHORT_OR_LONG, beam_size=2, length_penalty=0.0)) == [([], round(math.log(0.45), 6))]
    [best] = decode_one(SHORT_OR_LONG, beam_size=2, length_penalty=1.0)
    assert best.tokens == [A, A]
    assert best.log_prob == pytest.approx(math.log(0.361))
    assert best.score == pytest.approx(math.log(0.361) / lp(3))


def test_n_best_comes_sorted_by_score():
    found = decode_one(SHORT_OR_LONG, beam_size=3, n_best=3, length_penalty=1.0)
    assert summary(found) == [
        ([A, A], round(math.log(0.361) / lp(3), 6)),
        ([], round(math.log(0.45) / lp(1), 6)),
        ([B], round(math.log(0.15) / lp(2), 6)),
    ]


def test_search_goes_on_while_a_live_hypothesis_can_beat_a_kept_one():
    # After step 2 the beam (2) holds </s> (0.5) and A </s> (0.18), but the live B A (0.2) can still
    # beat 0.18; it does: B A </s> = 0.19. Stopping at two finished hypotheses would miss it.
    table = prefix_table(
        {
            (): {EOS_ID: 0.5, A: 0.3, B: 0.2},
            (A,): {EOS_ID: 0.6, A: 0.4},
            (B,): {A: 1.0},
            (B, A): {EOS_ID: 0.95, A: 0.05},
        }
    )
    found = decode_one(table, beam_size=2, n_best=2, length_penalty=0.0)
    assert summary(found) == [([], round(math.log(0.5), 6)), ([B, A], round(math.log(0.19), 6))]


def test_the_greedy_path_survives_pruning():
    # Greedy: A A </s> = 0.4 * 0.34 = 0.136. At step 2 plain beam search (2) keeps B A (0.22) and B B
    # (0.18) and drops A A, and everything after B scores below 0.08. The greedy path is kept instead.
    table = prefix_table(
        {
            (): {A: 0.4, B: 0.35, C: 0.25},
            (A,): {A: 0.34, B: 0.33, C: 0.33},
            (B,): {A: 0.55, B: 0.45},
            (A, A): {EOS_ID: 1.0},
        },
        default={EOS_ID: 0.4, C: 0.6},
    )
    [greedy] = decode_one(table)
    assert greedy.tokens == [A, A]
    [best] = decode_one(table, beam_size=2, length_penalty=0.0)
    assert (best.tokens, best.log_prob) == ([A, A], pytest.approx(math.log(0.136)))


def test_search_waits_for_the_greedy_path_to_end():
    # alpha = 2. After step 2, </s> (0.35: -1.05) and B </s> (0.225: -1.10) are kept and the best live
    # hypothesis, A A (0.144: -1.42 at its length), looks worse than both; but A A goes on cheaply and
    # A A A A A </s> (0.133) scores log(0.133) / lp(6) = -0.60. It is the greedy path, so search waits.
    steady = {A: 0.98, EOS_ID: 0.02}
    table = prefix_table(
        {
            (): {A: 0.4, EOS_ID: 0.35, B: 0.25},
            (A,): {A: 0.36, C: 0.34, EOS_ID: 0.30},
            (B,): {EOS_ID: 0.9, A: 0.1},
            (A, A): steady,
            (A, A, A): steady,
            (A, A, A, A): steady,
            (A, A, A, A, A): {EOS_ID: 0.98, A: 0.02},
        }
    )
    [greedy] = decode_one(table)
    assert greedy.tokens == [A] * 5
    [best] = decode_one(table, beam_size=2, length_penalty=2.0)
    assert best.tokens == [A] * 5
    assert best.score == pytest.approx(math.log(0.4 * 0.36 * 0.98**4) / lp(6, alpha=2.0))


def test_max_length_makes_hypotheses_end():
    always_a = prefix_table({}, default={A: 0.9, EOS_ID: 0.1})
    [greedy] = decode_one(always_a, max_length=3)
    assert greedy.tokens == [A, A, A]
    assert greedy.log_prob == pytest.approx(3 * math.log(0.9) + math.log(0.1))
    found = decode_one(always_a, max_length=3, beam_size=2, n_best=2, length_penalty=1.0)
    assert summary(found) == [
        ([A, A, A], round(math.log(0.9**3 * 0.1) / lp(4), 6)),
        ([A, A], round(math.log(0.9**2 * 0.1) / lp(3), 6)),
    ]
    assert [h.tokens for h in decode_one(always_a, max_length=0)] == [[]]
    assert [h.tokens for h in decode_one(always_a, max_length=0, beam_size=3)] == [[]]


def test_each_sentence_has_its_own_max_length():
    always_a = prefix_table({}, default={A: 0.9, EOS_ID: 0.1})
    src, src_lengths = sources([4, 2, 3])
    max_lengths = torch.tensor([1, 3, 0])
    greedy = greedy_search(TableModel(always_a), src, src_lengths, max_lengths)
    assert [n_best[0].tokens for n_best in greedy] == [[A], [A, A, A], []]
    beam = beam_search(TableModel(always_a), src, src_lengths, max_lengths, beam_size=2, length_penalty=2.0)
    assert [n_best[0].tokens for n_best in beam] == [[A], [A, A, A], []]


def test_finished_sentences_leave_the_batch():
    def table(key: int, prefix: tuple[int, ...]) -> list[float]:
        ending = {EOS_ID: 1.0} if key == 10 else {A: 0.9, EOS_ID: 0.1}  # sentence 0 ends at once
        return [math.log(ending[token]) if token in ending else -math.inf for token in range(VOCAB)]

    src, src_lengths = sources([3, 3])
    max_lengths = torch.tensor([5, 5])
    model = TableModel(table)
    greedy_search(model, src, src_lengths, max_lengths)
    assert model.step_batch_sizes == [2, 1, 1, 1, 1, 1]
    model = TableModel(table)
    beam_search(model, src, src_lengths, max_lengths, beam_size=3, length_penalty=0.0)
    # The first step runs once per sentence (every slot starts from the same empty hypothesis), then
    # three slots of the one sentence left.
    assert model.step_batch_sizes[:2] == [2, 3] and set(model.step_batch_sizes[1:]) == {3}


def test_attention_rows_are_the_models_trimmed_to_the_source():
    table = prefix_table({(): {A: 0.6, B: 0.4}, (A,): {B: 0.7, EOS_ID: 0.3}, (B,): {EOS_ID: 1.0}})
    src, src_lengths = sources([5, 3])
    max_lengths = torch.tensor([10, 10])
    for found in (
        greedy_search(TableModel(table), src, src_lengths, max_lengths),
        beam_search(TableModel(table), src, src_lengths, max_lengths, beam_size=2, n_best=2),
    ):
        for sentence, n_best in enumerate(found):
            for hypothesis in n_best:
                assert hypothesis.attention.shape == (len(hypothesis.tokens) + 1, int(src_lengths[sentence]))
                torch.testing.assert_close(torch.from_numpy(hypothesis.attention), expected_attention(src[sentence], hypothesis.tokens))


def expected_attention(src_row: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """The rows TableModel returned along ``tokens`` and its final EOS step, trimmed to the real source."""
    mask = src_row != PAD_ID
    prev_tokens = [BOS_ID] + tokens
    rows = torch.stack([fake_attention(mask, step, prev) for step, prev in enumerate(prev_tokens)])
    return rows[:, : int(mask.sum())]


def test_arguments_are_checked():
    src, src_lengths = sources([3])
    model, max_lengths = TableModel(BEAM_BEATS_GREEDY), torch.tensor([5])
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, src, src_lengths, max_lengths, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, src, src_lengths, max_lengths, beam_size=2, n_best=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, src_lengths, max_lengths, beam_size=0)


# --- random tables ----------------------------------------------------------------------------------

TIME_SLOTS = 4  # random tables depend on (sentence, min(step, 3), previous token)
MAX_SENTENCES = 3
TABLE_SHAPE = (MAX_SENTENCES, TIME_SLOTS, VOCAB, VOCAB)
# A fixed jitter far below the integer grid, its entries distinct multiples of 1e-5: two log-probs of
# a row never tie, even as parts of float32 path totals near -10 (whose spacing is 1e-6). Uniform
# random jitter did not promise that: two entries of one row 2e-7 apart became one float32 total, and
# torch.topk may break such a tie differently for differently shaped rows (a hypothesis example).
JITTER = torch.randperm(math.prod(TABLE_SHAPE), generator=torch.Generator().manual_seed(0)).reshape(TABLE_SHAPE) * 1e-5


class RandomTable:
    def __init__(self, logits: np.ndarray, first_key: int = 10) -> None:
        values = -1.0 * torch.from_numpy(logits).double() + JITTER.double()
        self.log_probs = torch.log_softmax(values, dim=-1).float()  # (sentences, TIME_SLOTS, VOCAB, VOCAB)
        self.first_key = first_key

    def __call__(self, key: int, prefix: tuple[int, ...]) -> list[float]:
        prev = prefix[-1] if prefix else BOS_ID
        return self.log_probs[key - self.first_key, min(len(prefix), TIME_SLOTS - 1), prev].tolist()

    def path_log_prob(self, key: int, tokens: list[int]) -> float:
        """The float32 sum search computes, step by step, of the path's log-probs incl. EOS."""
        total = torch.zeros((), dtype=torch.float32)
        for step, token in enumerate(tokens + [EOS_ID]):
            total = total + torch.tensor(self(key, tuple(tokens[:step]))[token])
        return float(total)


# One byte per entry, each drawn on its own (arrays with a fill value rarely make greedy-unfriendly
# tables), mapped to logits 0, -1, -2: small gaps, so search choices are close calls.
random_tables = st.binary(min_size=math.prod(TABLE_SHAPE), max_size=math.prod(TABLE_SHAPE)).map(
    lambda data: RandomTable(np.frombuffer(data, dtype=np.uint8).reshape(TABLE_SHAPE) % 3)
)
# (src_len, max_len) per sentence
batches = st.lists(st.tuples(st.integers(2, 6), st.integers(0, 5)), min_size=1, max_size=MAX_SENTENCES)
alphas = st.sampled_from([0.0, 0.6, 1.0, 2.0])


def search_inputs(batch: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src, src_lengths = sources([src_length for src_length, _ in batch])
    return src, src_lengths, torch.tensor([max_length for _, max_length in batch])


@settings(max_examples=60, deadline=None)
@given(table=random_tables, batch=batches, alpha=alphas)
def test_beam_of_one_is_greedy(table, batch, alpha):
    src, src_lengths, max_lengths = search_inputs(batch)
    greedy = greedy_search(TableModel(table), src, src_lengths, max_lengths)
    beam = beam_search(TableModel(table), src, src_lengths, max_lengths, beam_size=1, length_penalty=alpha)
    for [g], [b] in zip(greedy, beam):
        assert b.tokens == g.tokens and b.log_prob == g.log_prob
        assert b.score == g.log_prob / gnmt_length_penalty(len(g.tokens) + 1, alpha)
        assert np.array_equal(b.attention, g.attention)


@settings(max_examples=150, deadline=None)
@given(table=random_tables, batch=batches, alpha=alphas, beam_size=st.integers(2, 4), data=st.data())
def test_beam_never_scores_below_greedy(table, batch, alpha, beam_size, data):
    n_best = data.draw(st.integers(1, beam_size))
    src, src_lengths, max_lengths = search_inputs(batch)
    greedy = greedy_search(TableModel(table), src, src_lengths, max_lengths)
    beam = beam_search(TableModel(table), src, src_lengths, max_lengths, beam_size, n_best, alpha)
    for sentence, ([g], found) in enumerate(zip(greedy, beam)):
        assert found[0].score >= g.log_prob / gnmt_length_penalty(len(g.tokens) + 1, alpha)
        assert 1 <= len(found) <= n_best
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
        assert len({tuple(h.tokens) for h in found}) == len(found)
        for h in found:  # every hypothesis is a real path of the table, scored as documented
            assert len(h.tokens) <= batch[sentence][1] and EOS_ID not in h.tokens
            assert h.log_prob == pytest.approx(table.path_log_prob(10 + sentence, h.tokens), abs=1e-5)
            assert h.score == pytest.approx(h.log_prob / gnmt_length_penalty(len(h.tokens) + 1, alpha))


@settings(max_examples=40, deadline=None)
@given(table=random_tables, batch=batches, beam_size=st.integers(1, 3))
def test_a_batch_gives_what_each_sentence_gives_alone(table, batch, beam_size):
    src, src_lengths, max_lengths = search_inputs(batch)
    for search in (
        lambda *inputs: greedy_search(TableModel(table), *inputs),
        lambda *inputs: beam_search(TableModel(table), *inputs, beam_size, n_best=beam_size),
    ):
        together = search(src, src_lengths, max_lengths)
        for sentence, found in enumerate(together):
            one = slice(sentence, sentence + 1)
            [alone] = search(src[one, : src_lengths[sentence]], src_lengths[one], max_lengths[one])
            assert [(h.tokens, h.score, h.log_prob) for h in found] == [(h.tokens, h.score, h.log_prob) for h in alone]
            for h, h_alone in zip(found, alone):
                assert np.array_equal(h.attention, h_alone.attention)
                torch.testing.assert_close(torch.from_numpy(h.attention), expected_attention(src[sentence], h.tokens))


@settings(max_examples=80, deadline=None)
@given(table=random_tables, batch=st.lists(st.tuples(st.integers(2, 6), st.integers(0, 5)), min_size=1, max_size=10),
       width=st.integers(1, 10), with_attention=st.booleans(),
       on_numpy=st.booleans(), beam_size=st.integers(1, 3), alpha=alphas)
def test_searching_part_of_the_batch_at_a_time_finds_the_same_translations(
        table, batch, width, with_attention, on_numpy, beam_size, alpha):
    """With ``width``, at most that many sentences are searched at once and waiting ones take the rows
    of those that are done: each sentence gets what searching the whole batch gives it (tokens, scores,
    attention), greedy computes each of its steps once, and no step has more rows than width allows."""
    inputs = search_inputs(batch)
    table_model = TableModel(lambda key, prefix: table(10 + (key - 10) % MAX_SENTENCES, prefix), with_attention)
    model = table_model
    if on_numpy:
        model = NumpyTableModel(table)
        model.model = table_model
        inputs = tuple(x.numpy() for x in inputs)
    for search, rows_per_sentence in (
        (lambda m, **w: greedy_search(m, *inputs, **w), 1),
        (lambda m, **w: beam_search(m, *inputs, beam_size, beam_size, alpha, **w), beam_size),
    ):
        whole = search(model)
        table_model.step_batch_sizes.clear()
        part = search(model, width=width)
        assert max(table_model.step_batch_sizes) <= width * rows_per_sentence
        if rows_per_sentence == 1:
            assert sum(table_model.step_batch_sizes) == sum(len(g.tokens) + 1 for [g] in whole)
        for found_whole, found_part in zip(whole, part):
            assert [h.tokens for h in found_part] == [h.tokens for h in found_whole]
            assert [h.log_prob for h in found_part] == pytest.approx([h.log_prob for h in found_whole], abs=1e-6)
            assert [h.score for h in found_part] == pytest.approx([h.score for h in found_whole], abs=1e-6)
            for w, p in zip(found_whole, found_part):
                assert (p.attention is None) == (w.attention is None) == (not with_attention)
                if with_attention:
                    assert np.array_equal(p.attention, w.attention)


def test_greedy_gives_the_rows_of_ended_sentences_to_waiting_ones():
    """Three sentences end at once, the first runs to its limit: two rows stay busy while any wait,
    where a batch of two would leave one row busy for the first sentence's whole length."""

    def first_runs_on(key: int, prefix: tuple[int, ...]) -> list[float]:
        probs = {A: 0.9, EOS_ID: 0.1} if key == 10 else {EOS_ID: 1.0}
        return [math.log(probs[token]) if token in probs else -math.inf for token in range(VOCAB)]

    src, src_lengths = sources([3, 3, 3, 3])
    model = TableModel(first_runs_on)
    found = greedy_search(model, src, src_lengths, torch.tensor([5, 5, 5, 5]), width=2)
    assert [h.tokens for [h] in found] == [[A] * 5, [], [], []]
    assert model.step_batch_sizes == [2, 2, 2, 1, 1, 1]


@settings(max_examples=40, deadline=None)
@given(table=random_tables, batch=batches, alpha=alphas, beam_size=st.integers(1, 3))
def test_a_model_without_attention_is_searched_the_same_way(table, batch, alpha, beam_size):
    """Search does not depend on attention: the same hypotheses, each with no attention matrix."""
    src, src_lengths, max_lengths = search_inputs(batch)
    for search in (
        lambda model: greedy_search(model, src, src_lengths, max_lengths),
        lambda model: beam_search(model, src, src_lengths, max_lengths, beam_size, beam_size, alpha),
    ):
        with_attention = search(TableModel(table))
        without = search(TableModel(table, with_attention=False))
        for found, found_without in zip(with_attention, without):
            assert [(h.tokens, h.score, h.log_prob) for h in found_without] == [
                (h.tokens, h.score, h.log_prob) for h in found
            ]
            assert all(h.attention is None for h in found_without)


class PartOfTheVocabulary:
    """A model that scores only the target ids ``tokens`` (as a shortlist does): ``step`` returns one
    column per id of ``output_tokens``."""

    def __init__(self, inner: TableModel, tokens: list[int]) -> None:
        self.inner, self.tokens = inner, torch.tensor(tokens)

    def encode(self, src, src_lengths):
        return self.inner.encode(src, src_lengths)

    def step(self, prev_tokens, state, memory):
        assert set(prev_tokens.tolist()) <= set(self.tokens.tolist()) | {BOS_ID}  # target ids, not columns
        log_probs, state, attention = self.inner.step(prev_tokens, state, memory)
        return log_probs[:, self.tokens], state, attention  # (batch, len(tokens))

    def output_tokens(self, memory) -> torch.Tensor:
        return self.tokens


def only(table: Table, tokens: list[int]) -> Table:
    """``table`` with -inf outside ``tokens``."""
    return lambda key, prefix: [p if token in tokens else -math.inf for token, p in enumerate(table(key, prefix))]


@settings(max_examples=60, deadline=None)
@given(table=random_tables, batch=batches, alpha=alphas, beam_size=st.integers(1, 3),
       others=st.sets(st.sampled_from([A, B, C]), min_size=1))
def test_a_model_scoring_part_of_the_vocabulary_is_searched_as_one_with_minus_infinity_elsewhere(
        table, batch, alpha, beam_size, others):
    """Columns are mapped to target ids: the same hypotheses as the full vocabulary with every id
    outside the part at -inf, EOS forced at the max length included, and no id outside ever produced."""
    tokens = sorted(others | {EOS_ID})
    src, src_lengths, max_lengths = search_inputs(batch)
    for search in (
        lambda model: greedy_search(model, src, src_lengths, max_lengths),
        lambda model: beam_search(model, src, src_lengths, max_lengths, beam_size, beam_size, alpha),
    ):
        part = search(PartOfTheVocabulary(TableModel(table), tokens))
        full = search(TableModel(only(table, tokens)))
        for found_part, found_full in zip(part, full):
            assert [(h.tokens, h.score, h.log_prob) for h in found_part] == [
                (h.tokens, h.score, h.log_prob) for h in found_full]
            assert all(np.array_equal(a.attention, b.attention) for a, b in zip(found_part, found_full))
    samples = sample_search(PartOfTheVocabulary(TableModel(table), tokens), src, src_lengths, max_lengths, n_samples=3,
                            generator=torch.Generator().manual_seed(0))
    assert {token for found in samples for h in found for token in h.tokens} <= set(tokens)


def test_a_model_whose_output_tokens_lack_eos_is_refused():
    src, src_lengths = sources([3])
    with pytest.raises(ValueError, match="</s>"):
        greedy_search(PartOfTheVocabulary(TableModel(BEAM_BEATS_GREEDY), [A, B]), src, src_lengths, torch.tensor([4]))


# --- the real model ---------------------------------------------------------------------------------


def test_search_runs_on_the_real_model():
    from attnmt.config import ModelConfig
    from attnmt.model import Seq2Seq

    torch.manual_seed(0)
    config = ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=10, dropout=0.0)
    model = Seq2Seq.from_config(config, src_vocab_size=20, trg_vocab_size=15).eval()
    src, src_lengths = sources([6, 3, 4], first_key=4)
    max_lengths = torch.tensor([7, 4, 0])
    greedy = greedy_search(model, src, src_lengths, max_lengths)
    assert [len(g.tokens) <= limit for [g], limit in zip(greedy, max_lengths.tolist())] == [True] * 3
    beam_one = beam_search(model, src, src_lengths, max_lengths, beam_size=1, length_penalty=0.0)
    assert [[h.tokens for h in n_best] for n_best in beam_one] == [[g.tokens] for [g] in greedy]
    beam = beam_search(model, src, src_lengths, max_lengths, beam_size=4, n_best=3)
    for sentence, (found, [g]) in enumerate(zip(beam, greedy)):
        assert len(found) == 3 or max_lengths[sentence] == 0
        assert found[0].score >= g.log_prob / gnmt_length_penalty(len(g.tokens) + 1, 1.0) - 1e-5
        for h in found:
            assert h.attention.shape == (len(h.tokens) + 1, int(src_lengths[sentence]))
            np.testing.assert_allclose(h.attention.sum(1), np.ones(len(h.tokens) + 1), rtol=1e-6)


# --- sampling ---------------------------------------------------------------------------------------

# One step decides the sample: the first token from a fixed distribution, then EOS for certain.
FIRST_TOKEN = {A: 0.5, B: 0.3, C: 0.15, EOS_ID: 0.05}


def one_step_table(key: int, prefix: tuple[int, ...]) -> list[float]:
    if not prefix:
        return [math.log(FIRST_TOKEN.get(token, 0.0)) if FIRST_TOKEN.get(token) else -math.inf
                for token in range(VOCAB)]
    return [0.0 if token == EOS_ID else -math.inf for token in range(VOCAB)]


def draw(n_samples: int, seed: int, sentences: int = 1, **options) -> list[list[Hypothesis]]:
    src = torch.tensor([[A, EOS_ID]] * sentences)
    lengths = torch.full((sentences,), 2)
    generator = torch.Generator().manual_seed(seed)
    return sample_search(TableModel(one_step_table), src, lengths, torch.full((sentences,), 5), n_samples,
                         generator=generator, **options)


def first_tokens(found: list[list[Hypothesis]]) -> list[int]:
    return [h.tokens[0] if h.tokens else EOS_ID for samples in found for h in samples]


def test_sampling_with_a_seed_gives_the_same_samples_and_another_seed_others():
    assert first_tokens(draw(200, seed=7)) == first_tokens(draw(200, seed=7))
    assert first_tokens(draw(200, seed=7)) != first_tokens(draw(200, seed=8))
    found = draw(3, seed=7, sentences=4)
    assert [len(samples) for samples in found] == [3, 3, 3, 3]
    for samples in found:
        for h in samples:  # each scored by the model's own log-probability of what was drawn
            expected = math.log(FIRST_TOKEN[h.tokens[0]]) if h.tokens else math.log(FIRST_TOKEN[EOS_ID])
            assert h.log_prob == pytest.approx(expected, abs=1e-6) and h.score == h.log_prob


def test_sampled_frequencies_match_the_distribution_by_a_chi_square_test():
    """20,000 samples; with 3 degrees of freedom the 99.9 % point of chi-square is 16.27."""
    counts = np.bincount(first_tokens(draw(20_000, seed=11)), minlength=VOCAB)
    expected = {token: 20_000 * p for token, p in FIRST_TOKEN.items()}
    chi_square = sum((counts[token] - e) ** 2 / e for token, e in expected.items())
    assert chi_square < 16.27, (counts, chi_square)
    assert counts.sum() == 20_000 and all(counts[t] == 0 for t in range(VOCAB) if t not in FIRST_TOKEN)


def test_temperature_sharpens_and_flattens():
    cold = np.bincount(first_tokens(draw(5_000, seed=3, temperature=0.25)), minlength=VOCAB)
    hot = np.bincount(first_tokens(draw(5_000, seed=3, temperature=4.0)), minlength=VOCAB)
    # p ** (1 / T) normalised: A has 0.88 of the mass at T = 0.25, 0.31 at T = 4 (0.5 at T = 1)
    assert cold[A] > 0.85 * 5_000 and hot[A] < 0.4 * 5_000
    assert hot[EOS_ID] > cold[EOS_ID]


@settings(max_examples=30, deadline=None)
@given(top_k=st.integers(1, 4), seed=st.integers(0, 1000), temperature=st.floats(0.2, 5.0))
def test_top_k_never_emits_a_token_outside_the_k_most_probable(top_k, seed, temperature):
    allowed = sorted(FIRST_TOKEN, key=lambda token: -FIRST_TOKEN[token])[:top_k]
    assert set(first_tokens(draw(300, seed=seed, top_k=top_k, temperature=temperature))) <= set(allowed)


def test_top_p_keeps_the_fewest_most_probable_tokens_holding_p():
    assert set(first_tokens(draw(2_000, seed=5, top_p=0.75))) == {A, B}  # 0.5 + 0.3 reach 0.75
    assert set(first_tokens(draw(2_000, seed=5, top_p=0.5))) == {A}
    assert set(first_tokens(draw(2_000, seed=5, top_p=1.0))) == set(FIRST_TOKEN)


def test_sample_tokens_rejects_settings_that_mean_nothing():
    for options in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            draw(1, seed=0, **options)


# --- the coverage penalty ---------------------------------------------------------------------------


def two_way_table(key: int, prefix: tuple[int, ...]) -> list[float]:
    """A or B first (A more probable), then the end; a long source for the attention to cover."""
    table = [-math.inf] * VOCAB
    if not prefix:
        table[A], table[B], table[C] = math.log(0.5), math.log(0.3), math.log(0.2)
    else:
        table[EOS_ID] = 0.0
    return table


def test_the_coverage_penalty_ranks_finished_hypotheses_exactly_as_the_gnmt_formula_says():
    src = torch.tensor([[A, B, C, A, B, EOS_ID]])
    lengths, limits = torch.tensor([6]), torch.tensor([5])
    plain = beam_search(TableModel(two_way_table), src, lengths, limits, beam_size=3, n_best=3, length_penalty=0.0)
    zero = beam_search(TableModel(two_way_table), src, lengths, limits, beam_size=3, n_best=3, length_penalty=0.0,
                       coverage_penalty=0.0)  # beta = 0 is the plain search
    assert [(h.tokens, h.score, h.log_prob) for h in zero[0]] == [(h.tokens, h.score, h.log_prob) for h in plain[0]]
    assert all(np.array_equal(a.attention, b.attention) for a, b in zip(zero[0], plain[0]))
    for beta in (0.2, 1.0, 5.0):
        found = beam_search(TableModel(two_way_table), src, lengths, limits, beam_size=3, n_best=3,
                            length_penalty=0.0, coverage_penalty=beta)[0]
        assert sorted(h.tokens for h in found) == sorted(h.tokens for h in plain[0])  # the same hypotheses ...
        for h in found:
            coverage = h.attention[:, :-1].sum(axis=0)  # (5,) source tokens without </s>
            expected = h.log_prob + beta * sum(math.log(min(float(mass), 1.0)) for mass in coverage)
            assert h.score == pytest.approx(expected, abs=1e-5)  # ... scored as the formula says
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)  # ranked by it
    # here the most probable hypothesis (A) covers the source worst: a large beta ranks it last
    assert [h.tokens for h in plain[0]] == [[A], [B], [C]] and [h.tokens for h in found] == [[B], [C], [A]]


def test_the_coverage_penalty_needs_attention():
    src, lengths, limits = torch.tensor([[A, EOS_ID]]), torch.tensor([2]), torch.tensor([5])

    class NoAttention(TableModel):
        has_attention = False

    with pytest.raises(ValueError, match="coverage penalty needs attention"):
        beam_search(NoAttention(two_way_table, with_attention=False), src, lengths, limits, 3, coverage_penalty=1.0)


@dataclass(frozen=True)
class NumpyReordered:
    """A TableModel memory or state behind numpy indices."""

    inner: TableMemory | TableState

    def reorder(self, indices: np.ndarray) -> "NumpyReordered":
        assert isinstance(indices, np.ndarray)
        return NumpyReordered(self.inner.reorder(torch.from_numpy(indices)))

    def concat(self, other: "NumpyReordered") -> "NumpyReordered":
        return NumpyReordered(self.inner.concat(other.inner))


class NumpyTableModel:
    """The same table on numpy arrays, as a model exported to ONNX is searched (attnmt.export)."""

    def __init__(self, table: Table) -> None:
        self.model = TableModel(table)

    def encode(self, src: np.ndarray, src_lengths: np.ndarray) -> tuple[NumpyReordered, NumpyReordered]:
        memory, state = self.model.encode(torch.from_numpy(src), torch.from_numpy(src_lengths))
        return NumpyReordered(memory), NumpyReordered(state)

    def step(self, prev_tokens: np.ndarray, state: NumpyReordered, memory: NumpyReordered):
        assert isinstance(prev_tokens, np.ndarray) and prev_tokens.dtype == np.int64
        log_probs, state, attention = self.model.step(torch.from_numpy(prev_tokens), state.inner, memory.inner)
        return log_probs.float().numpy(), NumpyReordered(state), None if attention is None else attention.numpy()


@settings(max_examples=80, deadline=None)
@given(table=random_tables, batch=batches, alpha=alphas, beam_size=st.integers(1, 4))
def test_search_on_numpy_arrays_keeps_every_promise_it_keeps_on_tensors(table, batch, alpha, beam_size):
    """Greedy and beam search on numpy arrays: greedy takes torch's path (both argmaxes take the first of
    equal values, which the table's whole-number logits make common), beam never scores below greedy,
    every hypothesis is a real path scored as documented, its attention the model's."""
    src, src_lengths, max_lengths = (x.numpy() for x in search_inputs(batch))
    greedy = greedy_search(NumpyTableModel(table), src, src_lengths, max_lengths)
    torch_greedy = greedy_search(TableModel(table), *(torch.from_numpy(x) for x in (src, src_lengths, max_lengths)))
    beam = beam_search(NumpyTableModel(table), src, src_lengths, max_lengths, beam_size, beam_size, alpha)
    for sentence, ([g], [g_torch], found) in enumerate(zip(greedy, torch_greedy, beam)):
        assert g.tokens == g_torch.tokens and g.log_prob == pytest.approx(g_torch.log_prob, abs=1e-5)
        assert found[0].score >= g.log_prob / gnmt_length_penalty(len(g.tokens) + 1, alpha) - 1e-6
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
        for h in found + [g]:
            assert len(h.tokens) <= batch[sentence][1] and EOS_ID not in h.tokens
            assert h.log_prob == pytest.approx(table.path_log_prob(10 + sentence, h.tokens), abs=1e-5)
            assert h.attention.dtype == np.float32
            np.testing.assert_allclose(h.attention, expected_attention(torch.from_numpy(src[sentence]), h.tokens).numpy())
        if beam_size == 1:
            assert found[0].tokens == g.tokens
