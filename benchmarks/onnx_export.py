"""The exported (ONNX) model against the PyTorch one: the same translations? how fast?

    python benchmarks/onnx_export.py runs/multi30k/en_de_36m_s42 --threads 2

``attnmt export --onnx`` into --work, then test_2016_flickr translated greedily and with beam 5 by
the PyTorch model in fp32 and int8 and by the exported model through onnxruntime (the same search
code): cased and lowercased BLEU, chrF2, sentences/s (after a warm-up), and for the exported model
the share of sentences translated exactly as PyTorch fp32 translates them and the largest
difference of a translation's log-probability. The two runtimes run in one process, one after the
other, with the same number of threads. Writes ``--out`` (default docs/results/onnx_SRC_TRG.json)
and its Markdown twin.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import torch
from common import REPO, RESULTS, attnmt_command, command_line, machine, multi30k_dir, scored_translation, write_json

from attnmt.data.corpus import read_lines
from attnmt.export.onnx_model import OnnxTranslator
from attnmt.translator import Translator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and of onnxruntime")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "onnx")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exported = args.work / f"{args.model_dir.name}_onnx"
    shutil.rmtree(exported, ignore_errors=True)
    subprocess.run(attnmt_command("export", str(args.model_dir), "--onnx", str(exported)), check=True)
    translators = {"torch fp32": Translator.load(args.model_dir),
                   "torch int8": Translator.load(args.model_dir, precision="int8"),
                   "onnxruntime fp32": OnnxTranslator.load(exported, threads=args.threads)}
    config = translators["torch fp32"].config
    src, trg = config.data.src_lang, config.data.trg_lang
    out = args.out or RESULTS / f"onnx_{src}_{trg}.json"
    sources = read_lines(args.data / f"test_2016_flickr.{src}.gz")
    references = read_lines(args.data / f"test_2016_flickr.{trg}.gz")
    rows = []
    for beam in (1, 5):
        reference_translations = None
        for name, translator in translators.items():
            translations, scores = scored_translation(translator, sources, references, beam)
            row = {"runtime": name, "beam": beam, **scores}
            if reference_translations is None:
                reference_translations = translations
            else:
                same = sum(a.text == b.text for a, b in zip(translations, reference_translations))
                row["identical_to_torch_fp32"] = round(same / len(sources), 4)
                row["max_log_prob_difference"] = max((abs(a.log_prob - b.log_prob) for a, b in
                                                      zip(translations, reference_translations) if a.text == b.text),
                                                     default=None)
            rows.append(row)
            print(row, flush=True)
    report = {"machine": machine(), "command": command_line("onnx_export.py", argv), "model": str(args.model_dir),
              "threads": args.threads, "rows": rows}
    write_json(out, report)
    lines = [f"Machine: {report['machine']['cpu']}, {args.threads} threads. Command: `{report['command']}`", "",
             "| runtime | search | BLEU cased / lc | chrF2 | sentences/s | identical to torch fp32 |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        identical = f"{100 * r['identical_to_torch_fp32']:.1f} %" if "identical_to_torch_fp32" in r else ""
        lines.append(f"| {r['runtime']} | {'greedy' if r['beam'] == 1 else 'beam ' + str(r['beam'])} | "
                     f"{r['bleu']} / {r['bleu_lowercased']} | {r['chrf']} | {r['sentences_per_second']} | {identical} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
