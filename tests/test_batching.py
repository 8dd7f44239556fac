"""attnmt.data.batching: tensors with EOS/BOS/PAD in place, token budgets, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.data.batching import collate, sentence_batches, token_batches
from attnmt.data.corpus import read_parallel
from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID

P, B, E = PAD_ID, BOS_ID, EOS_ID


def test_collate_places_eos_bos_and_padding() -> None:
    batch = collate([[10, 11, 12], [20], []], [[30], [40, 41, 42, 43], [50, 51]], indices=[7, 3, 5])
    assert batch.src.tolist() == [[10, 11, 12, E], [20, E, P, P], [E, P, P, P]]
    assert batch.src_lengths.tolist() == [4, 2, 1]
    assert batch.trg_input.tolist() == [[B, 30, P, P, P], [B, 40, 41, 42, 43], [B, 50, 51, P, P]]
    assert batch.trg_output.tolist() == [[30, E, P, P, P], [40, 41, 42, 43, E], [50, 51, E, P, P]]
    assert batch.n_trg_tokens == 2 + 5 + 3 == int((batch.trg_output != PAD_ID).sum())
    assert batch.indices == [7, 3, 5] and len(batch) == 3
    for tensor in (batch.src, batch.src_lengths, batch.trg_input, batch.trg_output):
        assert tensor.dtype == torch.long


def test_collate_without_target() -> None:
    batch = collate([[4, 5], [6]], None, indices=[0, 1])
    assert batch.trg_input is None and batch.trg_output is None and batch.n_trg_tokens == 0
    moved = batch.to("cpu")
    assert torch.equal(moved.src, batch.src) and moved.trg_output is None and moved.indices == [0, 1]


def test_collate_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        collate([[4]], [[5], [6]], indices=[0])
    with pytest.raises(ValueError):
        collate([[4], [5]], None, indices=[0])
    with pytest.raises(ValueError):
        collate([], None, indices=[])


def batch_cost(batch: list[int], src_lengths: list[int], trg_lengths: list[int]) -> int:
    longest = max(max(src_lengths[i], trg_lengths[i]) + 1 for i in batch)  # + EOS / BOS
    return len(batch) * longest


pairs = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80)), max_size=300)


@settings(max_examples=80, deadline=None)
@given(
    pairs=pairs,
    max_tokens=st.integers(1, 3000),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 50),
)
def test_token_batches_invariants(
    pairs: list[tuple[int, int]], max_tokens: int, shuffle: bool, seed: int, epoch: int
) -> None:
    src_lengths = [src for src, _ in pairs]
    trg_lengths = [trg for _, trg in pairs]
    batches = as_lists(token_batches(src_lengths, trg_lengths, max_tokens, shuffle, seed, epoch))
    assert sorted(i for batch in batches for i in batch) == list(range(len(pairs)))  # each exactly once
    for batch in batches:
        assert batch and (len(batch) == 1 or batch_cost(batch, src_lengths, trg_lengths) <= max_tokens)
    assert as_lists(token_batches(src_lengths, trg_lengths, max_tokens, shuffle, seed, epoch)) == batches
    assert batches == reference_batches(src_lengths, trg_lengths, max_tokens, shuffle, seed, epoch)


def as_lists(batches) -> list[list[int]]:
    return [batch.tolist() for batch in batches]


def reference_batches(src_lengths, trg_lengths, max_tokens, shuffle, seed, epoch, pool_factor=100):
    """token_batches as first written, one example at a time in Python: the numpy cut must give
    exactly these batches (training resumed from an older checkpoint takes the same steps)."""
    src, trg = np.asarray(src_lengths) + 1, np.asarray(trg_lengths) + 1
    if len(src) == 0:
        return []
    longest = np.maximum(src, trg)
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    order = rng.permutation(len(src)) if rng is not None else np.arange(len(src))
    pool_size = max(1, int(pool_factor * max_tokens / float(longest.mean()))) if rng is not None else len(order)
    batches = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        pool = pool[np.lexsort((trg[pool], src[pool], longest[pool]))].tolist()
        batch, batch_longest = [], 0
        for index in pool:
            new_longest = max(batch_longest, int(longest[index]))
            if batch and (len(batch) + 1) * new_longest > max_tokens:
                batches.append(batch)
                batch, new_longest = [], int(longest[index])
            batch.append(index)
            batch_longest = new_longest
        if batch:
            batches.append(batch)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def multi30k_like_lengths(count: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Subword lengths shaped like Multi30k en-de: mean about 15, long right tail, sides correlated."""
    rng = np.random.default_rng(seed)
    src = np.clip(np.round(rng.gamma(6.0, 2.4, count)), 1, 60)
    trg = np.clip(np.round(src * 1.05 + rng.normal(0.0, 2.5, count)), 1, 65)
    return src.astype(int).tolist(), trg.astype(int).tolist()


