"""Translating with an exported model (attnmt.export.graphs) through onnxruntime, torch never
imported: ``OnnxModel`` is one more model of the step protocol, on numpy arrays, so greedy and beam
search are attnmt.search's own; ``OnnxTranslator`` is the text side every translator shares.

    translator = OnnxTranslator.load("model_onnx")
    translator.translate(["A man rides a bike."], beam=5)[0].attention   # (target + 1, source + 1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnmt.data.vocab import PAD_ID
from attnmt.errors import CheckpointError
from attnmt.store import load_config_file, load_tokenizers
from attnmt.translation import TextTranslator

ENCODER_FILE = "encoder.onnx"  # the files attnmt.export.graphs writes
STEP_FILE = "step.onnx"
PARAMETERS_KEY = "attnmt_parameters"  # the trained model's number of parameters, in the graphs' metadata


def is_onnx_dir(path: Path | str) -> bool:
    """Whether ``path`` holds an exported model (``attnmt export --onnx``)."""
    return (Path(path) / ENCODER_FILE).is_file() and (Path(path) / STEP_FILE).is_file()


@dataclass(frozen=True)
class OnnxMemory:
    """The encoder's output for a batch: states (batch, src_len, 2*enc_hidden), keys (batch,
    src_len, hidden), mask (batch, src_len) bool, summary (batch, 2*enc_hidden)."""

    states: np.ndarray
    keys: np.ndarray
    mask: np.ndarray
    summary: np.ndarray

    def reorder(self, indices: np.ndarray) -> "OnnxMemory":
        return OnnxMemory(self.states[indices], self.keys[indices], self.mask[indices], self.summary[indices])


@dataclass(frozen=True)
class OnnxState:
    """hidden (layers, batch, hidden); attentional (batch, attentional_size) with input feeding, else None."""

    hidden: np.ndarray
    attentional: np.ndarray | None

    def reorder(self, indices: np.ndarray) -> "OnnxState":
        return OnnxState(self.hidden[:, indices], None if self.attentional is None else self.attentional[indices])

    def concat(self, other: "OnnxState") -> "OnnxState":
        return OnnxState(np.concatenate([self.hidden, other.hidden], axis=1),
                         None if self.attentional is None else np.concatenate([self.attentional, other.attentional]))


class OnnxModel:
    """The exported encoder and step, run by onnxruntime (``threads``: intra-op threads, default
    onnxruntime's own choice)."""

    def __init__(self, directory: Path, threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.encoder = _session(onnxruntime, Path(directory) / ENCODER_FILE, options)
        self.stepper = _session(onnxruntime, Path(directory) / STEP_FILE, options)
        inputs = {i.name: i.shape for i in self.stepper.get_inputs()}  # name -> [axis names or sizes]
        self.step_inputs = list(inputs)
        self.input_feeding = "attentional" in inputs
        self.attentional_size = inputs["attentional"][1] if self.input_feeding else 0  # (batch, size): fixed size
        self.has_attention = "attention" in [o.name for o in self.stepper.get_outputs()]

    def encode(self, src: np.ndarray, src_lengths: np.ndarray) -> tuple[OnnxMemory, OnnxState]:
        """src: (batch, src_len) ids ending in EOS, padded; src_lengths: (batch,)."""
        states, keys, summary, hidden = self.encoder.run(None, {"src": src, "src_lengths": src_lengths})
        attentional = np.zeros((src.shape[0], self.attentional_size), np.float32) if self.input_feeding else None
        return OnnxMemory(states, keys, src != PAD_ID, summary), OnnxState(hidden, attentional)

    def step(self, prev_tokens: np.ndarray, state: OnnxState, memory: OnnxMemory,
             ) -> tuple[np.ndarray, OnnxState, np.ndarray | None]:
        """prev_tokens: (batch,) -> log_probs (batch, trg_vocab), new state, attention (batch, src_len) or None."""
        values = {"prev_tokens": prev_tokens, "hidden": state.hidden, "attentional": state.attentional,
                  "states": memory.states, "keys": memory.keys, "mask": memory.mask, "summary": memory.summary}
        outputs = self.stepper.run(None, {name: values[name] for name in self.step_inputs})
        log_probs, hidden = outputs[0], outputs[1]
        attentional = outputs[2] if self.input_feeding else None
        return log_probs, OnnxState(hidden, attentional), outputs[-1] if self.has_attention else None


def _session(onnxruntime, path: Path, options):
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not an exported model: {path.name} is missing (attnmt export --onnx)")
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for damaged files
        raise CheckpointError(f"cannot load {path}: {error}") from None


class OnnxTranslator(TextTranslator):
    """Translates with an exported model directory; greedy and beam search, attention as the
    PyTorch translator gives it. (No sampling, ensembles, shortlists or forced decoding: those need
    the PyTorch model.)"""

    @property
    def num_parameters(self) -> int:
        """Of the model exported (as ``Translator.num_parameters``)."""
        return int(self.model.encoder.get_modelmeta().custom_metadata_map.get(PARAMETERS_KEY, 0))

    @classmethod
    def load(cls, directory: Path | str, threads: int = 0) -> "OnnxTranslator":
        directory = Path(directory)
        config = load_config_file(directory)
        src_tokenizer, trg_tokenizer = load_tokenizers(directory, config.vocab.joint)
        return cls(OnnxModel(directory, threads), config, src_tokenizer, trg_tokenizer)
