"""The command line, end to end: train, translate, evaluate, plot and align in real subprocesses, and
the analysis commands also in this process (``cli_here``), where interpreter start-up would dominate."""

import subprocess
import sys

import pytest

from attnmt.cli import main
from attnmt.evaluate import score_corpus
from attnmt.translator import Translator
from toy import toy_config, toy_pairs, write_toy_corpus


def attnmt(*args, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "attnmt", *map(str, args)], input=stdin, capture_output=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"attnmt {' '.join(map(str, args))} failed:\n{result.stderr.decode()}")
    return result


def test_train_translate_evaluate_plot_round_trip(tmp_path):
    train_prefix, valid_prefix = write_toy_corpus(tmp_path / "data", n_train=400)
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(toy_config(train_prefix, valid_prefix, max_steps=120).to_yaml(), encoding="utf-8")
    model_dir = tmp_path / "model"

    prepared = attnmt("prepare", config_path, "--model-dir", model_dir).stderr.decode()
    assert "400 training pairs ready in" in prepared and not (model_dir / "config.yaml").exists()
    trained = attnmt("train", config_path, "--model-dir", model_dir, "--set", "train.max_steps=150")
    assert "150 steps" in trained.stderr.decode()
    assert "reusing src.spm.model, trg.spm.model" in trained.stderr.decode()  # what prepare made
    assert "is reused" in trained.stderr.decode()
    assert (model_dir / "model.safetensors").exists()

    sources = ["one two three four", "", "five six seven eight nine", "   ", "ten one two three"]
    source = tmp_path / "test.en"
    source.write_text("".join(line + "\n" for line in sources), encoding="utf-8")
    expected = [t.text for t in Translator.load(model_dir).translate(sources, beam=3)]
    assert expected[1] == expected[3] == "" and all(expected[i] for i in (0, 2, 4))
    output = tmp_path / "test.hyp"
    attnmt("translate", model_dir, "-i", source, "-o", output, "--beam", "3")
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines == expected + [""]  # five lines, each ended by a newline, empty ones in place

    piped = attnmt("translate", model_dir, "--beam", "3", stdin=source.read_bytes())
    assert piped.stdout.decode("utf-8") == output.read_text(encoding="utf-8")

    reference = tmp_path / "test.de"
    reference.write_text("eins zwei drei vier\n\nfünf sechs sieben acht neun\n\nzehn eins zwei drei\n", encoding="utf-8")
    expected_bleu = score_corpus(expected, reference.read_text(encoding="utf-8").split("\n")[:-1])[0]
    scores = attnmt("evaluate", "--hyp", output, "--ref", reference).stdout.decode()
    assert f"BLEU = {expected_bleu.value:.2f}" in scores and "nrefs:1|case:mixed" in scores and "chrF2" in scores
    by_model = attnmt("evaluate", "--model", model_dir, "--src", source, "--ref", reference, "--lowercase").stdout.decode()
    assert "BLEU = " in by_model and "case:lc" in by_model
    itself = attnmt("evaluate", "--hyp", reference, "--ref", reference).stdout.decode()
    assert "BLEU = 100.00" in itself

    for name in ("heatmap.png", "heatmap.svg"):
        plotted = attnmt("plot", model_dir, "one two three", "-o", tmp_path / name, "--words")
        assert Translator.load(model_dir).translate(["one two three"])[0].text in plotted.stdout.decode()
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "heatmap.svg").read_bytes()[:2000]


def test_user_errors_are_one_clear_line_not_a_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  hiden_size: 3\n", encoding="utf-8")
    result = attnmt("train", config, "--model-dir", tmp_path / "m", check=False)
    message = result.stderr.decode()
    assert result.returncode == 1
    assert "unknown key 'model.hiden_size'" in message and "Traceback" not in message

    missing = attnmt("translate", tmp_path / "no-model", stdin=b"hello\n", check=False)
    assert missing.returncode == 1 and "config.yaml is missing" in missing.stderr.decode()


