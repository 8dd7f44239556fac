"""The benchmark scripts run end to end on the toy task, so that the long runs they are made for
cannot fail at the end for a reason a minute would have shown. They measure nothing here."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from toy import toy_config, write_toy_corpus

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """A benchmark script as a module; its folder on sys.path, as ``python benchmarks/NAME.py`` has it."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_with_every_piece_shortlisted(model_dir: Path, copy: Path) -> Path:
    """A copy of ``model_dir`` with a shortlist holding every target piece for every source piece:
    decoding with it must give exactly the full vocabulary's translations."""
    import shutil

    import torch

    from attnmt.store import save_shortlist, tokenizers_digest
    from attnmt.translator import Translator

    shutil.copytree(model_dir, copy)
    full = Translator.load(copy)
    src_vocab, trg_vocab = full.src_tokenizer.vocab_size, full.trg_tokenizer.vocab_size
    save_shortlist(copy, torch.arange(trg_vocab).repeat(src_vocab, 1), torch.zeros(0, dtype=torch.long),
                   tokenizers_digest(full.src_tokenizer, full.trg_tokenizer), {"method": "every piece"})
    return copy


def test_attention_vs_none_trains_both_and_writes_table_json_and_figure(tmp_path, capsys):
    script = load_script("attention_vs_none")
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=200)
    config = toy_config(train_prefix, valid_prefix)
    config.data.test = valid_prefix
    (tmp_path / "toy.yaml").write_text(config.to_yaml(), encoding="utf-8")
    out = tmp_path / "out"
    argv = [str(tmp_path / "toy.yaml"), "--work", str(out), "--out", str(out / "by_length.json"), "--max-time", "30s", "--set", "train.max_steps=40",
            "--bucket-width", "2", "--min-bucket", "5", "--beam", "2"]
    assert script.main(argv) == 0

    report = json.loads((out / "by_length.json").read_text(encoding="utf-8"))
    general, none = report["systems"]
    assert (general["attention"], none["attention"]) == ("general", "none")
    assert general["steps"] == none["steps"] == 40  # the same budget
    assert report["setup"]["max_time_seconds"] == 30.0 and report["setup"]["test_sentences"] == 20
    memory_size, hidden_size = 2 * config.model.encoder_hidden_size, config.model.hidden_size
    assert general["parameters"] == none["parameters"] + memory_size * hidden_size  # W of general attention
    assert [b["sentences"] for b in general["buckets"]] == [b["sentences"] for b in none["buckets"]]
    assert sum(b["sentences"] for b in general["buckets"]) == 20
    hypotheses = (out / "none.hyp").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == 20
    table = (out / "by_length.md").read_text(encoding="utf-8")
    assert "| general attention | " in table and "| no attention | " in table and "| all | 20 |" in table
    assert table in capsys.readouterr().out
    assert (out / "by_length.png").read_bytes().startswith(b"\x89PNG")

    with pytest.raises(SystemExit, match="already hold models: pass --evaluate-only"):
        script.main(argv)
    assert script.main(argv + ["--evaluate-only", "--beam", "1"]) == 0
    assert json.loads((out / "by_length.json").read_text(encoding="utf-8"))["setup"]["beam"] == 1


