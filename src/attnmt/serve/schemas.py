"""The JSON of the HTTP API: request and response models (pydantic), with the request limits in them.

The request model is built per app by ``translate_request_model(limits)`` so that the limits a server
was started with are the ones it checks and the ones ``/docs`` shows.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from attnmt.explain.alignment import group_words, word_attention
from attnmt.explain.diagnostics import Diagnostics
from attnmt.translation import Translation

WEIGHT_DECIMALS = 4  # attention weights are rounded in JSON: 4 decimals is finer than any colour scale


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; larger requests get 413 (body) or 422 (the rest)."""

    max_chars: int = 1000  # characters per text
    max_texts: int = 32  # texts per request
    max_beam: int = 16  # beam size and n-best size
    max_body_bytes: int = 256 * 1024


class AttentionMatrix(BaseModel):
    source: list[str] = Field(description='column labels: source tokens, "</s>" last')
    target: list[str] = Field(description='row labels: target tokens, "</s>" last')
    weights: list[list[float]] = Field(description="(len(target), len(source)); each row sums to 1")


class Attention(BaseModel):
    pieces: AttentionMatrix = Field(description="one row per target subword piece, one column per source piece")
    words: AttentionMatrix = Field(description="pieces merged into words: columns summed, rows averaged")
    source_word_of_piece: list[int] = Field(description="for each column of pieces, the column of words it is in")


class DiagnosticsResult(BaseModel):
    """What the attention says about a translation (attnmt.explain.diagnostics), word by word."""

    src_words: list[str]
    trg_words: list[str]
    coverage: list[float] = Field(description="per source word: the attention mass it received (about 1: translated once)")
    entropy: list[float] = Field(description="per target word: the entropy of its attention, in nats")
    eos_mass: list[float] = Field(description="per target word: the attention it gave the source </s>")
    omitted: list[int] = Field(description="source words whose coverage is under omission_below: possibly untranslated")
    over_attended: list[int] = Field(description="source words whose coverage is over repetition_above")
    omission_below: float
    repetition_above: float
    deletion_gain: list[float] | None = Field(
        None, description="per source word: log P(translation | source without it) − log P(translation | source), "
                          "in nats; null unless the deletion test ran")
    attended_regret: list[float] | None = Field(
        None, description="per source word: Σ over target words of the attention it received × how much less probable "
                          "the word written was than the model's first choice there, in nats; null unless the deletion "
                          "test ran")
    untranslated_score: list[float] | None = Field(
        None, description="per source word: deletion_gain + attended_regret; null unless the deletion test ran")
    untranslated: list[int] = Field(default_factory=list,
                                    description="the source word with the largest untranslated_score, if that is over "
                                                "untranslated_above (at most one)")
    untranslated_above: float
    flagged: bool
    mean_entropy: float
    mean_eos_mass: float


class Hypothesis(BaseModel):
    text: str
    tokens: list[str] = Field(description="target subword pieces")
    score: float = Field(description="the search's ranking score (length-normalised log-probability)")
    log_prob: float
    attention: Attention | None = Field(
        None, description='present when the request asked for "attention" and the model has attention'
    )
    diagnostics: DiagnosticsResult | None = Field(
        None, description='present when the request asked for "diagnostics" and the model has attention'
    )


class TranslationResult(BaseModel):
    source: str
    src_tokens: list[str] = Field(description="source subword pieces")
    translations: list[Hypothesis] = Field(description="the n best, best first")


class TranslateResponse(BaseModel):
    results: list[TranslationResult] = Field(description="one per input text, in order")
    beam: int
    n_best: int
    elapsed_ms: float = Field(description="time in the server, queueing and decoding included")


class ErrorResponse(BaseModel):
    error: str = Field(description="a short code: invalid_request, body_too_large, timeout, ...")
    message: str = Field(description="what went wrong, for a person")
    details: list[dict[str, Any]] | None = None


