"""What averaging checkpoints and ensembling models buy on Multi30k, every choice made on val.

    python benchmarks/multi30k_variants.py runs/multi30k/en_de_s42 runs/multi30k/en_de_s43 \\
        --average-last 2,3,5 --out docs/results/multi30k_en_de_variants.json

For each model directory (trained with ``train.keep_checkpoints``): the model (its best
checkpoint by validation BLEU) and the averages of its last K kept checkpoints (``attnmt average
--last K``). The variant of each model that scores best on val (beam 5, cased BLEU) is then
ensembled with the others' (``--ensemble``): all of them, and each leading subset (the first two,
the first three, ...). Every variant translates val and test_2016_flickr greedily and with beam 5;
cased and lowercased sacreBLEU, chrF2, sentences/s. Writes ``--out`` and its Markdown twin.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import REPO, RESULTS, command_line, machine, multi30k_dir, scored_translation, write_json

from attnmt.data.corpus import read_lines
from attnmt.store import average_models, kept_checkpoints, load_config_file
from attnmt.translator import Translator


def evaluate(name: str, model_dir: Path, ensemble: list[Path], data: dict[str, tuple[list[str], list[str]]]) -> dict:
    translator = Translator.load(model_dir, ensemble=ensemble)
    result = {"name": name, "models": [str(model_dir), *map(str, ensemble)]}
    for split, (sources, references) in data.items():
        for beam in (1, 5):
            result[f"{split}_{'greedy' if beam == 1 else f'beam{beam}'}"] = scored_translation(translator, sources, references, beam)[1]
    print(name, {k: v for k, v in result.items() if k.endswith("beam5")}, flush=True)
    return result


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']['cpu']}, torch {report['machine']['torch']}, "
             f"{report['machine']['threads']} threads. Command: `{report['command']}`", "",
             "| variant | val BLEU beam 5 | test BLEU greedy, cased / lc | test BLEU beam 5, cased / lc | "
             "test chrF2 beam 5 | sentences/s beam 5 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v in report["variants"]:
        greedy, beam = v["test_greedy"], v["test_beam5"]
        lines.append(f"| {v['name']} | {v['val_beam5']['bleu']} | {greedy['bleu']} / {greedy['bleu_lowercased']} | "
                     f"**{beam['bleu']} / {beam['bleu_lowercased']}** | {beam['chrf']} | {beam['sentences_per_second']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", type=Path, nargs="+")
    parser.add_argument("--average-last", default="3", help="K values to average, e.g. 2,3,5")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "multi30k_variants")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    config = load_config_file(args.model_dirs[0])
    src, trg = config.data.src_lang, config.data.trg_lang
    out = args.out or RESULTS / f"multi30k_{src}_{trg}_variants.json"
    data = {split: (read_lines(args.data / f"{file}.{src}.gz"), read_lines(args.data / f"{file}.{trg}.gz"))
            for split, file in (("val", "val"), ("test", "test_2016_flickr"))}

    variants, chosen = [], []
    for model_dir in args.model_dirs:
        candidates = [evaluate(model_dir.name, model_dir, [], data)]
        for k in sorted({int(k) for k in args.average_last.split(",")}):
            if len(kept_checkpoints(model_dir)) < k:
                continue
            averaged = args.work / f"{model_dir.name}_avg{k}"
            shutil.rmtree(averaged, ignore_errors=True)  # never an average left from other checkpoints
            average_models([model_dir], averaged, last=k)
            candidates.append(evaluate(f"{model_dir.name}, average of the last {k}", averaged, [], data))
        variants += candidates
        best = max(candidates, key=lambda v: v["val_beam5"]["bleu"])  # chosen on val
        chosen.append(Path(best["models"][0]))
    for size in range(2, len(chosen) + 1):
        names = " + ".join(path.name for path in chosen[:size])
        variants.append(evaluate(f"ensemble of {size}: {names}", chosen[0], chosen[1:size], data))

    report = {"machine": machine(), "command": command_line("multi30k_variants.py", argv),
              "direction": f"{src}→{trg}", "variants": variants}
    write_json(out, report)
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
