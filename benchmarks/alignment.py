"""Alignment error rate against human gold alignments: eflomal and attnmt's attention, on the same data.

    python benchmarks/alignment.py runs/multi30k/en_fr_s43 runs/multi30k/en_fr_s43_guided
    python benchmarks/alignment.py runs/multi30k/en_fr_guided --reverse runs/multi30k/fr_en_guided \
        --teacher runs/align/train.align      # both directions; the guided models' own training links
    python benchmarks/alignment.py runs/multi30k/en_fr_a:runs/multi30k/en_fr_b \
        --reverse runs/multi30k/fr_en_a:runs/multi30k/fr_en_b   # two models a direction, word by word

Gold: the English–French Hansards sentences of ``$ATTNMT_DATA/align`` (147 pairs, 0-indexed links,
``i-j`` sure and ``ipj`` possible; see its README). Out of domain for Multi30k's image captions, and
pre-tokenized and lowercased, as distributed: both aligners see them as they are.

- eflomal (``attnmt eflomal``): both directions on Multi30k en–fr train plus the gold sentences
  appended (the usual transductive setting: aligners are run on the text they align; the gold links
  are never used), symmetrised with grow-diag-final-and;
- each attnmt model given (en→fr, trained on the same text: Multi30k train with the gold sentences'
  text appended, the gold links never used; e.g. without and with ``train.guided_alignment``, whose
  training alignments are that same eflomal run's, gold sentences included): forced decoding of each
  gold pair, each target piece linked to the source piece it attends to most, two words linked if
  any of their pieces are, ``</s>`` excluded; the attention read from the decoder step that writes
  the piece (Luong attention comes from hₜ, the state that emits yₜ) or from the step after it
  (``shift``, Chen et al. 2020), and with only the links that are the argmax both ways; and, for
  comparison, ``attnmt align``'s default (pieces' attention merged into words, then one link per
  target word); not from attention, the deletion test (``deletion_only``: each target piece linked
  to the source word whose deletion from the source lowers its log-probability most, Li et al.
  2019's prediction difference); and the two together (``by_deletion``: the attention a piece gave
  a word times the drop), one way and both ways;
- with ``--reverse`` (a fr→en model trained the same way, beside the en→fr model in the same place),
  both directions at once (``Translator.align(reverse=...)``): each pair of words scored by the
  product of the two models' scores (attention, or attention × drop), each target word linked to the
  source word with the largest product, one way and both ways; models joined by colons (on either
  side) are combined word by word: each scores every pair of words and a direction's scores are
  averaged before the product (``Translator.align(also=...)``; vocabularies may differ);
- with ``--teacher`` (the alignment file the guided models trained with, the gold sentences' lines
  last), the AER of those very links: the eflomal run the guided models learnt from (eflomal takes
  no seed, and the run above is another);
- the BLEU of each model on test_2016_flickr (beam 5, cased and lowercased).

AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|); precision counts against sure and possible links, recall
against sure links only. Writes ``--out`` (default docs/results/alignment_en_fr.json) and its Markdown twin.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from common import (
    REPO,
    RESULTS,
    attnmt_command,
    command_line,
    data_dir,
    machine,
    multi30k_dir,
    scored_translation,
    write_json,
)

from attnmt.data.alignments import read_alignments, read_links
from attnmt.data.corpus import read_lines
from attnmt.explain.alignment import alignment_error_rate, check_gold_fits
from attnmt.translator import Translator

READINGS = {  # how links are read off attention (Translator.align); pieces linked first, words by any piece
    "the step that writes the word": {"by_pieces": True},
    "the step after it (shift)": {"shift": True, "by_pieces": True},
    "argmax both ways": {"both_ways": True, "by_pieces": True},
    "argmax both ways, shifted": {"shift": True, "both_ways": True, "by_pieces": True},
    "word-level attention (attnmt align's default)": {},
    "not attention: the deletion test (prediction difference)": {"by_deletion": True, "deletion_only": True},
    "not attention: the deletion test, both ways": {"by_deletion": True, "deletion_only": True, "both_ways": True},
    "attention x the deletion test's drop": {"by_deletion": True},
    "attention x the deletion test's drop, both ways": {"by_deletion": True, "both_ways": True},
}
TWO_WAY_READINGS = {  # with a fr→en model beside the en→fr one (Translator.align(reverse=...))
    "both directions: the product of their attention, argmax both ways": {"both_ways": True},
    "both directions: the product of their attention x drop": {"by_deletion": True},
    "both directions: the product of their attention x drop, argmax both ways": {"by_deletion": True, "both_ways": True},
}


def score(links, gold) -> dict:
    result = alignment_error_rate(links, gold)
    return {"aer": round(100 * result.aer, 2), "precision": round(100 * result.precision, 2),
            "recall": round(100 * result.recall, 2), "links": result.links}


def eflomal_score(config: Path, multi30k: Path, gold_src: Path, gold_trg: Path, gold) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out, extra = Path(work) / "train.align", Path(work) / "gold.align"
        command = attnmt_command("eflomal", str(config), "--set", f"data.train={multi30k}/train", "--set",
                                 f"data.valid={multi30k}/val", "--out", str(out), "--extra-src", str(gold_src),
                                 "--extra-trg", str(gold_trg), "--extra-out", str(extra))
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            raise SystemExit(f"attnmt eflomal failed:\n{finished.stderr[-3000:]}")
        links = read_links(extra)
    return {"system": "eflomal, grow-diag-final-and", **score(links, gold)}


def model_scores(model_dir: Path, sources: list[str], targets: list[str], gold, multi30k: Path,
                 reverse_dir: Path | None = None) -> list[dict]:
    translator, *also = load(model_dir)
    if also and reverse_dir is None:
        raise SystemExit(f"{model_dir}: models joined by colons are read together with a --reverse model")
    src, trg = translator.config.data.src_lang, translator.config.data.trg_lang
    test_src, test_ref = read_lines(multi30k / f"test_2016_flickr.{src}.gz"), read_lines(multi30k / f"test_2016_flickr.{trg}.gz")
    bleu = [scored_translation(model, test_src, test_ref, beam=5)[1] for model in (translator, *also)]
    guided = bool(translator.config.train.guided_alignment)
    # models joined by colons combine only in the two-way reading (Translator.align(also=...))
    readings = [] if also else [(reading, options, "") for reading, options in READINGS.items()]
    if reverse_dir is not None:
        reverse = load(reverse_dir)
        readings += [(reading, {**options, "reverse": reverse, "also": also}, f" with {label(reverse_dir)}")
                     for reading, options in TWO_WAY_READINGS.items()]
    rows = []
    for reading, options, beside in readings:
        links = [a.links for a in translator.align(sources, targets, **options)]
        rows.append({"system": f"attnmt {label(model_dir)}{' (guided alignment)' if guided else ''}{beside}, {reading}",
                     "model": str(model_dir), **score(links, gold),
                     **{key: [scores[name] for scores in bleu] if also else bleu[0][name]
                        for key, name in (("test_bleu_beam5", "bleu"), ("test_bleu_beam5_lowercased", "bleu_lowercased"))}})
        print(rows[-1], flush=True)
    return rows


def load(model_dirs: Path) -> list[Translator]:
    """A model directory, or several joined by commas: an ensemble (attnmt.model.ensemble); groups
    joined by colons: models read one by one and combined word by word (``Translator.align(also=...)``;
    their vocabularies may differ)."""
    translators = []
    for group in str(model_dirs).split(":"):
        first, *others = group.split(",")
        translators.append(Translator.load(first, ensemble=others))
    return translators


def label(model_dirs: Path) -> str:
    """Directory names: an ensemble's joined by " + ", models combined word by word by " and "."""
    return " and ".join(" + ".join(Path(path).name for path in group.split(",")) for group in str(model_dirs).split(":"))