def translate_request_model(limits: RequestLimits, default_beam: int) -> type[BaseModel]:
    """The body of ``POST /v1/translate``, checking ``limits``."""
    default_beam = min(max(default_beam, 1), limits.max_beam)

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"text": "A man is riding a bike.", "beam": 5, "attention": True}]},
        )

        text: str | list[str] = Field(
            description=f"one text or a list of at most {limits.max_texts}, each at most {limits.max_chars} characters"
        )
        beam: int = Field(default_beam, ge=1, le=limits.max_beam, description="beam size; 1 is greedy search")
        n_best: int = Field(1, ge=1, le=limits.max_beam, description="translations per text, at most beam")
        attention: bool = Field(False, description="include the attention matrices (subword and word level)")
        diagnostics: bool = Field(False, description="include what the attention says: coverage of each source "
                                                     "word, possible omissions and repetitions")
        deletion_test: bool = Field(False, description="with diagnostics, for the best translation of each text: "
                                                       "also score it with each source word left out and flag the "
                                                       "word it most looks to have left out, if any (a PyTorch "
                                                       "model only; one forced decoding per source word)")
        length_penalty: float | None = Field(None, ge=0.0, le=10.0, description="GNMT alpha; default: the model's")

        @field_validator("text", mode="before")
        @classmethod
        def _check_type(cls, text: Any) -> Any:  # one clear error instead of one per branch of the union
            if not isinstance(text, str) and not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
                raise ValueError("text must be a string or a list of strings")
            return text

        @field_validator("text")
        @classmethod
        def _check_texts(cls, text: str | list[str]) -> str | list[str]:
            texts = [text] if isinstance(text, str) else text
            if not texts:
                raise ValueError("give at least one text")
            if len(texts) > limits.max_texts:
                raise ValueError(f"{len(texts)} texts in one request; at most {limits.max_texts} are allowed")
            for index, item in enumerate(texts):
                if len(item) > limits.max_chars:
                    where = "the text" if isinstance(text, str) else f"text {index}"
                    raise ValueError(f"{where} has {len(item)} characters; at most {limits.max_chars} are allowed")
            return text

        @model_validator(mode="after")
        def _check_n_best(self) -> "TranslateRequest":
            if self.n_best > self.beam:
                raise ValueError(f"n_best ({self.n_best}) cannot exceed beam ({self.beam})")
            return self

        @property
        def texts(self) -> list[str]:
            return [self.text] if isinstance(self.text, str) else list(self.text)

    return TranslateRequest


def _matrix(weights: np.ndarray, source: list[str], target: list[str]) -> AttentionMatrix:
    return AttentionMatrix(source=source, target=target, weights=np.round(weights.astype(np.float64), WEIGHT_DECIMALS).tolist())


def attention_of(translation: Translation) -> Attention | None:
    """Piece- and word-level attention of one translation; None for an empty input (nothing attended)
    and for a model without attention (``model.attention: none``)."""
    if translation.attention is None or translation.attention.size == 0:
        return None
    pieces = word_attention(translation, words=False)
    groups = group_words(pieces[1])  # the source pieces of each word, </s> a word of its own
    return Attention(
        pieces=_matrix(*pieces),
        words=_matrix(*word_attention(translation)),
        source_word_of_piece=[word for word, members in enumerate(groups) for _ in members],
    )


def diagnostics_of(translation: Translation, found: Diagnostics | None = None) -> DiagnosticsResult | None:
    """None for a model without attention; ``found``: the translation's diagnostics if already computed
    (with the deletion test)."""
    if translation.attention is None:
        return None
    return DiagnosticsResult(**(found or translation.diagnostics).to_dict())


def result_of(source: str, n_best: list[Translation], with_attention: bool,
              with_diagnostics: bool = False, best_diagnostics: Diagnostics | None = None) -> TranslationResult:
    """``best_diagnostics``: those of the best translation, when computed beforehand (the deletion test)."""
    return TranslationResult(
        source=source,
        src_tokens=n_best[0].src_tokens,
        translations=[
            Hypothesis(
                text=t.text, tokens=t.tokens, score=t.score, log_prob=t.log_prob,
                attention=attention_of(t) if with_attention else None,
                diagnostics=diagnostics_of(t, best_diagnostics if rank == 0 else None) if with_diagnostics else None,
            )
            for rank, t in enumerate(n_best)
        ],
    )


class ModelInfo(BaseModel):
    name: str
    src_lang: str
    trg_lang: str
    src_vocab_size: int
    trg_vocab_size: int
    parameters: int
    attention: str = Field(description="whose attention the translations show: the model's, or the mean of an "
                                       "ensemble's models")
    deletion_test: bool = Field(description='whether requests may ask for "deletion_test" (PyTorch models; not '
                                            "an exported one)")
    vocab: dict[str, Any] = Field(description="the vocab section of the model's config")
    model: dict[str, Any] = Field(description="the model section of the model's config")
    decode: dict[str, Any] = Field(description="the decode section: the defaults of a request")
    limits: dict[str, Any] = Field(description="what one request may ask for")
    batching: dict[str, Any]