def test_invalid_utf8_input_names_the_line(toy_model_dir, tmp_path):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"one\ntwo \xff three\n")
    result = attnmt("translate", toy_model_dir, "-i", bad, check=False)
    assert result.returncode == 1 and "bad.en" in result.stderr.decode() and "line 2" in result.stderr.decode()
    replaced = attnmt("translate", toy_model_dir, "-i", bad, "--encoding-errors", "replace")
    assert len(replaced.stdout.decode().split("\n")) == 3


@pytest.mark.parametrize("argv", [["--help"], ["translate", "--help"], ["--version"]])
def test_help_and_version(argv):
    assert attnmt(*argv).returncode == 0


def cli_here(capsys, *args) -> tuple[int, str, str]:
    """``attnmt ARGS`` run in this process: (exit code, stdout, stderr), as a subprocess would give them."""
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:  # a message instead of a code: Python prints it and exits with 1
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_align_scores_hand_made_files_with_aer(tmp_path):
    gold, predicted = tmp_path / "gold.align", tmp_path / "predicted.align"
    # sentence 1: S = {0-0, 1-1}, P = S + {2-2, 2-3}; sentence 2: S = P = {0-1, 1-0, 2-2}
    gold.write_text("0-0 1-1 2-2p 2-3p\n0-1 1-0 2-2\n", encoding="utf-8")
    # 0-0 sure, 1-2 wrong, 2-2 possible | 0-1 sure, 1-1 wrong: |A| = 5, |S| = 5, |A∩S| = 2, |A∩P| = 3
    predicted.write_text("0-0 1-2 2-2\n0-1 1-1\n", encoding="utf-8")
    aer, precision, recall = 1 - (2 + 3) / (5 + 5), 3 / 5, 2 / 5
    printed = attnmt("align", "--hyp", predicted, "--gold", gold).stdout.decode()
    assert printed.startswith(f"AER = {100 * aer:.2f}%  precision = {100 * precision:.2f}%  recall = {100 * recall:.2f}%")

    predicted.write_text("0-0 1-1\n0-1 1-0 2-2 7x\n", encoding="utf-8")
    broken = attnmt("align", "--hyp", predicted, "--gold", gold, check=False)
    assert broken.returncode == 1 and "predicted.align, line 2: cannot read the link '7x'" in broken.stderr.decode()
    assert "Traceback" not in broken.stderr.decode()


def test_align_a_model_writes_pharaoh_lines_and_scores_them(toy_model_dir, tmp_path, capsys):
    sources = ["one two three", "seven eight", "four five six seven", ""]
    targets = ["eins zwei drei", "sieben acht", "vier fünf sechs sieben", ""]
    src, trg = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    trg.write_text("".join(t + "\n" for t in targets), encoding="utf-8")
    expected = [a.pharaoh() for a in Translator.load(toy_model_dir).align(sources, targets)]
    written = attnmt("align", toy_model_dir, "--src", src, "--trg", trg).stdout
    assert written.decode().split("\n") == expected + [""]  # one line per pair, the empty pair's empty

    # word for word, with "drei" possibly aligned to "two" as well: a hand-made gold file
    gold = tmp_path / "gold.align"
    gold.write_text("0-0 1-1 2-2 1-2p\n0-0 1-1\n0-0 1-1 2-2 3-3\n\n", encoding="utf-8")
    predicted = [set(tuple(map(int, link.split("-"))) for link in line.split()) for line in expected]
    sure = [{(0, 0), (1, 1), (2, 2)}, {(0, 0), (1, 1)}, {(0, 0), (1, 1), (2, 2), (3, 3)}, set()]
    possible = [sure[0] | {(1, 2)}] + sure[1:]
    hits_sure = sum(len(a & s) for a, s in zip(predicted, sure))
    hits_possible = sum(len(a & p) for a, p in zip(predicted, possible))
    aer = 1 - (hits_sure + hits_possible) / (sum(map(len, predicted)) + sum(map(len, sure)))
    output = tmp_path / "model.align"
    code, scored, _ = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg, "--gold", gold, "-o", output)
    assert code == 0 and scored.startswith(f"AER = {100 * aer:.2f}%") and "4 sentences" in scored
    assert aer <= 0.2  # the toy model's attention is word for word
    assert output.read_text(encoding="utf-8").split("\n") == expected + [""]

    by_deletion = [a.pharaoh() for a in Translator.load(toy_model_dir).align(sources, targets, by_deletion=True,
                                                                               both_ways=True)]
    assert by_deletion[:3] == ["0-0 1-1 2-2", "0-0 1-1", "0-0 1-1 2-2 3-3"]  # word for word, read another way
    written = attnmt("align", toy_model_dir, "--src", src, "--trg", trg, "--by-deletion").stdout
    assert written.decode().split("\n") == by_deletion + [""]

    gold.write_text("0-0 1-1 2-2\n0-0 1-1\n1-1 2-2 3-3 4-4\n\n", encoding="utf-8")  # 1-based by mistake
    code, _, error = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg, "--gold", gold)
    assert code == 1 and "gold.align, line 3: a link points at source word 4, but the pair has 4 source words" in error


