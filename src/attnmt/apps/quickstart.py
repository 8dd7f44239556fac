"""``attnmt quickstart``: the whole system on a built-in task, offline, in a few minutes.

Dates written by people in several languages and styles ("25 juin 2009", "Donnerstag, 25. Juni
2009", "25.06.09") are translated to ISO dates ("2009-06-25") by a character-level attention model.
The task is small enough to train on a laptop CPU and transparent enough that the attention heatmap
shows the alignment a person expects: the month digits look at the month word. docs/quickstart.md
says what it does and what its numbers mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnmt.config import Config, DataConfig, DecodeConfig, ModelConfig, TrainConfig, VocabConfig
from attnmt.datasets.dates import write_corpus

TRAIN_PAIRS = 20_000
VALID_PAIRS = 500
TEST_PAIRS = 1_000
DEFAULT_MAX_TIME = 90.0  # seconds of training; the whole command stays well under 3 minutes on 2 cores
SHOWCASE = ["25 juin 2009", "June 25th, 2009", "Donnerstag, 25. Juni 2009", "25.06.09", "3 de marzo de 1987"]
HEATMAP_SENTENCE = "Donnerstag, 25. Juni 2009"


def quickstart_config(data_dir: Path, seed: int, max_time: float) -> Config:
    """A small character-level model (0.87 M parameters; docs/quickstart.md describes it). One torch
    thread: for a model this small a second intra-op thread gains little on a quiet machine and, on a
    busy one, spinning OpenMP threads made training 18x slower in our measurements."""
    return Config(
        data=DataConfig(train=str(data_dir / "train"), valid=str(data_dir / "valid"), test=str(data_dir / "test"),
                        src_lang="src", trg_lang="trg", max_src_tokens=80, max_trg_tokens=20),
        vocab=VocabConfig(type="char", size=200, joint=False, byte_fallback=False),
        model=ModelConfig(rnn="gru", embedding_size=64, encoder_hidden_size=128, hidden_size=256, dropout=0.1,
                          attention="general", input_feeding=True, tie_output=False),
        train=TrainConfig(seed=seed, batch_tokens=1500, max_epochs=100, max_time=max_time, learning_rate=3e-3,
                          schedule="warmup_decay", warmup_steps=100, label_smoothing=0.0, valid_every=250,
                          valid_max_sentences=VALID_PAIRS, log_every=50, early_stopping_metric="loss",
                          early_stopping_patience=0, num_threads=1),
        decode=DecodeConfig(beam_size=1, max_length_ratio=1.0, max_length_extra=12, batch_size=250),
    ).validate()


@dataclass
class QuickstartReport:
    accuracy: float | None
    test_pairs: int
    train_seconds: float
    total_seconds: float
    heatmap: Path
    month_attention: float  # attention mass of the month digits on the month word
    examples: list[tuple[str, str]] = field(default_factory=list)


def month_attention_mass(attention: np.ndarray, src_words: list[str], trg_chars: list[str], month_word: str) -> float:
    """Mean attention that the month digits of an ISO date (the pieces between its first two dashes)
    give to the source word containing ``month_word``; 0 when the output has no month digits."""
    column = next(i for i, word in enumerate(src_words) if month_word.lower() in word.lower())
    dashes = [i for i, piece in enumerate(trg_chars) if piece == "-"]
    if len(dashes) < 2 or dashes[1] == dashes[0] + 1:  # e.g. "2009--25" from a barely trained model
        return 0.0
    return float(attention[dashes[0] + 1 : dashes[1], column].mean())


def run_quickstart(out_dir: Path, seed: int = 42, max_time: float | None = None, progress: bool | None = None,
                   log=print, n_train: int = TRAIN_PAIRS, n_valid: int = VALID_PAIRS,
                   n_test: int = TEST_PAIRS) -> QuickstartReport:
    """Generate the date corpus, train for ``max_time`` seconds (None: DEFAULT_MAX_TIME), score the
    held-out test dates, print a few translations and write the attention heatmap. The corpus sizes
    are parameters for quick checks; ``attnmt quickstart`` uses the defaults."""
    from attnmt.data.corpus import read_lines
    from attnmt.evaluate import exact_match
    from attnmt.explain.alignment import word_attention
    from attnmt.explain.viz import plot_attention
    from attnmt.training import train
    from attnmt.translator import Translator

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log(f"quickstart: generating {n_train} training dates in several languages (Babel CLDR data) in {data_dir}")
    write_corpus(data_dir, n_train, n_valid, n_test, seed)
    config = quickstart_config(data_dir, seed, DEFAULT_MAX_TIME if max_time is None else max_time)
    config.save(out_dir / "quickstart.yaml")
    model_dir = out_dir / "model"
    result = train(config, model_dir, overwrite=True, progress=progress, log=log)

    translator = Translator.load(model_dir)
    sources, references = read_lines(data_dir / "test.src"), read_lines(data_dir / "test.trg")
    outputs = [t.text for t in translator.translate(sources, beam=1)]
    accuracy = exact_match(outputs, references)
    log(f"exact match on {len(sources)} held-out dates (never seen in training): {100 * accuracy:.1f}%")
    examples = [(s, t.text) for s, t in zip(SHOWCASE, translator.translate(SHOWCASE, beam=1))]
    for source, output in examples:
        log(f"  {source!r:32} -> {output}")

    translation = translator.translate([HEATMAP_SENTENCE], beam=1)[0]
    attention, src_words, trg_labels = word_attention(translation, merge_target=False)
    heatmap = out_dir / "attention.png"
    plot_attention(attention, src_words, trg_labels, heatmap, title=f"{HEATMAP_SENTENCE} → {translation.text}")
    mass = month_attention_mass(attention, src_words, trg_labels, "Juni")
    log(f"attention heatmap: {heatmap} (the month digits give {100 * mass:.0f}% of their attention to 'Juni')")
    total = time.perf_counter() - started
    log(f"quickstart finished in {total:.0f}s ({result.elapsed_seconds:.0f}s of training)")
    return QuickstartReport(accuracy, len(sources), result.elapsed_seconds, total, heatmap, mass, examples)
