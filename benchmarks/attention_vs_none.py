"""Attention against none: the plain encoder–decoder collapses on long sentences, attention holds.

Trains the same config twice for the same wall-clock budget (``train.max_time``), once with
``model.attention`` set to ``--attention`` (default general) and once with ``none``, everything else
equal (seed, data, sizes, schedule). Then translates the test split with each and scores BLEU and
chrF per source-length bucket, as Figure 2 of Bahdanau et al. (2014) does. Writes to ``--out``:

    general/, none/        the two model directories
    general.hyp, none.hyp  their translations of the test split
    by_length.json         setup, training summaries and scores (sacreBLEU signatures included)
    by_length.md           the same as Markdown tables, for docs/benchmarks.md
    by_length.png          the figure

    python benchmarks/attention_vs_none.py configs/example.yaml --out runs/attention_vs_none --max-time 60m
    python benchmarks/attention_vs_none.py configs/example.yaml --out /tmp/avn --max-time 60s \\
        --set model.embedding_size=64 --set model.hidden_size=128 --set model.encoder_hidden_size=64 \\
        --set vocab.size=2000 --set train.valid_every=100 --beam 1      # a smoke run of a few minutes

``--evaluate-only`` scores the models already in ``--out`` again (e.g. with another beam).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from attnmt.checkpoint import METRICS_FILE, load_config_file
from attnmt.config import Config, load_config, parse_duration
from attnmt.data.corpus import read_parallel
from attnmt.evaluate import LengthReport, format_length_table, length_buckets, score_by_length
from attnmt.train import train
from attnmt.translator import Translator
from attnmt.viz import plot_scores_by_length


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the YAML config both models are trained with")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models, tables and figure")
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
    parser.add_argument("--evaluate-only", action="store_true", help="score the models already in --out")
    parser.add_argument("--overwrite", action="store_true", help="retrain even if --out holds the models")
    return parser.parse_args(argv)


def variant(config: Config, attention: str, max_time: float) -> Config:
    """The config with only the attention and the training budget changed."""
    model = dataclasses.replace(config.model, attention=attention)
    train_settings = dataclasses.replace(config.train, max_time=max_time)
    return dataclasses.replace(config, model=model, train=train_settings).validate()


def training_summary(model_dir: Path) -> dict[str, Any]:
    """Steps, time, stop reason and best validation score of a finished run, from its metrics log."""
    events = [json.loads(line) for line in (model_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines() if line]
    validations = [event for event in events if event.get("event") == "valid"]
    stop = next((event for event in reversed(events) if event.get("event") == "stop"), {})
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
        f"{setup['machine']}.",
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
    args.out.mkdir(parents=True, exist_ok=True)

    kinds = [args.attention, "none"]
    names = {args.attention: f"{args.attention} attention", "none": "no attention"}
    trained_before = [str(args.out / kind) for kind in kinds if (args.out / kind / "config.yaml").exists()]
    if trained_before and not (args.overwrite or args.evaluate_only):
        raise SystemExit(f"{', '.join(trained_before)} already hold models: pass --evaluate-only to score them "
                         "again or --overwrite to train afresh")
    if not args.evaluate_only:
        for kind in kinds:
            log(f"=== training with model.attention={kind} for {max_time:.0f} s ===")
            started = time.perf_counter()
            train(variant(base, kind, max_time), args.out / kind, overwrite=args.overwrite, progress=False, log=log)
            log(f"=== {kind}: done in {time.perf_counter() - started:.0f} s ===")

    test = read_parallel(test_split, base.data.src_lang, base.data.trg_lang)
    buckets = length_buckets(test.src, args.bucket_width, args.min_bucket)
    beam = args.beam or base.decode.beam_size
    systems, reports = [], []
    for kind in kinds:
        model_dir = args.out / kind
        trained = load_config_file(model_dir)
        if trained.model.attention != kind:
            raise SystemExit(f"{model_dir} holds a model with attention {trained.model.attention!r}, not {kind!r}")
        translator = Translator.load(model_dir, device=args.device)
        started = time.perf_counter()
        hypotheses = [t.text for t in translator.translate(test.src, beam=beam)]
        log(f"{kind}: translated {len(hypotheses)} test sentences in {time.perf_counter() - started:.0f} s")
        (args.out / f"{kind}.hyp").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        reports.append(score_by_length(names[kind], hypotheses, test.trg, buckets))
        systems.append({"name": names[kind], "attention": kind, "model_dir": str(model_dir),
                        "parameters": translator.model.num_parameters(), **training_summary(model_dir),
                        **reports[-1].to_dict()})

    setup = {
        "config": str(args.config),
        "overrides": args.overrides,
        "max_time_seconds": load_config_file(args.out / kinds[0]).train.max_time,  # what the models were trained with
        "test": test.description,
        "test_sentences": len(test.src),
        "beam": beam,
        "bucket_width": args.bucket_width,
        "min_bucket": args.min_bucket,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    (args.out / "by_length.json").write_text(json.dumps({"setup": setup, "systems": systems}, indent=2,
                                                        ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown(setup, systems, reports)
    (args.out / "by_length.md").write_text(table, encoding="utf-8")
    plot_scores_by_length(reports, args.out / "by_length.png",
                          title=f"{Path(test_split).name}: {names[args.attention]} vs none, "
                                f"{setup['max_time_seconds'] / 60:g} min of training each")
    print(table)
    log(f"written: {args.out / 'by_length.json'}, {args.out / 'by_length.md'}, {args.out / 'by_length.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