def test_decode_profile_counts_one_row_per_output_token_in_greedy_search(toy_model_dir, tmp_path):
    """Greedy search steps every sentence once per output token and once for its </s>: the rows the
    counter sees are exactly that many, and beam search asks for more."""
    from attnmt.translator import Translator

    script = load_script("decode_profile")
    sources = ["one two three", "four", "five six seven eight nine", "ten ten"]
    (tmp_path / "src.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    argv = [str(toy_model_dir), "--src", str(tmp_path / "src.en"), "--threads", "1", "--no-ceiling"]
    greedy = script.main(argv + ["--beam", "1", "--out", str(tmp_path / "greedy.json")])
    translations = Translator.load(toy_model_dir).translate(sources, beam=1)
    assert greedy["sentences"] == 4
    assert greedy["hypothesis_rows"] == sum(len(t.tokens) + 1 for t in translations)
    assert json.loads((tmp_path / "greedy.json").read_text(encoding="utf-8"))["hypothesis_rows"] == greedy["hypothesis_rows"]
    beam = script.main(argv + ["--beam", "3", "--out", str(tmp_path / "beam.json")])
    assert beam["hypothesis_rows"] > greedy["hypothesis_rows"]
    assert beam["mflop_per_sentence"] > greedy["mflop_per_sentence"] > 0
    for report in (greedy, beam):  # the clocked parts add up to the run's time
        parts = ("encode_ms_per_sentence", "step_ms_per_sentence", "outside_model_ms_per_sentence")
        assert all(report[part] > 0 for part in parts)
        rounding = 1e3 * 0.005 / report["sentences"] + 0.002  # "seconds" is rounded to 0.01, each part to 0.001 ms
        assert sum(report[part] for part in parts) == pytest.approx(1e3 * report["seconds"] / report["sentences"], abs=rounding)
        # every step is counted in the bucket of its number of rows: four sentences start in one of 2-8 rows
        assert sum(bucket["steps"] for bucket in report["steps_by_rows"].values()) == report["decoder_steps"]
        assert set(report["steps_by_rows"]) <= {"1", "2-8", "9-32"} and report["steps_by_rows"]["2-8"]["steps"] >= 1


def test_decode_profile_counts_a_shortlisted_model_as_the_model_itself(toy_model_dir, tmp_path):
    """With --shortlist (here one holding every piece, so the translations are the same) the counter
    sees the same steps and rows through the wrapper."""
    script = load_script("decode_profile")
    model_dir = copy_with_every_piece_shortlisted(toy_model_dir, tmp_path / "model")
    (tmp_path / "src.en").write_text("one two three\nfour\nten ten\n", encoding="utf-8")
    argv = [str(model_dir), "--src", str(tmp_path / "src.en"), "--threads", "1", "--no-ceiling", "--beam", "3"]
    plain = script.main(argv + ["--out", str(tmp_path / "plain.json")])
    shortlisted = script.main(argv + ["--shortlist", "--out", str(tmp_path / "shortlisted.json")])
    assert shortlisted["shortlist"] and not plain["shortlist"]
    assert (shortlisted["decoder_steps"], shortlisted["hypothesis_rows"]) == (plain["decoder_steps"], plain["hypothesis_rows"])


@pytest.fixture(scope="module")
def toy_multi30k(tmp_path_factory) -> Path:
    """The toy task laid out as Multi30k is (train, val, test_2016_flickr; en and de; .gz)."""
    import gzip

    from toy import toy_pairs

    folder = tmp_path_factory.mktemp("toy_multi30k")
    for split, count, seed in (("train", 300, 0), ("val", 24, 1), ("test_2016_flickr", 24, 2)):
        pairs = toy_pairs(count, seed=seed)
        for lang, column in (("en", 0), ("de", 1)):
            with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as handle:
                handle.writelines(pair[column] + "\n" for pair in pairs)
    return folder


def test_attention_against_an_aligners_links_shows_a_drift_in_the_second_half():
    against = load_script("diagnostics").attention_against_links
    aligner = [[(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 0), (1, 1)]]
    drifting = [[(0, 0), (1, 1), (1, 2), (2, 3)], [(0, 0), (0, 1)]]  # a word behind from the middle on
    found = against(drifting, aligner, ["a b c d", "e f"])
    assert found["first_half"] == {"aer": 0.0, "precision": 1.0, "recall": 1.0, "links": 3, "aligner_links": 3}
    assert found["second_half"] == {"aer": 1.0, "precision": 0.0, "recall": 0.0, "links": 3, "aligner_links": 3}
    assert found["whole"]["precision"] == 0.5 and found["whole"]["aer"] == 0.5
    assert against(aligner, aligner, ["a b c d", "e f"])["whole"]["aer"] == 0.0


def test_the_diagnostics_coverage_and_shortlist_benchmarks_run_end_to_end(toy_model_dir, toy_multi30k, tmp_path):
    import shutil

    out = tmp_path / "diagnostics.json"
    load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(out),
                                     "--more-seeds", "2"])
    report = json.loads(out.read_text(encoding="utf-8"))
    for split in ("val", "test"):  # the first draw again, then seed 2
        draws = report["omission_draws"][split]["draws"]
        assert list(draws) == ["1", "2"]
        assert draws["1"]["recall"] == pytest.approx(report["controlled"]["omission"][split]["flags"]["untranslated"][
            str(report["chosen_on_val"]["untranslated"])]["recall"], abs=5e-4)
        recalls = [draw["recall"] for draw in draws.values()]
        assert report["omission_draws"][split]["summary"]["recall"]["min"] == min(recalls)
    assert set(report["controlled"]["omission"]) == {"val", "test"}
    assert set(report["controlled"]["omission"]["test"]["flags"]) == {
        "omission", "untranslated", "deletion gain above, every word", "deletion gain above, the largest only"}
    for flag in ("omission", "untranslated", "repetition"):
        assert 0 <= report["test_at_chosen"][flag]["precision"] <= 1
    assert report["free"]["thresholds"] == report["chosen_on_val"]  # free translations flagged at the chosen values
    assert {"log-probability per token (lower: worse)", "largest deletion gain",
            "largest untranslated score"} <= set(report["free"]["auroc"])
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "| deletion_test | flagged |" in out.with_suffix(".md").read_text()
    assert "| test | mean (min–max) |" in out.with_suffix(".md").read_text()
    assert "attention_against_spans" not in report  # the model's own attention chose the spans: nothing to compare

    # the spans chosen by an aligner's links (here one-to-one, as the toy pairs are word for word)
    from attnmt.data.corpus import read_lines
    from attnmt.errors import AlignmentError

    sentences = [line for split in ("val", "test_2016_flickr") for line in read_lines(toy_multi30k / f"{split}.en.gz")]
    links = tmp_path / "links.align"
    links.write_text("".join(" ".join(f"{i}-{i}" for i in range(len(line.split()))) + "\n" for line in sentences))
    out = tmp_path / "spans_from.json"
    load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(out),
                                     "--spans-from", str(links)])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["spans_from"] == str(links) and "omission_draws" not in report
    test_lines = sentences[len(read_lines(toy_multi30k / "val.en.gz")):]
    # every sentence of two words or more has a span to change (one-word ones would lose all)
    assert report["controlled"]["omission"]["test"]["sentences"] == sum(len(line.split()) > 1 for line in test_lines)
    assert f"Controlled spans chosen by {links}." in out.with_suffix(".md").read_text()
    for split in ("val", "test"):
        assert set(report["attention_against_spans"][split]) == {"whole", "first_half", "second_half"}
        whole = report["attention_against_spans"][split]["whole"]
        assert whole["aligner_links"] == sum(len(line.split()) for line in (test_lines if split == "test" else
                                                                              sentences[:-len(test_lines)]))
    assert "| test | second half |" in out.with_suffix(".md").read_text()
    only = tmp_path / "attention_only.json"
    load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(only),
                                     "--spans-from", str(links), "--attention-only"])
    assert json.loads(only.read_text(encoding="utf-8"))["attention_against_spans"] == report["attention_against_spans"]
    assert "controlled" not in json.loads(only.read_text(encoding="utf-8"))
    with pytest.raises(SystemExit):  # nothing to compare the attention with
        load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(only),
                                         "--attention-only"])
    links.write_text("".join(" ".join(f"{i}-{i + 1}" for i in range(len(line.split()))) + "\n" for line in sentences))
    with pytest.raises(AlignmentError, match="links.align, line 1: a link points at target word"):
        load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(out),
                                         "--spans-from", str(links)])
    links.write_text("0-0\n")
    with pytest.raises(AlignmentError, match="has 1 lines but there are 48 sentence pairs"):
        load_script("diagnostics").main([str(toy_model_dir), "--data", str(toy_multi30k), "--out", str(out),
                                         "--spans-from", str(links)])

    out = tmp_path / "coverage.json"
    load_script("coverage_penalty").main([str(toy_model_dir), "--betas", "0,1", "--data", str(toy_multi30k), "--out", str(out),
                                          "--omission-below", "0.3"])
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = report["models"][0]["betas"]
    assert report["omission_below"] == 0.3
    assert [row["beta"] for row in rows] == [0.0, 1.0] and all(0 <= row["test"]["omission_flag_rate"] <= 1 for row in rows)
    assert all(0 <= row["test"]["untranslated_flag_rate"] <= 1 and "untranslated_flag_rate" not in row["val"] for row in rows)

    model = tmp_path / "model"
    shutil.copytree(toy_model_dir, model)
    out = tmp_path / "shortlist.json"
    load_script("shortlist").main([str(model), "--k", "40", "--methods", "cooccurrence", "--precisions", "fp32",
                                   "--data", str(toy_multi30k), "--work", str(tmp_path / "work"), "--out", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    shortlisted = [row for row in rows if row["shortlist"]]
    assert len(rows) == 4 and len(shortlisted) == 2
    assert all(row["bleu_difference"] == 0.0 for row in shortlisted)  # k = 40: every piece of the toy vocabulary


def test_the_variants_benchmark_averages_and_ensembles(toy_multi30k, tmp_path):
    from attnmt.training import train

    model_dirs = []
    for seed in (1, 2):
        config = toy_config(str(toy_multi30k / "train"), str(toy_multi30k / "val"), seed=seed, max_steps=60,
                            valid_every=20, keep_checkpoints=3)
        model_dirs.append(tmp_path / f"seed{seed}")
        train(config, model_dirs[-1], progress=False, log=lambda message: None)
    out = tmp_path / "variants.json"
    load_script("multi30k_variants").main([*map(str, model_dirs), "--average-last", "2,3", "--data", str(toy_multi30k),
                                           "--work", str(tmp_path / "work"), "--out", str(out)])
    names = [variant["name"] for variant in json.loads(out.read_text(encoding="utf-8"))["variants"]]
    assert names[:3] == ["seed1", "seed1, average of the last 2", "seed1, average of the last 3"]
    assert names[-1].startswith("ensemble of 2: ") and len(names) == 7


def test_the_onnx_benchmark_compares_the_runtimes_on_the_same_sentences(toy_model_dir, toy_multi30k, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx.json"
    load_script("onnx_export").main([str(toy_model_dir), "--threads", "1", "--data", str(toy_multi30k),
                                     "--work", str(tmp_path / "work"), "--out", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [(row["runtime"], row["beam"]) for row in rows] == [
        (runtime, beam) for beam in (1, 5) for runtime in ("torch fp32", "torch int8", "onnxruntime fp32")]
    exported = [row for row in rows if row["runtime"] == "onnxruntime fp32"]
    assert all(row["identical_to_torch_fp32"] == 1.0 and row["max_log_prob_difference"] < 1e-3 for row in exported)
    assert "| onnxruntime fp32 | beam 5 |" in out.with_suffix(".md").read_text(encoding="utf-8")


def test_search_backends_gives_the_same_digests_with_a_shortlist_of_every_piece(toy_model_dir, toy_multi30k, tmp_path,
                                                                                 capsys):
    """The digests are what shows two ways of decoding give the same output: a shortlist holding every
    piece must give the full vocabulary's translations, setting by setting. (Their scores may differ
    in the 7th decimal, the output layer computed over the shortlist's own columns, and so straddle
    the digest's rounding of scores: the texts' digests are compared.)"""
    script = load_script("search_backends")
    model_dir = copy_with_every_piece_shortlisted(toy_model_dir, tmp_path / "model")
    rows = []
    for extra in ([], ["--shortlist"]):
        script.main([str(model_dir), "--threads", "1", "--data", str(toy_multi30k), *extra])
        rows.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
    plain, shortlisted = rows
    assert (plain["shortlist"], shortlisted["shortlist"]) == (False, True)
    digests = [key for key in plain if key.endswith("_text_digest")]
    assert len(digests) == 4 and all(plain[key] == shortlisted[key] for key in digests)


def test_the_alignment_benchmark_reads_each_model_and_combines_them_word_by_word(
        toy_model_dir, toy_reverse_model_dir, toy_multi30k, tmp_path):
    pytest.importorskip("eflomal", reason="the benchmark's comparator is eflomal (pip install -e '.[align]')")
    from toy import toy_pairs

    gold = tmp_path / "gold"  # the toy's word-for-word pairs as "gold": each word linked to its translation
    pairs = toy_pairs(8, seed=5)
    (tmp_path / "gold.en").write_text("".join(source + "\n" for source, _ in pairs), encoding="utf-8")
    (tmp_path / "gold.fr").write_text("".join(target + "\n" for _, target in pairs), encoding="utf-8")  # German
    (tmp_path / "gold.gold").write_text("".join(" ".join(f"{i}-{i}" for i in range(len(source.split()))) + "\n"
                                                for source, _ in pairs), encoding="utf-8")
    config = tmp_path / "toy.yaml"
    config.write_text(toy_config(str(toy_multi30k / "train"), str(toy_multi30k / "val")).to_yaml(), encoding="utf-8")
    out = tmp_path / "alignment.json"
    both = f"{toy_model_dir}:{toy_model_dir}"  # the model combined with itself: the same scores, the same links
    module = load_script("alignment")
    module.main([str(toy_model_dir), both, "--reverse", str(toy_reverse_model_dir), "--reverse",
                 f"{toy_reverse_model_dir}:{toy_reverse_model_dir}", "--config", str(config), "--gold", str(gold),
                 "--data", str(toy_multi30k), "--out", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))["systems"]
    assert rows[0]["system"] == "eflomal, grow-diag-final-and" and 0 <= rows[0]["aer"] <= 100
    alone = [row for row in rows if row.get("model") == str(toy_model_dir)]
    combined = [row for row in rows if row.get("model") == both]
    assert len(alone) == len(module.READINGS) + len(module.TWO_WAY_READINGS)
    assert len(combined) == len(module.TWO_WAY_READINGS)  # models joined by colons: only the two-way readings
    assert [row["aer"] for row in combined] == [row["aer"] for row in alone[-len(combined):]]
    assert all(len(row["test_bleu_beam5"]) == 2 and row["test_bleu_beam5"][0] == alone[0]["test_bleu_beam5"]
               for row in combined)  # each member's BLEU
    assert combined[0]["aer"] == 0.0  # word for word: the product of attention, argmax both ways, finds every link
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| system | AER | precision | recall |" in table and " and " in table and " · " in table
