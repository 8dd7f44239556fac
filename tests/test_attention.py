"""Attention scores against hand-computed examples, masking, and the invariants users rely on."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnmt.model.attention import Attention, FinalStateContext, make_attention
from attnmt.model.encoder import EncoderMemory


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def memory_of(attention, states: torch.Tensor, mask: torch.Tensor) -> EncoderMemory:
    """The encoder memory of states (batch, src_len, size); its summary is the last real state."""
    summary = states[torch.arange(states.size(0)), mask.sum(1) - 1]  # (batch, size)
    return EncoderMemory(states, attention.project_keys(states), mask, summary)


def run(attention, query, memory, mask=None):
    memory = torch.tensor([memory], dtype=torch.float)  # (1, src_len, memory_size)
    mask = torch.ones(memory.shape[:2], dtype=torch.bool) if mask is None else torch.tensor([mask])
    context, weights = attention(torch.tensor([[query]], dtype=torch.float), memory_of(attention, memory, mask))
    return context[0, 0], weights[0, 0]


def test_dot_score_by_hand():
    attention = Attention("dot", 2, 2)
    memory = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    context, weights = run(attention, [1.0, 2.0], memory)
    expected = softmax([1.0, 2.0, 3.0])  # h·h̄ₛ
    assert weights.tolist() == pytest.approx(expected, abs=1e-6)
    expected_context = [expected[0] + expected[2], expected[1] + expected[2]]
    assert context.tolist() == pytest.approx(expected_context, abs=1e-6)


def test_general_score_by_hand():
    attention = Attention("general", 2, 3)
    with torch.no_grad():
        attention.key_projection.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))  # W: 3 -> 2
    memory = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    _, weights = run(attention, [0.5, 1.0], memory)
    # W h̄ = [1,0], [0,2], [1,0]; h·W h̄ = 0.5, 2.0, 0.5
    assert weights.tolist() == pytest.approx(softmax([0.5, 2.0, 0.5]), abs=1e-6)


def test_additive_score_by_hand():
    attention = Attention("additive", 2, 2)
    with torch.no_grad():
        attention.query_projection.weight.copy_(torch.eye(2))
        attention.query_projection.bias.zero_()
        attention.key_projection.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        attention.energy.weight.copy_(torch.tensor([[1.0, 0.5]]))
    memory = [[1.0, 1.0], [0.0, 2.0]]
    query = [0.1, 0.2]
    _, weights = run(attention, query, memory)
    # vᵀ tanh(W₁h + W₂h̄): W₂h̄ = [2,-1] and [0,-2]
    scores = [math.tanh(0.1 + 2.0) + 0.5 * math.tanh(0.2 - 1.0), math.tanh(0.1) + 0.5 * math.tanh(0.2 - 2.0)]
    assert weights.tolist() == pytest.approx(softmax(scores), abs=1e-6)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_padding_gets_exactly_zero_weight_and_does_not_change_the_context(kind):
    torch.manual_seed(0)
    attention = Attention(kind, 4, 4)
    memory = torch.randn(1, 3, 4)
    padded = torch.cat([memory, torch.randn(1, 2, 4) * 100], dim=1)  # junk in the padding
    query = torch.randn(1, 1, 4)
    context, weights = attention(query, memory_of(attention, memory, torch.ones(1, 3, dtype=torch.bool)))
    mask = torch.tensor([[True, True, True, False, False]])
    padded_context, padded_weights = attention(query, memory_of(attention, padded, mask))
    assert padded_weights[0, 0, 3:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(padded_weights[..., :3], weights)
    torch.testing.assert_close(padded_context, context)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["dot", "general", "additive"]),
    batch=st.integers(1, 4),
    trg_len=st.integers(1, 5),
    src_len=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_weights_are_a_distribution_over_real_tokens(kind, batch, trg_len, src_len, seed, data):
    torch.manual_seed(seed)
    attention = Attention(kind, 6, 6)
    lengths = data.draw(st.lists(st.integers(1, src_len), min_size=batch, max_size=batch))
    mask = torch.arange(src_len)[None, :] < torch.tensor(lengths)[:, None]  # (batch, src_len)
    memory = torch.randn(batch, src_len, 6) * 5
    context, weights = attention(torch.randn(batch, trg_len, 6) * 5, memory_of(attention, memory, mask))
    assert weights.shape == (batch, trg_len, src_len)
    assert context.shape == (batch, trg_len, 6)
    assert torch.all(weights >= 0) and torch.all(weights <= 1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, trg_len))
    assert torch.all(weights.masked_select(~mask[:, None, :].expand_as(weights)) == 0)


def test_dot_attention_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="dot attention needs equal"):
        Attention("dot", 4, 8)


def test_without_attention_every_context_is_the_final_state_and_there_are_no_weights():
    attention = make_attention("none", 4, 6)
    assert isinstance(attention, FinalStateContext) and not list(attention.parameters())
    states = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    memory = memory_of(attention, states, mask)
    context, weights = attention(torch.randn(2, 3, 4), memory)
    assert weights is None
    assert context.shape == (2, 3, 6)
    torch.testing.assert_close(context, memory.summary[:, None, :].expand(2, 3, 6))
    assert memory.keys.shape == (2, 5, 0)  # nothing is projected


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError, match="dot, general, additive or none"):
        make_attention("concat", 4, 4)
