"""Do the diagnostics mean something? Three measurements on Multi30k with one model.

    python benchmarks/diagnostics.py runs/multi30k/en_de_s42 --more-seeds 2,3,4,5,6,7,8 \
        --out docs/results/diagnostics_en_de.json

1. Controlled omissions and repetitions. Each reference is force-decoded (``Translator.align``: the
   model's own word alignment of it; ``--spans-from``: an aligner's links instead, which do not share
   the attention's errors with the attention's flags and the attended regret); one source word that
   has letters or digits (not a punctuation token) and whose aligned target words form one
   contiguous span is chosen at random (seeded).
   *Omission*: the span is deleted from the reference and the shortened reference force-decoded; the
   omission flags (attention: coverage below a threshold) and the untranslated flag (the deletion
   test: the source word with the largest deletion gain plus attended regret, if above a threshold;
   beside it, the deletion gain alone, every word above a threshold or the largest only) should
   point at exactly the source words whose translation was removed (those all of whose aligned
   target words were deleted). *Repetition*: the span is repeated right after itself;
   the over-attention flags should point at the source words all of whose aligned target words lie
   in the span. Precision and recall, summed over sentences, for a range of thresholds; each flag's
   threshold is the one with the best F1 on val, and test is scored at it. As a baseline, the flags
   the unchanged references raise (every one of them a false positive of the test). With
   ``--more-seeds``, the omissions are drawn again with each seed (another word of each sentence)
   and the untranslated flag scored at the chosen threshold: the spread between draws.
   With ``--spans-from``, also the agreement of the model's attention alignment of the unchanged
   references with those links (AER, precision, recall; whole references and each half of them):
   whether the attention the flags read can be trusted on this model.
2. Free translations (beam 5, flags at the thresholds chosen on val): BLEU and chrF of the sentences
   with a flag against those without, for the attention's flags and for the deletion test's.
3. The signals as detectors of bad translations (sentence chrF below ``--bad-chrf``): the AUROC of
   the smallest coverage, the largest coverage, the number of flagged words, the mean entropy, the
   mean attention on </s>, the largest deletion gain and untranslated score, beside that of the
   log-probability per token
   (Guerreiro et al. 2023's strongest baseline). An AUROC of 0.5 is chance; each signal is oriented
   so that larger means worse.

Writes ``--out``, its Markdown twin and a figure (``.png``).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from common import RESULTS, command_line, machine, multi30k_dir, write_json

from attnmt.data.alignments import GoldAlignment, read_alignments
from attnmt.data.corpus import read_lines
from attnmt.evaluate import score_corpus
from attnmt.explain.alignment import alignment_error_rate, check_gold_fits
from attnmt.explain.diagnostics import (OMISSION_BELOW, REPETITION_ABOVE, UNTRANSLATED_ABOVE, Diagnostics,
                                        with_deletion_test)
from attnmt.translator import Translator

KINDS = ("omission", "repetition")  # of controlled change
UNTRANSLATED_THRESHOLDS = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)  # nats
FLAGS = {  # flag: (the controlled change it should find, the thresholds tried)
    "omission": ("omission", (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)),  # coverage below
    "untranslated": ("omission", UNTRANSLATED_THRESHOLDS),  # the largest deletion gain + attended regret above
    "deletion gain above, every word": ("omission", UNTRANSLATED_THRESHOLDS),
    "deletion gain above, the largest only": ("omission", UNTRANSLATED_THRESHOLDS),
    "repetition": ("repetition", (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5)),  # coverage above
}
DEFAULTS = {"omission": OMISSION_BELOW, "untranslated": UNTRANSLATED_ABOVE, "repetition": REPETITION_ABOVE}
ATTENTION_FLAGS = ("omission", "repetition")


def controlled_cases(full: list[list[tuple[int, int]]], sources: list[str], references: list[str], kind: str,
                     seed: int) -> list[dict]:
    """For each pair, a changed reference (``kind``: one aligned span deleted, or repeated) and the
    source words the change concerns; ``full`` holds each pair's (source word, target word) links."""
    rng = random.Random(seed)
    cases = []
    for index, (source, reference, links) in enumerate(zip(sources, references, full)):
        src_words, trg_words = source.split(), reference.split()
        by_source: dict[int, list[int]] = {}
        for s, t in links:
            by_source.setdefault(s, []).append(t)
        candidates = [s for s, targets in sorted(by_source.items())
                      if any(character.isalnum() for character in src_words[s])
                      and sorted(targets) == list(range(min(targets), max(targets) + 1))
                      and len(targets) < len(trg_words)]
        if not candidates:
            continue
        chosen = rng.choice(candidates)
        span = sorted(by_source[chosen])
        affected = sorted(s for s, targets in by_source.items() if set(targets) <= set(span))
        if kind == "omission":
            changed = trg_words[: span[0]] + trg_words[span[-1] + 1 :]
        else:
            changed = trg_words[: span[-1] + 1] + trg_words[span[0] : span[-1] + 1] + trg_words[span[-1] + 1 :]
        cases.append({"index": index, "source": source, "reference": reference, "changed": " ".join(changed),
                      "affected": affected})
    return cases


