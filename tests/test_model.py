"""The encoder–decoder: shapes, padding invariance, and training's forward pass agreeing with the
step function that search uses."""

import numpy as np
import pytest
import torch

from attnmt.config import ModelConfig
from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID
from attnmt.model import Seq2Seq
from attnmt.model.encoder import EncoderMemory

VOCAB = 30


def tiny_model(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    settings = dict(embedding_size=8, encoder_hidden_size=6, hidden_size=10, dropout=0.0, tie_output=False)
    settings.update(overrides)
    return Seq2Seq.from_config(ModelConfig(**settings), VOCAB, VOCAB + 5).eval()


def padded(sentences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [s + [EOS_ID] for s in sentences]
    width = max(map(len, rows))
    src = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])
    return src, torch.tensor([len(r) for r in rows])


VARIANTS = [
    dict(rnn=rnn, attention=attention, input_feeding=feeding)
    for rnn in ("gru", "lstm")
    for attention in ("dot", "general", "additive", "none")
    for feeding in (True, False)
]


def _fix_dot(variant: dict) -> dict:
    return {**variant, "hidden_size": 12} if variant["attention"] == "dot" else variant


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_forward_shapes_and_attention_rows(variant):
    model = tiny_model(**_fix_dot(variant))
    src, lengths = padded([[5, 6, 7, 8], [9, 10]])
    trg_input = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, PAD_ID]])
    logits, attention = model(src, lengths, trg_input)
    assert logits.shape == (2, 3, VOCAB + 5)
    if variant["attention"] == "none":
        assert attention is None and not model.has_attention
        return
    assert attention.shape == (2, 3, 5)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3))
    assert torch.all(attention[1, :, 3:] == 0)  # the second sentence has 3 real tokens incl. EOS


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_padding_never_changes_a_result(rnn):
    model = tiny_model(rnn=rnn)
    alone_src, alone_lengths = padded([[5, 6]])
    batch_src, batch_lengths = padded([[5, 6], [7, 8, 9, 10, 11, 12]])
    trg_input = torch.tensor([[BOS_ID, 4, 5]])
    alone_logits, alone_attention = model(alone_src, alone_lengths, trg_input)
    batch_logits, batch_attention = model(batch_src, batch_lengths, trg_input.repeat(2, 1))
    torch.testing.assert_close(batch_logits[0], alone_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_attention[0, :, :3], alone_attention[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_teacher_forcing_equals_stepping(variant):
    """What training optimises is what search runs: step-by-step decoding reproduces forward()."""
    model = tiny_model(**_fix_dot(variant))
    src, lengths = padded([[5, 6, 7], [8, 9, 10, 11, 12]])
    trg_input = torch.tensor([[BOS_ID, 4, 5, 6], [BOS_ID, 7, 8, 9]])
    logits, attention = model(src, lengths, trg_input)
    memory, state = model.encode(src, lengths)
    for t in range(trg_input.size(1)):
        log_probs, state, weights = model.step(trg_input[:, t], state, memory)
        torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, t], -1), atol=1e-5, rtol=1e-5)
        if attention is None:
            assert weights is None
        else:
            torch.testing.assert_close(weights, attention[:, t], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_without_attention_the_decoder_sees_the_source_only_through_the_final_state(rnn, input_feeding):
    """The plain encoder–decoder: replacing every encoder state but the summary changes nothing."""
    model = tiny_model(rnn=rnn, attention="none", input_feeding=input_feeding)
    src, lengths = padded([[5, 6, 7], [8, 9, 10, 11, 12]])
    memory, state = model.encode(src, lengths)
    scrambled = EncoderMemory(torch.randn_like(memory.states) * 10, memory.keys, memory.mask, memory.summary)
    trg_input = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 7, 8]])
    attentional, weights = model.decoder(trg_input, state, memory)
    scrambled_attentional, _ = model.decoder(trg_input, state, scrambled)
    assert weights is None
    torch.testing.assert_close(scrambled_attentional, attentional)
    other_summary = EncoderMemory(memory.states, memory.keys, memory.mask, torch.randn_like(memory.summary))
    assert not torch.allclose(model.decoder(trg_input, state, other_summary)[0], attentional)


def test_no_attention_has_the_same_layers_but_the_attention_weights():
    """The fair comparison: only the attention's own parameters (W of 'general') differ."""
    general, none = tiny_model(attention="general"), tiny_model(attention="none")
    general_names = {name for name, _ in general.named_parameters()}
    none_names = {name for name, _ in none.named_parameters()}
    assert general_names - none_names == {"decoder.attention.key_projection.weight"}
    assert none_names < general_names


