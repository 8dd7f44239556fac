"""What a vocabulary shortlist costs in BLEU and buys in speed, by list size and way of building it.

    python benchmarks/shortlist.py runs/multi30k/en_de_s42 --k 10,25,50,100 --methods alignment,cooccurrence

For each method and k: ``attnmt shortlist`` on the model's training data (a copy of the model
directory per shortlist, in --work), then test_2016_flickr translated greedily and with beam 5 in
each precision, with and without the shortlist: cased BLEU, its difference from the full vocabulary,
sentences/s, and how many target pieces a pool of sentences (the ``POOL_BATCHES`` batches search
encodes, and restricts, at once) may produce on average.

Writes ``--out`` (default docs/results/shortlist_SRC_TRG.json) and its Markdown twin.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import torch
from common import REPO, RESULTS, attnmt_command, command_line, machine, multi30k_dir, timed_translation, write_json

from attnmt.data.batching import collate, sentence_batches
from attnmt.data.corpus import read_lines
from attnmt.decoding import POOL_BATCHES
from attnmt.evaluate import score_corpus
from attnmt.translator import Translator


def decode(model_dir: Path, sources: list[str], references: list[str], beam: int, precision: str,
           shortlist: bool) -> dict:
    translator = Translator.load(model_dir, precision=precision, shortlist=shortlist)
    translations, seconds = timed_translation(translator, sources, beam)
    bleu = score_corpus([t.text for t in translations], references, metrics=("bleu",))[0].value
    result = {"beam": beam, "precision": precision, "shortlist": shortlist, "bleu": round(bleu, 2),
              "sentences_per_second": round(len(sources) / seconds, 1)}
    if shortlist:
        ids = translator.src_tokenizer.encode_batch(sources)
        pool = translator.config.decode.batch_size * POOL_BATCHES  # what search encodes, and restricts, at once
        sizes = [len(translator.model.shortlist.allowed(collate([ids[i] for i in batch], None, batch).src))
                 for batch in sentence_batches([len(x) for x in ids], pool)]
        result["mean_allowed_pieces"] = round(sum(sizes) / len(sizes))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--k", default="10,25,50,100")
    parser.add_argument("--frequent", type=int, default=100)
    parser.add_argument("--methods", default="alignment,cooccurrence")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "shortlist")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    full = Translator.load(args.model_dir)
    src, trg = full.config.data.src_lang, full.config.data.trg_lang
    out = args.out or RESULTS / f"shortlist_{src}_{trg}.json"
    sources = read_lines(args.data / f"test_2016_flickr.{src}.gz")
    references = read_lines(args.data / f"test_2016_flickr.{trg}.gz")
    rows = []
    baseline = {}
    for beam in (1, 5):
        for precision in args.precisions.split(","):
            baseline[beam, precision] = decode(args.model_dir, sources, references, beam, precision, False)
            rows.append({"method": "full vocabulary", "k": None, **baseline[beam, precision]})
            print(rows[-1], flush=True)
    for method in args.methods.split(","):
        for k in map(int, args.k.split(",")):
            model_dir = args.work / f"{args.model_dir.name}_{method}_{k}"
            shutil.rmtree(model_dir, ignore_errors=True)
            shutil.copytree(args.model_dir, model_dir, ignore=shutil.ignore_patterns("checkpoints", "trainer_state*",
                                                                                     "data", "tensorboard"))
            subprocess.run(attnmt_command("shortlist", str(model_dir), "--src", str(args.data / f"train.{src}.gz"),
                                          "--trg", str(args.data / f"train.{trg}.gz"), "--k", str(k), "--frequent",
                                          str(args.frequent), "--method", method), check=True, capture_output=True)
            for beam in (1, 5):
                for precision in args.precisions.split(","):
                    result = decode(model_dir, sources, references, beam, precision, True)
                    result["bleu_difference"] = round(result["bleu"] - baseline[beam, precision]["bleu"], 2)
                    result["speed_ratio"] = round(result["sentences_per_second"]
                                                  / baseline[beam, precision]["sentences_per_second"], 2)
                    rows.append({"method": method, "k": k, **result})
                    print(rows[-1], flush=True)
    report = {"machine": machine(), "command": command_line("shortlist.py", argv),
              "model": str(args.model_dir), "frequent": args.frequent, "rows": rows}
    write_json(out, report)
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['threads']} threads. Command: `{report['command']}`",
             "", "| shortlist | k | search | precision | pieces per pool | BLEU (Δ) | sentences/s (× full) |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        difference = f" ({r['bleu_difference']:+.2f})" if "bleu_difference" in r else ""
        ratio = f" ({r['speed_ratio']:.2f}×)" if "speed_ratio" in r else ""
        lines.append(f"| {r['method']} | {r['k'] or ''} | {search} | {r['precision']} | "
                     f"{r.get('mean_allowed_pieces', full.trg_tokenizer.vocab_size)} | {r['bleu']}{difference} | "
                     f"{r['sentences_per_second']}{ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