def flags(found: Diagnostics, flag: str, threshold: float) -> set[int]:
    """The source words ``flag`` raises at ``threshold``."""
    if flag == "omission":
        return {j for j, mass in enumerate(found.coverage) if mass < threshold}
    if flag == "repetition":
        return {j for j, mass in enumerate(found.coverage) if mass > threshold}
    gains = found.deletion_gain or []
    if flag == "untranslated":  # the product's rule, at this threshold
        return set(with_deletion_test(found, gains, found.attended_regret or [], threshold).untranslated)
    if flag == "deletion gain above, every word":
        return {j for j, gain in enumerate(gains) if gain > threshold}
    return {int(np.argmax(gains))} if gains and max(gains) > threshold else set()  # the largest gain only


def flag_counts(cases: list[dict], found: list[Diagnostics], flag: str, threshold: float) -> tuple[int, int, int]:
    """(words rightly flagged, words flagged, words affected) of ``flag`` at ``threshold`` over the
    changed references' diagnostics ``found``, summed over the cases."""
    hits = flagged = affected = 0
    for case, diagnostics in zip(cases, found):
        raised, wanted = flags(diagnostics, flag, threshold), set(case["affected"])
        hits, flagged, affected = hits + len(raised & wanted), flagged + len(raised), affected + len(wanted)
    return hits, flagged, affected


def score_controlled(translator: Translator, cases: list[dict], kind: str) -> dict:
    """Precision and recall of each flag that should find ``kind`` at each of its thresholds on the
    changed references, and the flags the unchanged references raise (per sentence)."""
    sources = [c["source"] for c in cases]
    changed = [c["changed"] for c in cases]
    found = translator.diagnose_pairs(sources, changed, deletion_test=kind == "omission")
    unchanged = translator.diagnose_pairs(sources, [c["reference"] for c in cases], deletion_test=kind == "omission")
    result = {}
    for flag, (flag_kind, thresholds) in FLAGS.items():
        if flag_kind != kind:
            continue
        result[flag] = {}
        for threshold in thresholds:
            hits, flagged, affected = flag_counts(cases, found, flag, threshold)
            baseline = sum(len(flags(unchanged_found, flag, threshold)) for unchanged_found in unchanged)
            precision, recall = hits / max(flagged, 1), hits / max(affected, 1)
            result[flag][str(threshold)] = {
                "precision": round(precision, 3), "recall": round(recall, 3),
                "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 3),
                "flags_per_unchanged_reference": round(baseline / max(len(cases), 1), 3)}
    return {"sentences": len(cases), "flags": result}


