"""The attention encoder–decoder: attention.py, encoder.py, decoder.py, seq2seq.py."""

from attnmt.model.seq2seq import Seq2Seq

__all__ = ["Seq2Seq"]
