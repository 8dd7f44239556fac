"""A toy translation task that a tiny model learns in seconds: number words, English → German,
word for word, so attention should be monotone. Used by the end-to-end, CLI and serving tests."""

from __future__ import annotations

import random
from pathlib import Path

from attnmt.config import Config, DataConfig, DecodeConfig, ModelConfig, TrainConfig, VocabConfig

LEXICON = {
    "one": "eins", "two": "zwei", "three": "drei", "four": "vier", "five": "fünf",
    "six": "sechs", "seven": "sieben", "eight": "acht", "nine": "neun", "ten": "zehn",
}


def toy_pairs(n: int, seed: int = 0, max_words: int = 5) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    pairs = []
    for _ in range(n):
        sentence = [rng.choice(words) for _ in range(rng.randint(1, max_words))]
        pairs.append((" ".join(sentence), " ".join(LEXICON[w] for w in sentence)))
    return pairs


def write_toy_corpus(directory: Path, n_train: int, n_valid: int = 20, seed: int = 0) -> tuple[str, str]:
    """Writes {train,valid}.en/.de; returns the two prefixes."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, split_seed in (("train", n_train, seed), ("valid", n_valid, seed + 1)):
        pairs = toy_pairs(n, split_seed)
        (directory / f"{split}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (directory / f"{split}.de").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(directory / "train"), str(directory / "valid")


def toy_config(train: str, valid: str, **train_overrides) -> Config:
    train_settings = dict(seed=1, max_epochs=10_000, batch_tokens=400, max_steps=150, learning_rate=0.01, label_smoothing=0.0,
                          valid_every=50, log_every=25, schedule="constant", early_stopping_metric="loss",
                          early_stopping_patience=0)
    train_settings.update(train_overrides)
    return Config(
        data=DataConfig(train=train, valid=valid, src_lang="en", trg_lang="de"),
        vocab=VocabConfig(type="unigram", size=40, joint=False, byte_fallback=False),
        model=ModelConfig(embedding_size=16, encoder_hidden_size=16, hidden_size=32, dropout=0.0, tie_output=False),
        train=TrainConfig(**train_settings),
        decode=DecodeConfig(beam_size=3, batch_size=16),
    ).validate()


class StepClock:
    """A stand-in for ``time.perf_counter`` that advances by ``tick`` seconds at every call: a run
    bounded by ``train.max_time`` then takes the same steps on any machine, however fast."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def assert_batch_size_changes_no_translation(translator, texts: list[str], batch_size: int) -> None:
    """Greedy and beam search (3) give the same texts and scores when ``batch_size`` sentences are
    searched at a time (continuous batching: waiting sentences join running ones) as in one batch."""
    import dataclasses

    import pytest

    whole = translator.config.decode
    for beam in (1, 3):
        expected = translator.translate(texts, beam=beam)
        translator.config.decode = dataclasses.replace(whole, batch_size=batch_size)
        try:
            found = translator.translate(texts, beam=beam)
        finally:
            translator.config.decode = whole
        assert [t.text for t in found] == [t.text for t in expected]
        assert [t.score for t in found] == pytest.approx([t.score for t in expected], abs=1e-5)