def test_evaluate_by_length_tables_and_plots_two_models(toy_model_dir, toy_none_model_dir, tmp_path, capsys):
    pairs = toy_pairs(60, seed=123, max_words=5)
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    ref.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    plot = tmp_path / "by_length.png"
    code, printed, _ = cli_here(capsys, "evaluate", "--model", toy_model_dir, "--model", toy_none_model_dir, "--src", src,
                                "--ref", ref, "--beam", "1", "--by-length", "--bucket-width", "2", "--min-bucket", "10",
                                "--plot", plot)
    assert code == 0
    table = [line for line in printed.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == ["source words", "sentences", f"{toy_model_dir} BLEU", f"{toy_model_dir} chrF2",
                      f"{toy_none_model_dir} BLEU", f"{toy_none_model_dir} chrF2"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert rows[-1][:2] == ["all", "60"]
    assert sum(int(row[1]) for row in rows[:-1]) == 60 and all(int(row[1]) >= 10 for row in rows[:-1])
    assert "BLEU: nrefs:1" in printed and "chrF2: nrefs:1" in printed
    # each bucket is scored as a corpus of its own: recompute the first model's BLEU on each bucket
    outputs = [t.text for t in Translator.load(toy_model_dir).translate([s for s, _ in pairs], beam=1)]
    for row in rows[:-1]:
        low, _, high = row[0].partition("–")
        inside = [i for i, (s, _) in enumerate(pairs) if int(low) <= len(s.split()) <= int(high or low)]
        assert len(inside) == int(row[1])
        [bleu] = score_corpus([outputs[i] for i in inside], [pairs[i][1] for i in inside], metrics=("bleu",))
        assert row[2] == f"{bleu.value:.2f}"
    assert png_size(plot)[0] > 500

    code, _, error = cli_here(capsys, "evaluate", "--hyp", ref, "--ref", ref, "--by-length")
    assert code == 1 and "--by-length needs --src" in error
    code, printed, _ = cli_here(capsys, "evaluate", "--hyp", ref, "--hyp", src, "--ref", ref)
    assert printed.splitlines()[:2] == [str(ref), f"BLEU = 100.00  ({score_corpus(['a'], ['a'])[0].signature})"]


def test_plot_draws_several_sentences_side_by_side(toy_model_dir, tmp_path, capsys):
    one, two, stacked = tmp_path / "one.png", tmp_path / "two.png", tmp_path / "stacked.png"
    assert cli_here(capsys, "plot", toy_model_dir, "one two three", "-o", one, "--words")[0] == 0
    code, printed, _ = cli_here(capsys, "plot", toy_model_dir, "one two three", "four five", "-o", two, "--words")
    texts = [t.text for t in Translator.load(toy_model_dir).translate(["one two three", "four five"])]
    assert code == 0 and printed.splitlines()[:2] == texts
    (one_width, one_height), (two_width, two_height) = png_size(one), png_size(two)
    assert two_width > 1.6 * one_width and two_height < 1.3 * one_height  # side by side, not stacked
    assert cli_here(capsys, "plot", toy_model_dir, "one two three", "four five", "-o", stacked, "--columns", "1")[0] == 0
    assert png_size(stacked)[1] > 1.6 * one_height


def test_align_with_a_reverse_model_reads_both_directions(toy_model_dir, toy_reverse_model_dir, tmp_path, capsys):
    src, trg = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("one two three\nseven eight\n\n", encoding="utf-8")
    trg.write_text("eins zwei drei\nsieben acht\n\n", encoding="utf-8")
    for extra in ([], ["--by-deletion"]):
        code, written, _ = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg,
                                    "--reverse-model", toy_reverse_model_dir, *extra)
        assert code == 0 and written.split("\n") == ["0-0 1-1 2-2", "0-0 1-1", "", ""]
    # each direction an ensemble (here of a model with itself: the same scores, so the same links)
    code, written, _ = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg, "--ensemble", toy_model_dir,
                                "--reverse-model", toy_reverse_model_dir, "--reverse-ensemble", toy_reverse_model_dir)
    assert code == 0 and written.split("\n") == ["0-0 1-1 2-2", "0-0 1-1", "", ""]
    # more models a direction, combined word by word (here each model twice: the same mean, the same links)
    code, written, _ = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg, "--also", toy_model_dir,
                                "--reverse-model", toy_reverse_model_dir, "--reverse-also", toy_reverse_model_dir)
    assert code == 0 and written.split("\n") == ["0-0 1-1 2-2", "0-0 1-1", "", ""]
    code, _, error = cli_here(capsys, "align", toy_model_dir, "--src", src, "--trg", trg, "--also", toy_model_dir)
    assert code != 0 and "--also and --reverse-also go with --reverse-model" in error
    wrong_way = attnmt("align", toy_model_dir, "--src", src, "--trg", trg, "--reverse-model", toy_model_dir, check=False)
    assert wrong_way.returncode != 0 and "must translate de→en" in wrong_way.stderr.decode()
    assert "Traceback" not in wrong_way.stderr.decode()