def test_state_and_memory_reorder_follow_the_indices():
    model = tiny_model(rnn="lstm")
    src, lengths = padded([[5, 6, 7], [8, 9]])
    memory, state = model.encode(src, lengths)
    indices = torch.tensor([1, 1, 0])
    reordered_memory, reordered_state = memory.reorder(indices), state.reorder(indices)
    torch.testing.assert_close(reordered_memory.states[2], memory.states[0])
    torch.testing.assert_close(reordered_state.hidden[:, 0], state.hidden[:, 1])
    torch.testing.assert_close(reordered_state.cell[:, 1], state.cell[:, 1])
    assert reordered_memory.mask.tolist() == [memory.mask[1].tolist(), memory.mask[1].tolist(), memory.mask[0].tolist()]


def test_tied_output_shares_the_target_embedding():
    model = Seq2Seq.from_config(ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=10, tie_output=True), 20, 25)
    assert model.output_layer.weight is model.decoder.embedding.weight
    assert model.decoder.attentional_size == 8


def test_output_bias_off_leaves_the_output_layer_without_one():
    settings = dict(embedding_size=8, encoder_hidden_size=6, hidden_size=10, tie_output=False)
    with_bias = Seq2Seq.from_config(ModelConfig(**settings), 20, 25)
    without = Seq2Seq.from_config(ModelConfig(**settings, output_bias=False), 20, 25)
    assert without.output_layer.bias is None
    assert with_bias.num_parameters() - without.num_parameters() == 25


def test_shared_embeddings_need_one_vocabulary():
    config = ModelConfig(embedding_size=8, encoder_hidden_size=6, hidden_size=10, share_embeddings=True)
    model = Seq2Seq.from_config(config, 20, 20)
    assert model.encoder.embedding is model.decoder.embedding
    with pytest.raises(ValueError, match="one vocabulary"):
        Seq2Seq.from_config(config, 20, 25)


def test_joey_sized_model_has_the_documented_parameter_count():
    """bi-GRU 512, GRU 512, emb 256, general attention, input feeding, shared 8000 vocab, untied output."""
    config = ModelConfig(embedding_size=256, encoder_hidden_size=512, hidden_size=512, share_embeddings=True,
                         tie_output=False)
    assert 12.0e6 < Seq2Seq.from_config(config, 8000, 8000).num_parameters() < 12.6e6


@pytest.mark.parametrize("variant", [dict(rnn="gru", attention="general", input_feeding=True),
                                     dict(rnn="lstm", attention="additive", input_feeding=False),
                                     dict(rnn="lstm", attention="none", input_feeding=True)],
                         ids=lambda v: "-".join(str(x) for x in v.values()))
def test_searching_two_sentences_at_a_time_translates_as_the_whole_batch(variant):
    """Continuous batching on a real model: waiting sentences join running ones (their decoder states
    concatenated, LSTM cells and input-feeding vectors included) and each sentence gets what the
    whole batch at once gives it."""
    from attnmt.search import beam_search, greedy_search

    model = tiny_model(**variant)
    src, lengths = padded([[5, 6, 7, 8], [9, 10], [11], [12, 13, 14], [6, 6, 6, 6, 6], [7, 8], [9]])
    limits = torch.tensor([3, 9, 5, 1, 7, 0, 4])  # different lengths: sentences end at different steps
    for search in (lambda **w: greedy_search(model, src, lengths, limits, **w),
                   lambda **w: beam_search(model, src, lengths, limits, 3, n_best=2, **w)):
        whole, part = search(), search(width=2)
        for found_whole, found_part in zip(whole, part):
            assert [h.tokens for h in found_part] == [h.tokens for h in found_whole]
            assert [h.score for h in found_part] == pytest.approx([h.score for h in found_whole], abs=1e-5)
            for a, b in zip(found_part, found_whole):
                assert (a.attention is None) == (b.attention is None)
                if a.attention is not None:
                    np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)


def test_the_step_output_layer_follows_the_weights_as_they_train():
    """Search's step multiplies by a transposed copy of the output weight: it gives nn.Linear's logits,
    and a copy made before an optimizer step (training validates between steps) is never used after it."""
    model = tiny_model(output_bias=True)
    src, lengths = padded([[5, 6, 7], [8, 9]])
    memory, state = model.encode(src, lengths)
    tokens = torch.tensor([BOS_ID, BOS_ID])

    def step_and_linear() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            log_probs, _, _ = model.step(tokens, state, memory)
            attentional, _, _ = model.attentional_step(tokens, state, memory)
            return log_probs, torch.log_softmax(model.output_layer(attentional), dim=-1)

    before, expected = step_and_linear()
    torch.testing.assert_close(before, expected, atol=1e-5, rtol=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.output_layer.weight.grad = torch.randn_like(model.output_layer.weight)
    optimizer.step()  # the weight changes in place
    after, expected = step_and_linear()
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(after, before, atol=1e-3)
    # a change the version counter does not see (through .data, as flattened or averaged weights are
    # written), then training and evaluation again as a trainer validates
    model.output_layer.weight.data.add_(torch.randn_like(model.output_layer.weight))
    model.train().eval()
    again, expected = step_and_linear()
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(again, after, atol=1e-3)
