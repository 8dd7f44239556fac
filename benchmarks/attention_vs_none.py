"""Attention against none: the plain encoder–decoder collapses on long sentences, attention holds.

Trains the same config twice for the same wall-clock budget (``train.max_time``), once with
``model.attention`` set to ``--attention`` (default general) and once with ``none``, everything else
equal (seed, data, sizes, schedule). Then translates the test split with each and scores BLEU and
chrF per source-length bucket, as Figure 2 of Bahdanau et al. (2014) does. Writes:

    WORK/general/, WORK/none/        the two model directories (--work, default runs/attention_vs_none)
    WORK/general.hyp, WORK/none.hyp  their translations of the test split
    OUT.json    setup, training summaries and scores (sacreBLEU signatures included)
                (--out, default docs/results/attention_vs_none_SRC_TRG.json)
    OUT.md      the same as Markdown tables, for docs/benchmarks.md
    OUT.png     the figure

    python benchmarks/attention_vs_none.py configs/example.yaml --max-time 60m
    python benchmarks/attention_vs_none.py configs/example.yaml --work /tmp/avn --out /tmp/avn/by_length.json \\
        --max-time 60s --set model.embedding_size=64 --set model.hidden_size=128 \\
        --set model.encoder_hidden_size=64 --set vocab.size=2000 --set train.valid_every=100 --beam 1   # a smoke run

``--evaluate-only`` scores the models already in ``--work`` again (e.g. with another beam).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from attnmt.config import Config, load_config, parse_duration
from attnmt.data.corpus import read_parallel
from attnmt.evaluate import LengthReport, format_length_table, length_buckets, score_by_length
from attnmt.explain.viz import plot_scores_by_length
from attnmt.store import load_config_file
from attnmt.training import train
from attnmt.translator import Translator
from common import REPO, RESULTS, machine, read_metrics, write_json


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the YAML config both models are trained with")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "attention_vs_none",
                        help="folder for the models and their translations (default runs/attention_vs_none)")
    parser.add_argument("--out", type=Path, help="the result JSON; the Markdown table and the figure go beside it "
                                                 "(default docs/results/attention_vs_none_SRC_TRG.json)")
    parser.add_argument("--max-time", default="60m", help="training budget of each model, e.g. 60m, 90s (default 60m)")
    parser.add_argument("--attention", default="general", choices=["dot", "general", "additive"],
                        help="the attention to compare with none (default general)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for both models (repeatable)")
    parser.add_argument("--test", help="test split (prefix or .tsv); default: data.test of the config")
    parser.add_argument("--beam", type=int, default=None, help="beam size (default: decode.beam_size of the config)")
    parser.add_argument("--bucket-width", type=int, default=5, help="source words per length bucket (default 5)")
    parser.add_argument("--min-bucket", type=int, default=20, help="fewest sentences in a bucket (default 20)")
    parser.add_argument("--device", default="cpu", help="torch device for translating the test split (default cpu)")
    parser.add_argument("--evaluate-only", action="store_true", help="score the models already in --work")
    parser.add_argument("--overwrite", action="store_true", help="retrain even if --out holds the models")
    return parser.parse_args(argv)


def variant(config: Config, attention: str, max_time: float) -> Config:
    """The config with only the attention and the training budget changed."""
    model = dataclasses.replace(config.model, attention=attention)
    train_settings = dataclasses.replace(config.train, max_time=max_time)
    return dataclasses.replace(config, model=model, train=train_settings).validate()


def training_summary(model_dir: Path) -> dict[str, Any]:
    """Steps, time, stop reason and best validation score of a finished run, from its metrics log."""
    validations = read_metrics(model_dir, "valid")
    stop = next(reversed(read_metrics(model_dir, "stop")), {})
    best = max(validations, key=lambda event: event["bleu"], default={})
    return {
        "steps": stop.get("step"),
        "train_seconds": round(stop.get("elapsed", 0.0), 1),
        "stop_reason": stop.get("reason"),
        "validations": len(validations),
        "best_valid_bleu": round(best["bleu"], 2) if best else None,
        "best_valid_step": best.get("step"),
    }


def markdown(setup: dict[str, Any], systems: list[dict[str, Any]], reports: list[LengthReport]) -> str:
    lines = [
        f"Test split: `{setup['test']}` ({setup['test_sentences']} sentences); config `{setup['config']}` "
        f"with {', '.join(f'`{o}`' for o in setup['overrides']) or 'no overrides'}; "
        f"budget {setup['max_time_seconds'] / 60:g} min of training each; beam {setup['beam']}; "
        f"{setup['machine']['cpu']}, {setup['machine']['threads']} torch threads, torch {setup['machine']['torch']}.",
        "",
        "| model | parameters | steps | training time | stopped because | best valid BLEU (greedy) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for system in systems:
        lines.append(f"| {system['name']} | {system['parameters']:,} | {system['steps']} | "
                     f"{system['train_seconds'] / 60:.1f} min | {system['stop_reason']} | {system['best_valid_bleu']} |")
    lines += ["", "Test scores by source length in words (sentences per bucket):", "", format_length_table(reports)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    max_time = parse_duration(args.max_time, "--max-time")
    base = load_config(args.config, args.overrides)
    test_split = args.test or base.data.test
    if not test_split:
        raise SystemExit(f"{args.config} names no data.test split: give --test")
    out = args.out or RESULTS / f"attention_vs_none_{base.data.src_lang}_{base.data.trg_lang}.json"
    args.work.mkdir(parents=True, exist_ok=True)

    kinds = [args.attention, "none"]
    names = {args.attention: f"{args.attention} attention", "none": "no attention"}
    trained_before = [str(args.work / kind) for kind in kinds if (args.work / kind / "config.yaml").exists()]
    if trained_before and not (args.overwrite or args.evaluate_only):
        raise SystemExit(f"{', '.join(trained_before)} already hold models: pass --evaluate-only to score them "
                         "again or --overwrite to train afresh")
    if not args.evaluate_only:
        for kind in kinds:
            log(f"=== training with model.attention={kind} for {max_time:.0f} s ===")
            started = time.perf_counter()
            train(variant(base, kind, max_time), args.work / kind, overwrite=args.overwrite, progress=False, log=log)
            log(f"=== {kind}: done in {time.perf_counter() - started:.0f} s ===")

    test = read_parallel(test_split, base.data.src_lang, base.data.trg_lang)
    buckets = length_buckets(test.src, args.bucket_width, args.min_bucket)
    beam = args.beam or base.decode.beam_size
    systems, reports = [], []
    for kind in kinds:
        model_dir = args.work / kind
        trained = load_config_file(model_dir)
        if trained.model.attention != kind:
            raise SystemExit(f"{model_dir} holds a model with attention {trained.model.attention!r}, not {kind!r}")
        translator = Translator.load(model_dir, device=args.device)
        started = time.perf_counter()
        hypotheses = [t.text for t in translator.translate(test.src, beam=beam)]
        log(f"{kind}: translated {len(hypotheses)} test sentences in {time.perf_counter() - started:.0f} s")
        (args.work / f"{kind}.hyp").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        reports.append(score_by_length(names[kind], hypotheses, test.trg, buckets))
        systems.append({"name": names[kind], "attention": kind, "model_dir": str(model_dir),
                        "parameters": translator.model.num_parameters(), **training_summary(model_dir),
                        **reports[-1].to_dict()})

    setup = {
        "config": str(args.config),
        "overrides": args.overrides,
        "max_time_seconds": load_config_file(args.work / kinds[0]).train.max_time,  # what the models were trained with
        "test": test.description,
        "test_sentences": len(test.src),
        "beam": beam,
        "bucket_width": args.bucket_width,
        "min_bucket": args.min_bucket,
        "machine": machine(),
    }
    write_json(out, {"setup": setup, "systems": systems})
    table = markdown(setup, systems, reports)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    plot_scores_by_length(reports, out.with_suffix(".png"),
                          title=f"{Path(test_split).name}: {names[args.attention]} vs none, "
                                f"{setup['max_time_seconds'] / 60:g} min of training each")
    print(table)
    log(f"written: {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
