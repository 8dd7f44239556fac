"""The encoder and one decoder step of a trained model as ONNX graphs (``attnmt export --onnx``).

    DIR/
      encoder.onnx   src (batch, src_len) int64, src_lengths (batch,) int64 ->
                     states (batch, src_len, 2*enc_hidden), keys (batch, src_len, hidden),
                     summary (batch, 2*enc_hidden), hidden (layers, batch, hidden)
      step.onnx      prev_tokens (batch,), hidden, [attentional (batch, attentional_size) with input
                     feeding], states, keys, mask (batch, src_len) bool, [summary without attention] ->
                     log_probs (batch, trg_vocab), hidden, [attentional], [attention (batch, src_len)]
      config.yaml, spm.model (or src.spm.model + trg.spm.model): as in the model directory

Batch, source length (and so the attention's width) are dynamic axes. The step is the model's own
``Seq2Seq.step``, traced. The encoder is not the model's ``forward``: its packed sequences do not
survive export (the exported graph ignored the lengths), so ``ExportableEncoder`` runs the same
bidirectional GRU weights without packing: the forward direction over the padded batch (padding
comes after a sentence, so it never reaches the states of its words) and the backward direction over
each sentence reversed within its length; each direction's final state is read at the sentence's
last word. LSTMs keep their final cell state only at the padded end, which this cannot read back:
exporting an LSTM model is refused.

The TorchScript-based exporter (``dynamo=False``) is used: it maps ``nn.GRU`` to ONNX's GRU operator,
where ``torch.export`` cannot trace a GRU over a dynamic length.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from attnmt.data.vocab import PAD_ID
from attnmt.errors import CheckpointError, ConfigError
from attnmt.export.onnx_model import ENCODER_FILE, PARAMETERS_KEY, STEP_FILE
from attnmt.model import Seq2Seq
from attnmt.model.decoder import DecoderState
from attnmt.model.encoder import EncoderMemory
from attnmt.store import atomic_write, copy_model_files, load_model

OPSET = 17


class ExportableEncoder(nn.Module):
    """``Seq2Seq.encode`` without packed sequences (see the module docstring); the same numbers."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        rnn = model.encoder.rnn
        if not isinstance(rnn, nn.GRU):
            raise ConfigError("attnmt export supports GRU models (model.rnn: gru): an LSTM's final cell state "
                              "at each sentence's end cannot be read back without packed sequences")
        self.model = model
        self.directions = nn.ModuleList(
            nn.ModuleList(_one_direction(rnn, layer, suffix) for suffix in ("", "_reverse"))
            for layer in range(rnn.num_layers))

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """src (batch, src_len), src_lengths (batch,) -> states, keys, summary, first decoder hidden."""
        positions = torch.arange(src.size(1), device=src.device).unsqueeze(0)  # (1, src_len)
        lengths = src_lengths.unsqueeze(1)  # (batch, 1)
        real = positions < lengths  # (batch, src_len)
        # reversed[b, t] = x[b, length_b - 1 - t] within the sentence; padding stays where it is
        reverse = torch.where(real, lengths - 1 - positions, positions)  # (batch, src_len), its own inverse
        inputs = self.model.encoder.embedding(src)  # (batch, src_len, emb)
        for forward_rnn, backward_rnn in self.directions:
            forward_states, _ = forward_rnn(inputs)  # (batch, src_len, hidden)
            backward_states, _ = backward_rnn(_gather_time(inputs, reverse))
            backward_states = _gather_time(backward_states, reverse)  # (batch, src_len, hidden)
            inputs = torch.cat([forward_states, backward_states], dim=-1)  # (batch, src_len, 2*hidden)
        states = torch.where(real.unsqueeze(2), inputs, 0.0)  # zero on padding, as pad_packed_sequence gives
        last = _gather_time(forward_states, lengths - 1)[:, 0]  # (batch, hidden) at each last word
        summary = torch.cat([last, backward_states[:, 0]], dim=-1)  # (batch, 2*hidden)
        keys = self.model.decoder.attention.project_keys(states)  # (batch, src_len, query)
        hidden = self.model.decoder.initial_state(summary, None).hidden  # (layers, batch, hidden)
        return states, keys, summary, hidden


def _one_direction(rnn: nn.GRU, layer: int, suffix: str) -> nn.GRU:
    """A one-layer unidirectional GRU holding layer ``layer``'s weights of direction ``suffix``."""
    single = nn.GRU(getattr(rnn, f"weight_ih_l{layer}{suffix}").size(1), rnn.hidden_size, batch_first=True,
                    bias=rnn.bias)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh"):
        getattr(single, f"{name}_l0").data = getattr(rnn, f"{name}_l{layer}{suffix}").data
    return single