def omission_draws(translator: Translator, full: list[list[tuple[int, int]]], sources: list[str], references: list[str],
                   seeds: list[int], threshold: float) -> dict:
    """The untranslated flag at ``threshold`` on controlled omissions drawn again with other seeds
    (another source word chosen in each sentence): how much its precision and recall owe to one draw."""
    draws = {}
    for seed in seeds:
        cases = controlled_cases(full, sources, references, "omission", seed)
        found = translator.diagnose_pairs([c["source"] for c in cases], [c["changed"] for c in cases])
        hits, flagged, affected = flag_counts(cases, found, "untranslated", threshold)
        draws[str(seed)] = {"sentences": len(cases), "precision": round(hits / max(flagged, 1), 4),
                            "recall": round(hits / max(affected, 1), 4)}
    return draws


def draw_summary(draws: dict) -> dict:
    """Mean, smallest and largest precision and recall over the draws."""
    return {measure: {"mean": round(float(np.mean(values)), 4), "min": min(values), "max": max(values)}
            for measure in ("precision", "recall") for values in [[d[measure] for d in draws.values()]]}


def spans_links(path: Path, data: dict[str, tuple[list[str], list[str]]]) -> dict[str, list[list[tuple[int, int]]]]:
    """An aligner's links of the val lines, then the test lines (one Pharaoh file, e.g. ``attnmt eflomal
    --extra-src val+test --extra-out FILE``), split by ``data``'s splits; a file that does not fit the
    sentences is an error naming the line (``explain.alignment.check_gold_fits``, as for gold files)."""
    pairs = [pair for sources, references in data.values() for pair in zip(sources, references)]
    alignments = read_alignments(path)
    check_gold_fits(alignments, [len(source.split()) for source, _ in pairs],
                    [len(reference.split()) for _, reference in pairs], str(path))
    links = [sorted(alignment.possible) for alignment in alignments]  # every link, sure or possible (read_links)
    by_split, start = {}, 0
    for split, (sources, _) in data.items():
        by_split[split], start = links[start : start + len(sources)], start + len(sources)
    return by_split


def attention_against_links(attention: list[list[tuple[int, int]]], links: list[list[tuple[int, int]]],
                            references: list[str]) -> dict:
    """How well the model's attention alignment of the unchanged references agrees with an aligner's
    links (taken as sure): AER, precision and recall, over whole references and over the first and the
    second half of each reference's words, where an attention that drifts behind the words it writes
    shows as a second half far below the first. The attention flags and the attended regret are only as
    good as this agreement."""
    lengths = [len(reference.split()) for reference in references]

    def agreement(keep) -> dict:
        def kept(sentences):
            return [[(s, t) for s, t in pairs if keep(t, n)] for pairs, n in zip(sentences, lengths)]
        gold = [GoldAlignment(frozenset(pairs), frozenset(pairs)) for pairs in kept(links)]
        found = alignment_error_rate(kept(attention), gold)
        return {"aer": round(found.aer, 4), "precision": round(found.precision, 4), "recall": round(found.recall, 4),
                "links": found.links, "aligner_links": found.sure}

    return {"whole": agreement(lambda t, n: True), "first_half": agreement(lambda t, n: t < n / 2),
            "second_half": agreement(lambda t, n: t >= n / 2)}


