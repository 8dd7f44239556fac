"""The whole encoder–decoder: what training calls (``forward``) and what search calls
(``encode`` and ``step``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnmt.config import ModelConfig
from attnmt.data.vocab import PAD_ID
from attnmt.model.decoder import Decoder, DecoderState
from attnmt.model.encoder import Encoder, EncoderMemory


class Seq2Seq(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder, output_layer: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.output_layer = output_layer  # attentional vector -> target vocabulary logits
        self._step_weight: tuple[tuple[int, int], Tensor] | None = None  # (weight's pointer and version, its transpose)

    @classmethod
    def from_config(cls, config: ModelConfig, src_vocab_size: int, trg_vocab_size: int) -> "Seq2Seq":
        src_embedding = nn.Embedding(src_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        if config.share_embeddings:
            if src_vocab_size != trg_vocab_size:
                raise ValueError(
                    f"share_embeddings needs one vocabulary, got sizes {src_vocab_size} and {trg_vocab_size}"
                )
            trg_embedding = src_embedding
        else:
            trg_embedding = nn.Embedding(trg_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        encoder = Encoder(src_embedding, config.rnn, config.encoder_hidden_size, config.encoder_layers, config.dropout)
        # Tying the output layer to the target embeddings needs attentional vectors of embedding size.
        attentional_size = config.embedding_size if config.tie_output else config.hidden_size
        decoder = Decoder(
            trg_embedding,
            config.rnn,
            config.hidden_size,
            config.decoder_layers,
            config.dropout,
            config.attention,
            encoder.output_size,
            attentional_size,
            config.input_feeding,
        )
        output_layer = nn.Linear(attentional_size, trg_vocab_size, bias=config.output_bias)
        model = cls(encoder, decoder, output_layer)
        model.reset_parameters()
        if config.tie_output:
            output_layer.weight = trg_embedding.weight
        return model

    @property
    def has_attention(self) -> bool:
        """False for ``attention: none``, the plain encoder–decoder: it returns no attention weights."""
        return self.decoder.attention.kind != "none"

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices and zero biases; embeddings N(0, 1/embedding_size) so that their
        scale does not shrink with the vocabulary size (Xavier would); RNNs keep PyTorch's init."""
        embeddings = {id(self.encoder.embedding.weight), id(self.decoder.embedding.weight)}
        for name, parameter in self.named_parameters():
            if ".rnn." in name:
                continue
            if id(parameter) in embeddings:
                nn.init.normal_(parameter, std=parameter.size(1) ** -0.5)
            elif parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
            else:
                nn.init.zeros_(parameter)
        with torch.no_grad():
            self.encoder.embedding.weight[PAD_ID].zero_()
            self.decoder.embedding.weight[PAD_ID].zero_()

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EncoderMemory, DecoderState]:
        """src: (batch, src_len) ids ending in EOS, padded; src_lengths: (batch,).
        Returns the memory to attend to and the decoder's first state."""
        states, final, final_cell = self.encoder(src, src_lengths)  # states: (batch, src_len, 2*enc_hidden)
        mask = src != PAD_ID  # (batch, src_len)
        keys = self.decoder.attention.project_keys(states)  # (batch, src_len, hidden)
        memory = EncoderMemory(states, keys, mask, final)
        return memory, self.decoder.initial_state(final, final_cell)

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: EncoderMemory) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step for search.

        prev_tokens: (batch,) -> log_probs (batch, trg_vocab), new state, attention (batch, src_len)
        (None for a model without attention)
        """
        attentional, state, weights = self.attentional_step(prev_tokens, state, memory)
        logits = self._step_logits(attentional).float()  # (batch, trg_vocab); fp32 under autocast too
        log_probs = torch.log_softmax(logits, dim=-1)  # (batch, trg_vocab)
        return log_probs, state, weights

    def train(self, mode: bool = True) -> "Seq2Seq":
        """nn.Module's, and the step's copy of the output weight is dropped: training (validating in eval
        mode between steps) may change the weight without its version counter, e.g. through ``.data``."""
        self._step_weight = None
        return super().train(mode)

    def _step_logits(self, attentional: Tensor) -> Tensor:
        """The output layer for a search step: a few dozen rows against the whole vocabulary. On a CPU,
        multiplying by the weight stored (attentional, vocab) is about a quarter faster than
        ``nn.Linear``'s (vocab, attentional) (docs/performance.md), so the step keeps that transpose,
        made again whenever the weight's storage or version changes (loading) or the model switches
        between training and evaluation (``train``); only without autograd, as search runs. attentional: (batch, attentional_size) -> (batch, trg_vocab)."""
        layer = self.output_layer
        if (type(layer) is not nn.Linear or attentional.device.type != "cpu" or torch.is_grad_enabled()
                or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return layer(attentional)
        key = (layer.weight.data_ptr(), layer.weight._version)
        if self._step_weight is None or self._step_weight[0] != key:
            self._step_weight = key, layer.weight.detach().t().contiguous()  # (attentional, trg_vocab)
        weight = self._step_weight[1]
        return attentional @ weight if layer.bias is None else torch.addmm(layer.bias, attentional, weight)

    def attentional_step(self, prev_tokens: Tensor, state: DecoderState, memory: EncoderMemory,
                         ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Steps 1-5 of DESIGN.md without the output layer: prev_tokens (batch,) -> the attentional
        vectors (batch, attentional_size), the new state and the attention (batch, src_len) or None."""
        embedded = self.decoder.embedding(prev_tokens)  # (batch, emb)
        return self.decoder.step(embedded, state, memory)

    def forward(
        self, src: Tensor, src_lengths: Tensor, trg_input: Tensor, trg_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits for training (and forced decoding, for alignments).

        src: (batch, src_len); trg_input: (batch, trg_len) BOS + reference
        trg_mask: optional (batch, trg_len) bool, True where a logit is wanted (the real target tokens)
        returns logits (batch, trg_len, trg_vocab), or (n_true, trg_vocab) for the positions of
        ``trg_mask`` in row-major order, and attention (batch, trg_len, src_len), or None for a model
        without attention
        """
        memory, state = self.encode(src, src_lengths)
        attentional, weights = self.decoder(trg_input, state, memory)  # (batch, trg_len, attentional_size)
        if trg_mask is not None:  # the output layer is a third of the work: skip the padding
            attentional = attentional[trg_mask]  # (n_true, attentional_size)
        logits = self.output_layer(self.decoder.dropout(attentional))  # (batch, trg_len, trg_vocab) or (n_true, trg_vocab)
        return logits, weights

    def num_parameters(self) -> int:
        """Trainable numbers, a tied matrix counted once."""
        return sum(parameter.numel() for parameter in self.parameters())

    def multiply_adds(self, src_len: float = 15.0) -> tuple[float, float]:
        """Multiply-adds of one forward pass: (per source token, per target token).

        Per source token: the bidirectional encoder RNN and the attention keys; per target token (in
        search: per live hypothesis and step): the decoder RNN, the attention scores and context
        (``src_len`` each), the attentional layer and the output layer. Embedding look-ups, the bridge
        and element-wise work are left out. Read from the module shapes, so call it on a float model
        (int8 packs its weights away).
        """
        encoder_rnn, decoder_rnn = self.encoder.rnn, self.decoder.rnn
        gates = 4 if isinstance(encoder_rnn, nn.LSTM) else 3

        def rnn_macs(rnn: nn.RNNBase) -> int:
            directions = 2 if rnn.bidirectional else 1
            return directions * sum(gates * rnn.hidden_size * (getattr(rnn, f"weight_ih_l{layer}").size(1) + rnn.hidden_size)
                                    for layer in range(rnn.num_layers))

        attention = self.decoder.attention
        keys = attention.key_projection.weight.numel() if hasattr(attention, "key_projection") else 0
        scores_and_context = src_len * (decoder_rnn.hidden_size + self.encoder.output_size) if self.has_attention else 0
        per_source = rnn_macs(encoder_rnn) + keys
        per_target = (rnn_macs(decoder_rnn) + scores_and_context + self.decoder.attentional_layer.weight.numel()
                      + self.output_layer.weight.numel())
        return float(per_source), float(per_target)

    def train_flops_per_target_token(self, src_per_trg: float, src_len: float = 15.0) -> float:
        """FLOPs of a training step per target token: the forward multiply-adds (``multiply_adds``, at
        a typical sentence of ``src_len`` tokens) times 2 (FLOPs) times 3 (forward, and backward
        twice: gradients of inputs and of weights). ``src_per_trg``: source tokens per target token."""
        per_source, per_target = self.multiply_adds(src_len)
        return 6.0 * (per_source * src_per_trg + per_target)