def test_token_batches_differ_across_epochs_and_seeds() -> None:
    src_lengths, trg_lengths = multi30k_like_lengths(3000)
    epoch0 = as_lists(token_batches(src_lengths, trg_lengths, 1000, True, seed=1, epoch=0))
    epoch1 = as_lists(token_batches(src_lengths, trg_lengths, 1000, True, seed=1, epoch=1))
    other_seed = as_lists(token_batches(src_lengths, trg_lengths, 1000, True, seed=2, epoch=0))
    assert epoch0 != epoch1 and epoch0 != other_seed
    assert {tuple(b) for b in epoch0} != {tuple(b) for b in epoch1}  # different batches, not just order


def test_token_batches_without_shuffle_are_sorted_and_fixed() -> None:
    src_lengths, trg_lengths = multi30k_like_lengths(2000)
    batches = as_lists(token_batches(src_lengths, trg_lengths, 1500, False, seed=1, epoch=0))
    assert batches == as_lists(token_batches(src_lengths, trg_lengths, 1500, False, seed=9, epoch=4))
    longest = [max(max(src_lengths[i], trg_lengths[i]) for i in batch) for batch in batches]
    assert longest == sorted(longest)


def assert_little_padding(src_lengths: list[int], trg_lengths: list[int], max_tokens: int) -> None:
    batches = token_batches(src_lengths, trg_lengths, max_tokens, True, seed=3, epoch=0)
    for lengths in (src_lengths, trg_lengths):
        real = sum(length + 1 for length in lengths)
        padded = sum(len(batch) * max(lengths[i] + 1 for i in batch) for batch in batches)
        assert 1 - real / padded < 0.10  # about 0.05 on both sides
    used = sum(batch_cost(batch, src_lengths, trg_lengths) for batch in batches)
    assert used / (len(batches) * max_tokens) > 0.9  # batches are nearly full (about 0.98)


@pytest.mark.parametrize("max_tokens", [500, 2000, 4000])
def test_token_batches_waste_little_padding(max_tokens: int) -> None:
    assert_little_padding(*multi30k_like_lengths(29000), max_tokens)


def test_token_batches_on_multi30k(data_dir: Path) -> None:
    corpus = read_parallel(str(data_dir / "multi30k" / "train"), "en", "de")
    assert_little_padding([len(s.split()) for s in corpus.src], [len(s.split()) for s in corpus.trg], 2000)


def test_token_batches_with_overlong_example() -> None:
    assert as_lists(token_batches([100, 2, 3], [1, 2, 3], max_tokens=50, shuffle=False)) == [[1, 2], [0]]
    assert token_batches([], [], max_tokens=50, shuffle=True) == []


@given(lengths=st.lists(st.integers(0, 100), max_size=200), max_sentences=st.integers(1, 64))
def test_sentence_batches(lengths: list[int], max_sentences: int) -> None:
    batches = sentence_batches(lengths, max_sentences)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(0 < len(batch) <= max_sentences for batch in batches)
    order = [lengths[i] for batch in batches for i in batch]
    assert order == sorted(order, reverse=True)
