"""What the GNMT coverage penalty does on Multi30k: BLEU, how many translations leave a source word
unattended (the omission flag of attnmt.explain.diagnostics, at ``--omission-below``) and, on test,
how many the deletion test flags as having left a word untranslated (its default threshold), for a
range of beta, beam 5.

    python benchmarks/coverage_penalty.py runs/multi30k/en_de_s42 runs/multi30k/en_fr_s42

beta is chosen on val (the best cased BLEU); test_2016_flickr is scored at every beta for the record.
Writes ``--out`` (default docs/results/coverage_penalty.json) and its Markdown twin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, command_line, machine, multi30k_dir, scored_translation, write_json

from attnmt.data.corpus import read_lines
from attnmt.explain.diagnostics import OMISSION_BELOW, diagnose
from attnmt.translator import Translator

BETAS = (0.0, 0.1, 0.2, 0.4, 0.8)


def measure(translator: Translator, sources: list[str], references: list[str], omission_below: float,
            deletion_test: bool) -> dict:
    translations, scores = scored_translation(translator, sources, references, beam=5)
    flagged = sum(bool(diagnose(t, omission_below).omitted) for t in translations)
    result = {**scores, "omission_flag_rate": round(flagged / len(translations), 4),
              "mean_output_words": round(sum(len(t.text.split()) for t in translations) / len(translations), 2)}
    if deletion_test:
        untranslated = sum(bool(found.untranslated) for found in translator.diagnose(translations))
        result["untranslated_flag_rate"] = round(untranslated / len(translations), 4)
    return result


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']['cpu']}. Command: `{report['command']}`. Omission flag: coverage "
             f"below {report['omission_below']}.", "",
             "| model | beta | val BLEU | test BLEU cased / lc | test chrF2 | test translations with an omission flag | "
             "with an untranslated flag | words per output |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in report["models"]:
        for row in model["betas"]:
            mark = " (chosen on val)" if row["beta"] == model["chosen_beta"] else ""
            lines.append(f"| {model['direction']} | {row['beta']}{mark} | {row['val']['bleu']} | {row['test']['bleu']} / "
                         f"{row['test']['bleu_lowercased']} | {row['test']['chrf']} | "
                         f"{100 * row['test']['omission_flag_rate']:.1f} % | "
                         f"{100 * row['test']['untranslated_flag_rate']:.1f} % | {row['test']['mean_output_words']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", type=Path, nargs="+")
    parser.add_argument("--betas", default=",".join(map(str, BETAS)))
    parser.add_argument("--omission-below", type=float, default=OMISSION_BELOW,
                        help="the omission flag's threshold (benchmarks/diagnostics.py chooses it on val)")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "coverage_penalty.json")
    args = parser.parse_args(argv)
    report = {"machine": machine(), "command": command_line("coverage_penalty.py", argv),
              "omission_below": args.omission_below, "models": []}
    for model_dir in args.model_dirs:
        translator = Translator.load(model_dir)
        src, trg = translator.config.data.src_lang, translator.config.data.trg_lang
        data = {split: (read_lines(args.data / f"{name}.{src}.gz"), read_lines(args.data / f"{name}.{trg}.gz"))
                for split, name in (("val", "val"), ("test", "test_2016_flickr"))}
        rows = []
        for beta in map(float, args.betas.split(",")):
            translator.config.decode.coverage_penalty = beta
            rows.append({"beta": beta, **{split: measure(translator, *pair, args.omission_below, split == "test")
                                          for split, pair in data.items()}})
            print(model_dir.name, rows[-1], flush=True)
        chosen = max(rows, key=lambda row: row["val"]["bleu"])["beta"]
        report["models"].append({"model": str(model_dir), "direction": f"{src}→{trg}", "chosen_beta": chosen,
                                 "betas": rows})
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
