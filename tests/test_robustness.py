"""Bad input and untrusted files: whatever comes in, translate gives one line out per line in, training
data problems are clear errors naming file and line, and nothing in a model directory is unpickled."""

from __future__ import annotations

import logging
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnmt.errors import CheckpointError
from attnmt.store import WEIGHTS_FILE
from attnmt.cli import main as cli_main
from attnmt.config import load_config
from attnmt.data.corpus import CorpusError, count_lines, read_parallel, split_lines
from attnmt.data.text import clean_line
from attnmt.data.vocab import UNK_ID
from attnmt.training.prepare import prepare_data
from attnmt.search import Hypothesis
from attnmt.decoding import join_hypotheses, split_points
from attnmt.training.loop import train
from attnmt.translator import Translator
from toy import LEXICON, toy_config, write_toy_corpus

few = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
AWKWARD = "\r\t\x00\x0b\x0c\x1c\x85\u2028\u2029\ufeff\xa0\u200b\u200e☃€𝔘"


@pytest.fixture(scope="module")
def translator(toy_model_dir) -> Translator:
    return Translator.load(toy_model_dir)


def expected_line_count(data: bytes) -> int:
    """Lines as ``translate`` counts them: ended by \\n, the last one possibly unterminated, a BOM no line."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def quiet(message: str) -> None:
    pass


# ---- translate: one line in, one line out ---------------------------------------------------------


@few
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=()) | st.sampled_from(AWKWARD + "\ud800 onetw"),
                        max_size=40), max_size=6))
def test_any_text_gives_one_single_line_translation_per_input(translator, texts):
    outputs = translator.translate(texts, beam=2)
    assert len(outputs) == len(texts)
    for text, output in zip(texts, outputs):
        assert "\n" not in output.text and len(output.text.splitlines()) <= 1
        if not clean_line(text):
            assert output.text == "" and output.tokens == []


AWKWARD_BYTES = [b"one two", b"\n", b"\r\n", b"\xff", b"\xe2\x82", b"\x00", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b" ", b"three"]


@few
@given(st.binary(max_size=200) | st.lists(st.sampled_from(AWKWARD_BYTES)).map(b"".join))
def test_any_bytes_through_the_cli_give_exactly_one_output_line_per_input_line(toy_model_dir, tmp_path, data):
    source, output = tmp_path / "input.txt", tmp_path / "output.txt"
    source.write_bytes(data)
    assert cli_main(["translate", str(toy_model_dir), "-i", str(source), "-o", str(output), "--beam", "1",
                     "--encoding-errors", "replace"]) == 0
    written = output.read_bytes()
    assert written.count(b"\n") == expected_line_count(data) and (not written or written.endswith(b"\n"))
    assert len(split_lines(data, "<test>", "replace")) == expected_line_count(data)


def test_a_line_of_ten_thousand_tokens_is_translated_in_pieces(translator, caplog):
    rng = random.Random(0)
    words = [rng.choice(sorted(LEXICON)) for _ in range(10_000)]
    long_line = " ".join(words[:5000]) + ". " + " ".join(words[5000:])
    one_long_word = "one" * 3000  # no space to cut at
    with caplog.at_level(logging.WARNING, logger="attnmt.translator"):
        outputs = translator.translate(["one", long_line, one_long_word, "two"], beam=2)
    assert "2 input lines longer than 100 source tokens were translated in pieces" in caplog.text
    assert [outputs[0].text, outputs[3].text] == ["eins", "zwei"]
    for text, output in zip((long_line, one_long_word), outputs[1:3]):
        assert output.text and "\n" not in output.text
        assert len(output.src_tokens) == len(translator.src_tokenizer.encode(text)) > 1000
        assert output.attention.shape == (len(output.tokens) + 1, len(output.src_tokens) + 1)
        assert abs(output.attention.sum(axis=1) - 1).max() < 1e-5
    n_best = translator.translate_n_best([long_line], beam=3, n_best=3)[0]
    assert len(n_best) == 3 and all(t.text for t in n_best)


def test_split_points_cut_after_sentences_then_between_words_then_anywhere():
    pieces = ["▁a", "▁b", ".", "▁c", "▁d", "▁e", "▁f", "g", "h", "i", "j", "k"]
    assert split_points(pieces, 4) == [(0, 3), (3, 6), (6, 10), (10, 12)]
    assert split_points(pieces, 100) == [(0, 12)]
    assert split_points([], 3) == [(0, 0)]


@few
@given(st.lists(st.sampled_from(["▁w", "x", ".", "▁.", "<unk>", "▁"]), max_size=60), st.integers(1, 12))
def test_split_points_cover_the_input_in_order_within_the_limit(pieces, max_tokens):
    spans = split_points(pieces, max_tokens)
    assert spans[0][0] == 0 and spans[-1][1] == len(pieces)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(0 < end - start <= max_tokens for start, end in spans) or pieces == []


def test_joined_pieces_keep_a_block_diagonal_attention_whose_rows_sum_to_one():
    first = Hypothesis([5, 6], -1.0, -2.0, np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]], np.float32))
    second = Hypothesis([7], -0.5, -1.0, np.array([[0.6, 0.4], [0.3, 0.7]], np.float32))
    joined = join_hypotheses([first, second])
    assert joined.tokens == [5, 6, 7] and joined.score == -1.5 and joined.log_prob == -3.0
    expected = np.array([[0.7, 0.2, 0.0, 0.1], [0.1, 0.8, 0.0, 0.1], [0.0, 0.0, 0.6, 0.4], [0.0, 0.0, 0.3, 0.7]],
                        np.float32)
    np.testing.assert_array_equal(joined.attention, expected)


def test_characters_outside_the_vocabulary_never_crash_and_an_unk_copies_its_source(translator):
    assert translator.src_tokenizer.byte_fallback is False  # the toy model has no byte fallback
    outputs = translator.translate(["one ☃ two", "日本語 three", "𝔘𝔫𝔦"], beam=2)
    assert len(outputs) == 3 and all("\n" not in o.text for o in outputs)
    # when the model writes <unk>, the source piece it attended to most is copied (Luong et al., 2015)
    source = "one ☃ two"
    snowman = translator.src_tokenizer.pieces(source).index("☃")
    output_ids = translator.trg_tokenizer.encode("eins ☃ zwei")
    assert UNK_ID in output_ids
    attention = np.zeros((len(output_ids) + 1, len(translator.src_tokenizer.encode(source)) + 1), np.float32)
    for row, token in enumerate(output_ids):
        attention[row, snowman if token == UNK_ID else 0] = 1.0
    attention[-1, -1] = 1.0
    hypothesis = Hypothesis(output_ids, -1.0, -1.0, attention)
    assert "⁇" in translator.trg_tokenizer.decode(output_ids)  # what plain decoding gives
    assert translator._detokenize(hypothesis, source) == "eins ☃ zwei"


def test_translate_cli_in_a_subprocess_with_every_kind_of_awkward_line(toy_model_dir, tmp_path):
    lines = [b"one two", b"", b"\xef\xbb\xbfthree", b"four\r", b"five\x00six", b"seven\tone", b"bad \xff byte",
             b"two\x0bthree", "sep\u2028arated\xa0nbsp".encode(), b"  ", " ".join(["one"] * 3000).encode()]
    source = tmp_path / "awkward.en"
    source.write_bytes(b"\n".join(lines))  # no final newline
    command = [sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "-i", str(source), "--beam", "2"]
    strict = subprocess.run(command, capture_output=True, timeout=120)
    assert strict.returncode == 1 and f"{source}: line 7: invalid UTF-8" in strict.stderr.decode()
    replaced = subprocess.run([*command, "--encoding-errors", "replace"], capture_output=True, timeout=120)
    assert replaced.returncode == 0, replaced.stderr.decode()
    out_lines = replaced.stdout.decode("utf-8").split("\n")
    assert len(out_lines) == len(lines) + 1 and out_lines[-1] == ""
    assert out_lines[1] == out_lines[9] == "" and out_lines[0] == "eins zwei" and out_lines[10]


# ---- training data --------------------------------------------------------------------------------


@few
@given(src=st.binary(max_size=80), trg=st.binary(max_size=80))
def test_the_corpus_reader_never_misaligns_arbitrary_bytes(tmp_path, src, trg):
    (tmp_path / "c.en").write_bytes(src)
    (tmp_path / "c.de").write_bytes(trg)
    counts = count_lines(tmp_path / "c.en"), count_lines(tmp_path / "c.de")
    if counts[0] != counts[1]:
        with pytest.raises(CorpusError, match=rf"{counts[0]} lines.*{counts[1]} lines"):
            read_parallel(str(tmp_path / "c"), "en", "de", "replace")
        return
    corpus = read_parallel(str(tmp_path / "c"), "en", "de", "replace")
    assert len(corpus.src) == len(corpus.trg) == counts[0] == expected_line_count(src)
    assert all("\n" not in line and line == line.strip() for line in corpus.src + corpus.trg)


def test_invalid_utf8_in_training_data_names_file_and_line_unless_replaced(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=50)
    target = Path(f"{train_prefix}.de")
    lines = target.read_bytes().split(b"\n")
    lines[2] = b"eins \xc3( zwei"
    target.write_bytes(b"\n".join(lines))
    with pytest.raises(CorpusError, match=rf"{target}: line 3: invalid UTF-8"):
        train(toy_config(train_prefix, valid_prefix), tmp_path / "model", log=quiet)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(toy_config(train_prefix, valid_prefix).to_yaml(), encoding="utf-8")
    config = load_config(config_file, ["data.encoding_errors=replace"])  # what --set does
    data = prepare_data(config, tmp_path / "model", log=quiet)
    assert data.n_train_pairs == 50


def test_awkward_tsv_lines_are_cleaned_and_unusable_pairs_counted(tmp_path):
    rows = ["\ufeffone two\teins zwei", "three\r", "four\x00five\tvier\xa0fünf", "\t", "  \t sechs",
            "seven\x0bone\tsieben\u2028eins", " ".join(["one"] * 30) + "\teins", "two\tzwei\r"]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\r\n", encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("one\teins\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train.tsv: line 2: expected source<TAB>target, found no tab"):
        read_parallel(str(tmp_path / "train.tsv"), "en", "de")
    rows[1] = "three\tdrei"
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\r\n", encoding="utf-8")
    corpus = read_parallel(str(tmp_path / "train.tsv"), "en", "de")
    assert corpus.src[:3] == ["one two", "three", "four five"] and corpus.trg[2] == "vier fünf"
    assert corpus.src[5] == "seven one" and corpus.trg[5] == "sieben eins"
    config = toy_config(str(tmp_path / "train.tsv"), str(tmp_path / "valid.tsv"))
    config.data.max_src_tokens = 20
    messages: list[str] = []
    data = prepare_data(config, tmp_path / "model", log=messages.append)
    assert data.n_train_pairs == 5
    assert any("skipped 2 empty and 1 too long" in m for m in messages)


def test_an_empty_validation_set_is_a_clear_error(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=30)
    for lang in ("en", "de"):
        Path(f"{valid_prefix}.{lang}").write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no usable validation pairs in .*valid\.en.*2 lines read"):
        train(toy_config(train_prefix, valid_prefix), tmp_path / "model", log=quiet)


# ---- untrusted files ------------------------------------------------------------------------------


class CreatesMarker:
    """Unpickling this object runs ``open(marker, "w")``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_files_in_a_model_directory_are_never_loaded(toy_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(toy_model_dir, model_dir)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(CreatesMarker(marker))
    for name in ("model.pt", "model.pth", "pytorch_model.bin", "trainer_state.pt", "optimizer.pkl", "checkpoint.ckpt"):
        (model_dir / name).write_bytes(payload)
    Translator.load(model_dir).translate(["one two"])
    config = load_config(model_dir / "config.yaml", ["train.max_steps=155"])
    assert train(config, model_dir, resume=True, log=quiet).steps == 155  # resumed from the safetensors state
    (model_dir / WEIGHTS_FILE).write_bytes(payload)  # a pickle under the safetensors name
    with pytest.raises(CheckpointError, match=str(model_dir / WEIGHTS_FILE)):
        Translator.load(model_dir)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: unpickling it does create the marker
    assert marker.exists()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['touch {marker}']\n", "not valid YAML"),
        ("model:\n  hiden_size: 3\n", "unknown key 'model.hiden_size'"),
        ("- just a list\n", "must be a mapping"),
        ("model:\n  hidden_size: \xff\n", "not valid YAML"),
    ],
)
def test_a_malformed_config_is_a_clear_checkpoint_error(toy_model_dir, tmp_path, config_text, message):
    model_dir = tmp_path / "model"
    shutil.copytree(toy_model_dir, model_dir)
    marker = tmp_path / "marker"
    (model_dir / "config.yaml").write_bytes(config_text.format(marker=marker).encode("latin-1"))
    with pytest.raises(CheckpointError, match=message) as error:
        Translator.load(model_dir)
    assert str(model_dir / "config.yaml") in str(error.value)
    assert not marker.exists()


def test_a_damaged_tokenizer_model_is_a_clear_checkpoint_error(toy_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(toy_model_dir, model_dir)
    (model_dir / "trg.spm.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="trg.spm.model"):
        Translator.load(model_dir)