def _gather_time(values: Tensor, index: Tensor) -> Tensor:
    """values (batch, time, features), index (batch, k) -> values[b, index[b, j]]: (batch, k, features)."""
    return values.gather(1, index.unsqueeze(2).expand(-1, -1, values.size(2)))


class ExportableStep(nn.Module):
    """``Seq2Seq.step`` with its state and memory as plain tensors (ONNX graphs have no dataclasses)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        self.input_feeding = model.decoder.input_feeding
        self.has_attention = model.has_attention

    def forward(self, prev_tokens: Tensor, hidden: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        attentional, rest = (rest[0], rest[1:]) if self.input_feeding else (None, rest)
        states, keys, mask, *summary = rest
        # the final state is read only without attention (its context); a placeholder otherwise
        memory = EncoderMemory(states, keys, mask, summary[0] if summary else states[:, 0] * 0)
        log_probs, state, attention = self.model.step(prev_tokens, DecoderState(hidden, None, attentional), memory)
        outputs = (log_probs, state.hidden) + ((state.attentional,) if self.input_feeding else ())
        return outputs + ((attention,) if self.has_attention else ())


def step_names(input_feeding: bool, has_attention: bool) -> tuple[list[str], list[str]]:
    """The step graph's input and output names, in order, for a model of these settings."""
    inputs = ["prev_tokens", "hidden"] + (["attentional"] if input_feeding else []) + ["states", "keys", "mask"]
    inputs += [] if has_attention else ["summary"]
    outputs = ["log_probs", "hidden_out"] + (["attentional_out"] if input_feeding else [])
    return inputs, outputs + (["attention"] if has_attention else [])


def export_onnx(model_dir: Path, out_dir: Path) -> list[Path]:
    """Write ``out_dir`` (see the module docstring; it must not exist, or be empty) from the model
    directory ``model_dir``; the graphs written. A directory that is not a readable model is a
    CheckpointError saying why. The files are written into a temporary directory beside ``out_dir``
    and renamed into place at the end: a failed export leaves nothing behind."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail before any work)
    except ImportError:
        raise ConfigError("attnmt export --onnx needs the onnx package: pip install 'attnmt[onnx]'") from None
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointError(f"{out_dir} exists and is not an empty directory: give a new one")
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _export_into(Path(model_dir), staging)
        if out_dir.exists():
            out_dir.rmdir()  # empty, as checked
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / ENCODER_FILE, out_dir / STEP_FILE]


def _export_into(model_dir: Path, out_dir: Path) -> None:
    config, model, _, _ = load_model(model_dir)
    model.eval()
    encoder, step = ExportableEncoder(model).eval(), ExportableStep(model).eval()
    batch, src_len = 2, 5
    src = torch.full((batch, src_len), 4, dtype=torch.long)
    src[1, 3:] = PAD_ID
    src_lengths = torch.tensor([src_len, 3])
    with torch.inference_mode():
        states, keys, summary, hidden = encoder(src, src_lengths)
    input_names, output_names = step_names(model.decoder.input_feeding, model.has_attention)
    examples = {"prev_tokens": torch.ones(batch, dtype=torch.long), "hidden": hidden, "states": states, "keys": keys,
                "mask": src != PAD_ID, "summary": summary,
                "attentional": torch.zeros(batch, model.decoder.attentional_size)}
    batch_axis, batch_and_length = {0: "batch"}, {0: "batch", 1: "src_len"}
    dims = {"prev_tokens": batch_axis, "hidden": {1: "batch"}, "hidden_out": {1: "batch"}, "mask": batch_and_length,
            "attentional": batch_axis, "attentional_out": batch_axis, "states": batch_and_length,
            "keys": batch_and_length, "summary": batch_axis, "log_probs": batch_axis, "attention": batch_and_length,
            "src": batch_and_length, "src_lengths": batch_axis}  # the dynamic axes of every input and output
    copy_model_files(model_dir, out_dir, config)
    encoder_names = (["src", "src_lengths"], ["states", "keys", "summary", "hidden"])
    metadata = {PARAMETERS_KEY: str(model.num_parameters())}
    _export(encoder, (src, src_lengths), out_dir / ENCODER_FILE, *encoder_names, dims, metadata)
    _export(step, tuple(examples[name] for name in input_names), out_dir / STEP_FILE, input_names, output_names, dims,
            metadata)


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: list[str], output_names: list[str],
            dims: dict[str, dict[int, str]], metadata: dict[str, str]) -> None:
    import onnx

    def write(temporary: Path) -> None:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, args, str(temporary), dynamo=False, opset_version=OPSET,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes={name: dims[name] for name in input_names + output_names})
        graph = onnx.load(str(temporary))
        onnx.helper.set_model_props(graph, metadata)  # read back by onnxruntime, without the onnx package
        onnx.save(graph, str(temporary))

    atomic_write(path, write)