def test_plot_and_align_refuse_a_model_without_attention(toy_none_model_dir, tmp_path, capsys):
    code, _, error = cli_here(capsys, "plot", toy_none_model_dir, "one two", "-o", tmp_path / "a.png")
    assert code == 1 and "has no attention (model.attention: none)" in error
    assert not (tmp_path / "a.png").exists()
    (tmp_path / "s").write_text("one\n", encoding="utf-8")
    (tmp_path / "t").write_text("eins\n", encoding="utf-8")
    code, _, error = cli_here(capsys, "align", toy_none_model_dir, "--src", tmp_path / "s", "--trg", tmp_path / "t")
    assert code == 1 and "has no attention (model.attention: none)" in error


def test_subcommands_that_need_no_model_never_import_torch(tmp_path):
    """``data``, ``evaluate --hyp`` and ``align --hyp`` run without the model stack: torch (and with it
    the training code) is not even imported, so they start fast and work where torch is not installed."""
    (tmp_path / "hyp.txt").write_text("ein Mann\nzwei Hunde\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("ein Mann\nzwei Katzen\n", encoding="utf-8")
    (tmp_path / "links.txt").write_text("0-0 1-1\n0-0\n", encoding="utf-8")
    (tmp_path / "gold.txt").write_text("0-0 1-1\n0-0 1p1\n", encoding="utf-8")
    source = tmp_path / "multi30k"
    source.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            (source / f"{split}.{lang}").write_text("a line\n", encoding="utf-8")
    commands = [
        ["evaluate", "--hyp", tmp_path / "hyp.txt", "--ref", tmp_path / "ref.txt"],
        ["align", "--hyp", tmp_path / "links.txt", "--gold", tmp_path / "gold.txt"],
        ["data", "multi30k", "--pair", "en-de", "--out", tmp_path / "out", "--from", source],
    ]
    program = ("import sys\nfrom attnmt.cli import main\ncode = main(sys.argv[1:])\n"
               "print('torch imported' if 'torch' in sys.modules else 'no torch', code)")
    for command in commands:
        result = subprocess.run([sys.executable, "-c", program, *map(str, command)], capture_output=True, text=True,
                                timeout=120)
        assert result.stdout.splitlines()[-1].startswith("no torch"), (command, result.stdout, result.stderr)