def auroc(scores: list[float], labels: list[bool]) -> float:
    """The probability that a random positive scores above a random negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    values = np.asarray(scores)[order]
    position = 0
    while position < len(values):  # average ranks over ties
        end = position
        while end + 1 < len(values) and values[end + 1] == values[position]:
            end += 1
        ranks[order[position : end + 1]] = (position + end) / 2 + 1
        position = end + 1
    positives = np.asarray(labels, dtype=bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def free_translations(translator: Translator, sources: list[str], references: list[str], bad_chrf: float,
                      thresholds: dict[str, float]) -> dict:
    from sacrebleu.metrics import CHRF

    translations = translator.translate(sources, beam=5)
    started = time.perf_counter()
    diagnostics = translator.diagnose(translations)  # with the deletion test
    deletion_seconds = time.perf_counter() - started
    raised = [{flag: flags(d, flag, thresholds[flag]) for flag in FLAGS} for d in diagnostics]
    outputs = [t.text for t in translations]

    def corpus(indices: list[int]) -> dict:
        if not indices:
            return {"sentences": 0}
        bleu, chrf = score_corpus([outputs[i] for i in indices], [references[i] for i in indices])
        return {"sentences": len(indices), "bleu": round(bleu.value, 2), "chrf": round(chrf.value, 2)}

    def split_by(names: tuple[str, ...]) -> dict:
        flagged = [i for i, found in enumerate(raised) if any(found[name] for name in names)]
        return {"flagged": corpus(flagged), "unflagged": corpus(sorted(set(range(len(sources))) - set(flagged)))}

    chrf = CHRF()
    sentence_chrf = [chrf.sentence_score(o, [r]).score for o, r in zip(outputs, references)]
    bad = [score < bad_chrf for score in sentence_chrf]
    signals = {
        "smallest coverage (lower: worse)": [-min(d.coverage, default=1.0) for d in diagnostics],
        "largest coverage": [max(d.coverage, default=1.0) for d in diagnostics],
        "attention-flagged words": [sum(len(r[flag]) for flag in ATTENTION_FLAGS) for r in raised],
        "mean attention entropy": [d.mean_entropy for d in diagnostics],
        "mean attention on </s>": [d.mean_eos_mass for d in diagnostics],
        "largest deletion gain": [max(d.deletion_gain or [0.0]) for d in diagnostics],
        "largest untranslated score": [max(d.untranslated_score or [0.0]) for d in diagnostics],
        "log-probability per token (lower: worse)": [-t.log_prob / (len(t.tokens) + 1) for t in translations],
    }
    all_coverage = np.concatenate([d.coverage for d in diagnostics if d.coverage])
    return {
        "attention_flags": split_by(ATTENTION_FLAGS), "deletion_test": split_by(("untranslated",)),
        "thresholds": thresholds,
        "flag_rate": {flag: round(sum(bool(r[flag]) for r in raised) / len(raised), 4) for flag in FLAGS},
        "deletion_test_seconds": round(deletion_seconds, 1),
        "source_words": sum(len(d.src_words) for d in diagnostics),
        "bad_chrf_below": bad_chrf, "bad_sentences": int(sum(bad)),
        "auroc": {name: round(auroc(values, bad), 3) for name, values in signals.items()},
        "coverage_percentiles": {str(q): round(float(np.percentile(all_coverage, q)), 3) for q in (1, 5, 50, 95, 99, 99.9)},
        "signals": signals, "bad": bad,
    }


def plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(24, 4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (flag, (kind, _)) in enumerate(FLAGS.items()):
        axes = figure.add_subplot(1, len(FLAGS) + 1, index + 1)
        for split in ("val", "test"):
            curve = report["controlled"][kind][split]["flags"][flag]
            thresholds = sorted(curve, key=float)
            axes.plot([curve[t]["recall"] for t in thresholds], [curve[t]["precision"] for t in thresholds],
                      marker="o", label=split)
            chosen = curve[str(report["chosen_on_val"][flag])]
            axes.annotate(str(report["chosen_on_val"][flag]), (chosen["recall"], chosen["precision"]), fontsize=7)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.set_title(f"{flag} flags on controlled {kind}s\n(one point per threshold, chosen one labelled)", fontsize=9)
        axes.legend()
        axes.grid(alpha=0.3)
    right = figure.add_subplot(1, len(FLAGS) + 1, len(FLAGS) + 1)
    free = report["free"]
    bad = np.asarray(free["bad"])
    for name, values in free["signals"].items():
        values = np.asarray(values, dtype=float)
        thresholds = np.unique(values)[::-1]
        tpr = [(values[bad] >= t).mean() for t in thresholds]
        fpr = [(values[~bad] >= t).mean() for t in thresholds]
        right.plot([0, *fpr, 1], [0, *tpr, 1], label=f"{name} ({free['auroc'][name]:.2f})")
    right.plot([0, 1], [0, 1], color="grey", linestyle=":")
    right.set_xlabel("false positive rate")
    right.set_ylabel("true positive rate")
    right.set_title(f"detecting translations with sentence chrF < {free['bad_chrf_below']:g} (AUROC)", fontsize=9)
    right.legend(fontsize=7)
    figure.savefig(path, dpi=130)


def header_lines(report: dict) -> list[str]:
    return [f"Model `{report['model']}`. Machine: {report['machine']['cpu']}. Command: `{report['command']}`", "",
            f"Controlled spans chosen by {report['spans_from']}.", ""]


def agreement_lines(against_links: dict) -> list[str]:
    return ["The model's attention alignment of the unchanged references against the links the spans were chosen "
            "by (taken as sure):", "", "| split | part of each reference | AER | precision | recall |",
            "| --- | --- | ---: | ---: | ---: |",
            *[f"| {split} | {part.replace('_', ' ')} | {found['aer']} | {found['precision']} | {found['recall']} |"
              for split, parts in against_links.items() for part, found in parts.items()]]


def markdown(report: dict) -> str:
    lines = header_lines(report)
    for flag, (kind, _) in FLAGS.items():
        val, test = report["controlled"][kind]["val"], report["controlled"][kind]["test"]
        lines += [f"{flag} flags on controlled {kind}s ({val['sentences']} val, {test['sentences']} test sentences):", "",
                  "| threshold | val precision | val recall | val F1 | test precision | test recall | test F1 | "
                  "test flags per unchanged reference |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for threshold, v in val["flags"][flag].items():
            mark = " (chosen)" if float(threshold) == report["chosen_on_val"][flag] else ""
            t = test["flags"][flag][threshold]
            lines.append(f"| {threshold}{mark} | {v['precision']} | {v['recall']} | {v['f1']} | {t['precision']} | "
                         f"{t['recall']} | {t['f1']} | {t['flags_per_unchanged_reference']} |")
        lines.append("")
    free = report["free"]
    lines += ["Free translations of test (beam 5), at the chosen thresholds:", "",
              "| split by | sentences | count | BLEU | chrF2 |", "| --- | --- | ---: | ---: | ---: |"]
    for split_by in ("attention_flags", "deletion_test"):
        for name in ("flagged", "unflagged"):
            row = free[split_by][name]
            lines.append(f"| {split_by} | {name} | {row['sentences']} | {row.get('bleu', '')} | {row.get('chrf', '')} |")
    lines += ["", f"Share of translations with each flag: {free['flag_rate']}; the deletion test took "
              f"{free['deletion_test_seconds']} s for {free['source_words']} source words.", "",
              f"Detecting the {free['bad_sentences']} translations with sentence chrF2 < {free['bad_chrf_below']:g}:",
              "", "| signal | AUROC |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in free["auroc"].items()]
    if "attention_against_spans" in report:
        lines += ["", *agreement_lines(report["attention_against_spans"])]
    if "omission_draws" in report:
        lines += ["", f"The untranslated flag (at {report['chosen_on_val']['untranslated']}) on controlled omissions "
                  "drawn with other seeds:", "", "| split | seed | sentences | precision | recall |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for split, found in report["omission_draws"].items():
            lines += [f"| {split} | {seed} | {d['sentences']} | {d['precision']} | {d['recall']} |"
                      for seed, d in found["draws"].items()]
            summary = found["summary"]
            lines.append(f"| {split} | mean (min–max) | | {summary['precision']['mean']} ({summary['precision']['min']}–"
                         f"{summary['precision']['max']}) | {summary['recall']['mean']} ({summary['recall']['min']}–"
                         f"{summary['recall']['max']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--bad-chrf", type=float, default=40.0, help="a free translation below this chrF is bad")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--more-seeds", default="",
                        help="comma-separated seeds: draw the controlled omissions again with each and score the "
                             "untranslated flag at the threshold chosen on val (each draw costs the deletion test "
                             "of every val and test sentence)")
    parser.add_argument("--spans-from", type=Path, metavar="LINKS",
                        help="choose the controlled spans by these links (a Pharaoh file: the val lines, then the "
                             "test lines, e.g. from attnmt eflomal --extra-out) instead of the model's own attention "
                             "alignment, which the attention's flags and the attended regret also read")
    parser.add_argument("--attention-only", action="store_true",
                        help="with --spans-from: only the agreement of the model's attention with those links "
                             "(a minute), not the controlled test")
    parser.add_argument("--out", type=Path, default=RESULTS / "diagnostics_en_de.json")
    args = parser.parse_args(argv)
    if args.attention_only and not args.spans_from:
        parser.error("--attention-only compares the attention with the links of --spans-from: give them")
    translator = Translator.load(args.model_dir)
    src, trg = translator.config.data.src_lang, translator.config.data.trg_lang
    data = {split: (read_lines(args.data / f"{name}.{src}.gz"), read_lines(args.data / f"{name}.{trg}.gz"))
            for split, name in (("val", "val"), ("test", "test_2016_flickr"))}
    controlled: dict[str, dict] = {kind: {} for kind in KINDS}
    alignments = spans_links(args.spans_from, data) if args.spans_from else {}
    against_links = {}
    for split, (sources, references) in data.items():
        attention = [alignment.links for alignment in translator.align(sources, references)]
        if args.spans_from:
            against_links[split] = attention_against_links(attention, alignments[split], references)
        else:
            alignments[split] = attention
    if args.attention_only:
        report = {"machine": machine(), "command": command_line("diagnostics.py", argv), "model": str(args.model_dir),
                  "spans_from": str(args.spans_from), "attention_against_spans": against_links}
        write_json(args.out, report)
        text = "\n".join(header_lines(report) + agreement_lines(against_links)) + "\n"
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
        return
    for split, (sources, references) in data.items():
        full = alignments[split]
        for kind in KINDS:
            cases = controlled_cases(full, sources, references, kind, args.seed)
            controlled[kind][split] = score_controlled(translator, cases, kind)
            print(split, kind, controlled[kind][split], flush=True)
    chosen = {flag: max(thresholds, key=lambda t: controlled[kind]["val"]["flags"][flag][str(t)]["f1"])
              for flag, (kind, thresholds) in FLAGS.items()}
    report = {
        "machine": machine(), "command": command_line("diagnostics.py", argv), "model": str(args.model_dir),
        "spans_from": str(args.spans_from) if args.spans_from else "the model's attention",
        "defaults_when_run": DEFAULTS, "controlled": controlled, "chosen_on_val": chosen,
        "test_at_chosen": {flag: controlled[kind]["test"]["flags"][flag][str(chosen[flag])]
                           for flag, (kind, _) in FLAGS.items()},
        "free": free_translations(translator, *data["test"], args.bad_chrf, chosen),
    }
    if against_links:
        report["attention_against_spans"] = against_links
    more_seeds = [int(seed) for seed in args.more_seeds.split(",") if seed]
    if more_seeds:  # the first draw again (to four decimals), then the others
        draws = {split: omission_draws(translator, alignments[split], sources, references, [args.seed, *more_seeds],
                                       chosen["untranslated"]) for split, (sources, references) in data.items()}
        report["omission_draws"] = {split: {"draws": found, "summary": draw_summary(found)}
                                    for split, found in draws.items()}
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