def teacher_score(path: Path, gold) -> dict:
    """The guided models' own training links for the gold sentences: the last len(gold) lines of the
    alignment file they trained with (an eflomal run of its own; eflomal takes no seed)."""
    links = read_links(path)[-len(gold):]
    return {"system": f"eflomal, grow-diag-final-and: the guided models' training links ({path})", **score(links, gold)}


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']['cpu']}. Command: `{report['command']}`", "",
             "| system | AER | precision | recall | links | test_2016_flickr BLEU beam 5, cased / lc (each model of an 'and') |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["systems"]:
        bleu = " · ".join(f"{cased} / {lowercased}" for cased, lowercased in zip(
            *(row[key] if isinstance(row[key], list) else [row[key]] for key in ("test_bleu_beam5", "test_bleu_beam5_lowercased"))
        )) if "test_bleu_beam5" in row else ""
        lines.append(f"| {row['system']} | {row['aer']} | {row['precision']} | {row['recall']} | {row['links']} | {bleu} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", type=Path, nargs="*",
                        help="en→fr attnmt models (an ensemble: its directories joined by commas; models combined "
                             "word by word, with --reverse: joined by colons)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "multi30k_en_fr.yaml")
    parser.add_argument("--gold", type=Path, default=data_dir() / "align" / "hansards_enfr.dev")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--reverse", type=Path, action="append", default=[],
                        help="a fr→en model (an ensemble: joined by commas; combined word by word: by colons), "
                             "read together with the en→fr "
                             "model in the same place of model_dirs (repeat: the first --reverse goes with the "
                             "first model, ...)")
    parser.add_argument("--teacher", type=Path,
                        help="the alignment file the guided models trained with, the gold sentences' lines last: "
                             "their AER too")
    parser.add_argument("--out", type=Path, default=RESULTS / "alignment_en_fr.json")
    args = parser.parse_args(argv)
    gold_src, gold_trg = Path(f"{args.gold}.en"), Path(f"{args.gold}.fr")
    gold = read_alignments(f"{args.gold}.gold")
    sources, targets = read_lines(gold_src), read_lines(gold_trg)
    check_gold_fits(gold, [len(s.split()) for s in sources], [len(t.split()) for t in targets], f"{args.gold}.gold")
    systems = [eflomal_score(args.config, args.data, gold_src, gold_trg, gold)]
    if args.teacher is not None:
        systems.append(teacher_score(args.teacher, gold))
    print(*systems, sep="\n", flush=True)
    if len(args.reverse) > len(args.model_dirs):
        raise SystemExit(f"{len(args.reverse)} --reverse models but {len(args.model_dirs)} en→fr models")
    for index, model_dir in enumerate(args.model_dirs):
        reverse = args.reverse[index] if index < len(args.reverse) else None
        systems += model_scores(model_dir, sources, targets, gold, args.data, reverse)
    report = {"machine": machine(), "command": command_line("alignment.py", argv),
              "gold": str(args.gold), "sentences": len(gold), "systems": systems}
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
