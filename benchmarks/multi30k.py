"""Multi30k benchmark: train a config for a time budget, then score test_2016_flickr.

    python benchmarks/multi30k.py configs/multi30k_en_de.yaml --budget 60m      # model in runs/multi30k/en_de
    python benchmarks/multi30k.py configs/multi30k_en_de.yaml --evaluate-only \
        --precisions fp32,bf16,int8        # score the trained model again, decoding in three precisions

Writes ``--out`` (default docs/results/multi30k_SRC_TRG.json) and its Markdown twin: parameters, training target tokens/s, seconds per
epoch, validation BLEU against elapsed time, test BLEU greedy and beam 5 (sacreBLEU cased 13a and
lowercased, with signatures), decoding sentences/s greedy and beam 5, peak RSS. A benchmark, not a
test: figures depend on the machine; the machine is written into the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import (
    REPO,
    RESULTS,
    machine,
    multi30k_dir,
    peak_rss_mib,
    read_metrics,
    timed_translation,
    training_rate,
    write_json,
)


def test_scores(translator, sources: list[str], references: list[str], beam: int) -> dict:
    from attnmt.evaluate import score_corpus

    translations, seconds = timed_translation(translator, sources, beam)
    outputs = [t.text for t in translations]
    cased = score_corpus(outputs, references, metrics=("bleu", "chrf"))
    lowercased = score_corpus(outputs, references, metrics=("bleu",), lowercase=True)[0]
    return {
        "beam": beam,
        "precision": translator.precision,
        "bleu": round(cased[0].value, 2), "bleu_signature": cased[0].signature,
        "bleu_lowercased": round(lowercased.value, 2), "bleu_lowercased_signature": lowercased.signature,
        "chrf": round(cased[1].value, 2), "chrf_signature": cased[1].signature,
        "sentences_per_second": round(len(sources) / seconds, 1),
        "examples": outputs[:3],
    }


def summarise(model_dir: Path) -> dict:
    """Training figures from the run's metrics log."""
    stop = read_metrics(model_dir, "stop")[-1]
    windows = read_metrics(model_dir, "train")
    rate = training_rate(model_dir)
    validations = [{"step": e["step"], "elapsed_s": round(e["elapsed"]), "bleu": round(e["bleu"], 2)}
                   for e in read_metrics(model_dir, "valid")]
    last_epoch = max((e.get("epoch", 1) for e in windows), default=1)
    return {
        "steps": stop["step"],
        "train_seconds": round(stop["elapsed"]),
        "stop_reason": stop["reason"],
        "tokens_per_second": None if rate is None else round(rate),
        "seconds_per_epoch": round(stop["elapsed"] / max(last_epoch, 1)) if last_epoch > 1 else None,
        "epochs_started": last_epoch,
        "validation": validations,
    }


def markdown(result: dict) -> str:
    lines = [
        f"### {result['direction']} — {result['budget']} budget",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch {result['machine']['torch']}, "
        f"{result['machine']['threads']} threads. Command: `{result['command']}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| parameters | {result['parameters']:,} |",
        f"| training target tokens/s | {result['train']['tokens_per_second']} |",
        f"| seconds per epoch | {result['train']['seconds_per_epoch']} |",
        f"| steps / training seconds | {result['train']['steps']} / {result['train']['train_seconds']} |",
    ]
    for test in result["test_2016_flickr"]:
        name = "greedy" if test["beam"] == 1 else f"beam {test['beam']}"
        if test["precision"] != "fp32":
            name += f", {test['precision']}"
        lines += [
            f"| test_2016_flickr BLEU {name}, cased | {test['bleu']} |",
            f"| test_2016_flickr BLEU {name}, lowercased | {test['bleu_lowercased']} |",
            f"| test_2016_flickr chrF2 {name} | {test['chrf']} |",
            f"| decoding sentences/s {name} | {test['sentences_per_second']} |",
        ]
    lines += [f"| peak RSS (training and decoding) | {result['peak_rss_mib']:.0f} MiB |", ""]
    signatures = result["test_2016_flickr"][-1]
    lines += [f"Signatures: BLEU `{signatures['bleu_signature']}`; lowercased `{signatures['bleu_lowercased_signature']}`; "
              f"chrF `{signatures['chrf_signature']}`.", ""]
    lines += ["Validation BLEU (greedy, cased) against elapsed training time:", "",
              "| step | elapsed s | BLEU |", "| --- | --- | --- |"]
    lines += [f"| {v['step']} | {v['elapsed_s']} | {v['bleu']} |" for v in result["train"]["validation"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--budget", default=None, help="train.max_time, e.g. 60m (default: the config's)")
    parser.add_argument("--data", type=Path, default=multi30k_dir(), help="Multi30k (default $ATTNMT_DATA/multi30k)")
    parser.add_argument("--model-dir", type=Path, help="where the model is trained (default runs/multi30k/SRC_TRG)")
    parser.add_argument("--out", type=Path, help="the result JSON, a Markdown twin beside it "
                                                 "(default docs/results/multi30k_SRC_TRG.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--evaluate-only", action="store_true", help="score the model already in --model-dir")
    parser.add_argument("--precisions", default="fp32", help="decoding precisions to score, e.g. fp32,bf16,int8")
    args = parser.parse_args()


    from attnmt.config import load_config
    from attnmt.data.corpus import read_lines
    from attnmt.training.loop import train
    from attnmt.translator import Translator

    overrides = [f"data.train={args.data}/train", f"data.valid={args.data}/val", *args.overrides]
    if args.budget:
        overrides.append(f"train.max_time={args.budget}")
    config = load_config(args.config, overrides)
    src, trg = config.data.src_lang, config.data.trg_lang
    model_dir = args.model_dir or REPO / "runs" / "multi30k" / f"{src}_{trg}"
    out = args.out or RESULTS / f"multi30k_{src}_{trg}.json"
    previous = json.loads(out.read_text()) if args.evaluate_only and out.exists() else {}
    if not args.evaluate_only:
        train(config, model_dir, overwrite=True, progress=False)
        previous = {}
    config = load_config(model_dir / "config.yaml")  # what the model was trained with

    sources = read_lines(args.data / f"test_2016_flickr.{src}.gz")
    references = read_lines(args.data / f"test_2016_flickr.{trg}.gz")
    parameters = Translator.load(model_dir).model.num_parameters()
    tests = []
    for precision in args.precisions.split(","):
        translator = Translator.load(model_dir, precision=precision)
        tests += [test_scores(translator, sources, references, beam) for beam in (1, 5)]
    command = (f"python benchmarks/multi30k.py {args.config} --budget {args.budget or config.train.max_time} "
               f"--model-dir {model_dir}" + "".join(f" --set {o}" for o in args.overrides))
    result = {
        "direction": f"{src}→{trg}",
        "budget": f"{config.train.max_time / 60:.0f} min",
        "command": previous.get("command", command),
        "evaluate_command": "python benchmarks/multi30k.py " + " ".join(sys.argv[1:]) if args.evaluate_only else None,
        "machine": machine(),
        "parameters": parameters,
        "train": summarise(model_dir),
        "test_2016_flickr": tests,
        "peak_rss_mib": max(peak_rss_mib(), previous.get("peak_rss_mib", 0.0)),
    }
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
