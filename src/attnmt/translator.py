"""The public Python API: ``Translator.load(model_dir).translate(["..."], beam=5)``.

Each translation carries its text, its target pieces, its score and its attention matrix (one row per
target piece plus the final ``</s>``, one column per source piece plus the source ``</s>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from attnmt.checkpoint import WEIGHTS_FILE, CheckpointError, load_config_file, load_weights, tokenizer_files
from attnmt.config import Config, DecodeConfig
from attnmt.data.batching import collate, sentence_batches
from attnmt.data.text import clean_line
from attnmt.data.tokenizer import SubwordTokenizer
from attnmt.data.vocab import EOS_PIECE
from attnmt.model import Seq2Seq
from attnmt.search import Hypothesis, beam_search, greedy_search


@dataclass
class Translation:
    text: str  # detokenized output
    tokens: list[str]  # target pieces, without </s>
    src_tokens: list[str]  # source pieces, without </s>
    score: float  # the search's ranking score (length-normalised log-probability)
    log_prob: float
    attention: np.ndarray = field(repr=False)  # (len(tokens)+1, len(src_tokens)+1), rows incl. </s>

    @property
    def attention_labels(self) -> tuple[list[str], list[str]]:
        """(source labels, target labels) for the attention matrix, ``</s>`` included."""
        return self.src_tokens + [EOS_PIECE], self.tokens + [EOS_PIECE]


def max_target_lengths(src_lengths: torch.Tensor, decode: DecodeConfig) -> torch.Tensor:
    """Longest allowed output per sentence: ratio * source length + extra tokens."""
    return (src_lengths.double() * decode.max_length_ratio).ceil().long() + decode.max_length_extra


@torch.inference_mode()
def decode_ids(
    model: Seq2Seq,
    src_ids: Sequence[list[int]],
    decode: DecodeConfig,
    beam_size: int,
    n_best: int = 1,
    device: torch.device | str = "cpu",
) -> list[list[Hypothesis]]:
    """Search over many tokenized sentences in length-sorted batches; results in input order.
    An empty sentence is still decoded (from its lone ``</s>``): callers decide what empty input means."""
    model.eval()
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(ids) for ids in src_ids], decode.batch_size):
        batch = collate([src_ids[i] for i in indices], None, indices)
        src, src_lengths = batch.src.to(device), batch.src_lengths.to(device)
        max_lengths = max_target_lengths(src_lengths, decode)
        if beam_size <= 1:
            found = greedy_search(model, src, src_lengths, max_lengths)
        else:
            found = beam_search(
                model, src, src_lengths, max_lengths, beam_size, n_best=n_best, length_penalty=decode.length_penalty
            )
        for position, hypotheses in zip(batch.indices, found):
            results[position] = hypotheses
    return results


class Translator:
    """A trained model with its tokenizers, ready to translate text."""

    def __init__(
        self,
        model: Seq2Seq,
        config: Config,
        src_tokenizer: SubwordTokenizer,
        trg_tokenizer: SubwordTokenizer,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer
        self.device = torch.device(device)

    @classmethod
    def load(cls, model_dir: Path | str, device: torch.device | str = "cpu") -> "Translator":
        """Load a model directory (safetensors + YAML + SentencePiece; never a pickle)."""
        model_dir = Path(model_dir)
        config = load_config_file(model_dir)
        src_path, trg_path = tokenizer_files(model_dir, config.vocab.joint)
        for path in {src_path, trg_path}:
            if not path.exists():
                raise CheckpointError(f"{model_dir} lacks its tokenizer model {path.name}")
        src_tokenizer = SubwordTokenizer.load(src_path)
        trg_tokenizer = src_tokenizer if trg_path == src_path else SubwordTokenizer.load(trg_path)
        model = Seq2Seq.from_config(config.model, src_tokenizer.vocab_size, trg_tokenizer.vocab_size)
        weights = model_dir / WEIGHTS_FILE
        if not weights.exists():
            raise CheckpointError(f"{model_dir} lacks its weights {WEIGHTS_FILE}")
        load_weights(model, weights)
        return cls(model, config, src_tokenizer, trg_tokenizer, device)

    def translate(
        self, texts: Sequence[str], beam: int | None = None, length_penalty: float | None = None
    ) -> list[Translation]:
        """One translation per input text, in order. An empty (or blank) text gives an empty translation."""
        return [n_best[0] for n_best in self.translate_n_best(texts, beam=beam, n_best=1, length_penalty=length_penalty)]

    def translate_n_best(
        self, texts: Sequence[str], beam: int | None = None, n_best: int = 1, length_penalty: float | None = None
    ) -> list[list[Translation]]:
        """The ``n_best`` best translations of each text, best first."""
        beam_size = self.config.decode.beam_size if beam is None else beam
        if beam_size < 1:
            raise ValueError(f"beam must be >= 1, got {beam_size}")
        if n_best < 1 or n_best > max(beam_size, 1):
            raise ValueError(f"n_best must be between 1 and the beam size ({beam_size}), got {n_best}")
        decode = self.config.decode
        if length_penalty is not None:
            decode = DecodeConfig(**{**decode.__dict__, "length_penalty": length_penalty})
        cleaned = [clean_line(text) for text in texts]
        src_ids = self.src_tokenizer.encode_batch(cleaned)
        wanted = [i for i, text in enumerate(cleaned) if text]
        found = decode_ids(self.model, [src_ids[i] for i in wanted], decode, beam_size, n_best, self.device)
        results: list[list[Translation]] = [[_empty_translation()] for _ in texts]
        for i, hypotheses in zip(wanted, found):
            src_pieces = [self.src_tokenizer.id_to_piece(t) for t in src_ids[i]]
            results[i] = [self._to_translation(h, src_pieces) for h in hypotheses[:n_best]]
        return results

    def _to_translation(self, hypothesis: Hypothesis, src_pieces: list[str]) -> Translation:
        return Translation(
            text=self.trg_tokenizer.decode(hypothesis.tokens),
            tokens=[self.trg_tokenizer.id_to_piece(t) for t in hypothesis.tokens],
            src_tokens=src_pieces,
            score=float(hypothesis.score),
            log_prob=float(hypothesis.log_prob),
            attention=hypothesis.attention.float().cpu().numpy(),
        )


def _empty_translation() -> Translation:
    return Translation("", [], [], 0.0, 0.0, np.zeros((0, 0), dtype=np.float32))

