"""Speed benchmark: attnmt against Joey NMT 2.3.0 on the same CPU, same model size, same data.

    python benchmarks/speed.py --out runs/speed/speed.json          # about 70 minutes on 2 cores

In one run, one after the other on the same machine (absolute figures drift on shared machines;
the ratios of one run hold):

1. this machine's matrix-multiply throughput, fp32 and bf16, 1 and N threads: the ceiling;
2. Joey NMT trains its RNN (``../shared/peers/joeynmt/run.sh``: bi-GRU 512, GRU 512, embeddings 256,
   Luong attention, input feeding, tied embeddings, joint SentencePiece unigram 8000, 64 sentences a
   batch, Multi30k en→de) for ``--joey-seconds``: its target tokens/s; skipped, and said so, where
   that script is absent;
3. attnmt trains the same model on the same data with batches of about 64 sentences, input feeding
   on and off, fp32 and bf16 autocast (plus its own default batch of 2000 tokens), each for
   ``--train-seconds``: target tokens/s, FLOPs per target token, achieved GFLOP/s and the fraction
   of the measured matmul ceiling;
4. decoding, on one and the same model: how fast a model decodes depends on what it writes (an
   undertrained one repeats itself up to the length limit), so the two decoders are compared on the
   same weights. attnmt trains Joey NMT's architecture exactly (its output layer has no bias) for
   ``--decode-train-seconds``, ``joey_export.py`` writes it as a Joey NMT model, and both toolkits
   translate test_2016_flickr with it, greedily and with beam 5 (attnmt in fp32, bf16 autocast and
   int8 weights): sentences/s, words per output, BLEU, and how many outputs are the same as Joey's;
5. the ratios.

Writes the JSON (``--out``) and a Markdown summary beside it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from attnmt.decoding import POOL_BATCHES

from common import (
    REPO,
    RESULTS,
    attnmt_command,
    command_line,
    machine,
    matmul_gflops,
    multi30k_dir,
    read_metrics,
    require_multi30k,
    timed_translation,
    training_rate,
)
from joey_export import export as export_to_joey

JOEY_SCRIPT = REPO.parent / "shared" / "peers" / "joeynmt" / "run.sh"
JOEY_ROOT = Path("/tmp/peers/joeynmt")
JOEY_BATCH_SENTENCES = 64
# What makes attnmt's model Joey NMT's exactly (see joey_export.py): no bias in the output layer.
JOEY_ARCHITECTURE = ("model.output_bias=false",)


def attnmt_config(data: Path, input_feeding: bool, precision: str, threads: int, seconds: float, batch_tokens: int,
                  steps: int = 0, extra: tuple[str, ...] = ()):
    from attnmt.config import load_config

    return load_config(None, [
        f"data.train={data}/train", f"data.valid={data}/val", "data.src_lang=en", "data.trg_lang=de",
        "data.max_src_tokens=80", "data.max_trg_tokens=80",
        "vocab.type=unigram", "vocab.size=8000", "vocab.joint=true",
        "model.rnn=gru", "model.embedding_size=256", "model.encoder_hidden_size=512", "model.hidden_size=512",
        "model.attention=general", f"model.input_feeding={str(input_feeding).lower()}", "model.dropout=0.3",
        "model.share_embeddings=true", "model.tie_output=false",
        f"train.batch_tokens={batch_tokens}", "train.learning_rate=0.001", "train.label_smoothing=0.1",
        f"train.max_time={seconds}", f"train.max_steps={steps}", "train.valid_every=1000000", "train.log_every=20",
        "train.valid_max_sentences=50", f"train.num_threads={threads}", f"train.precision={precision}",
        "train.device=cpu", *extra,
    ])


def batch_tokens_for(data, sentences: int) -> int:
    """The token budget whose length-bucketed batches hold ``sentences`` sentences on average."""
    from attnmt.data.batching import token_batches

    def mean_sentences(budget: int) -> float:
        batches = token_batches(data.train_src_lengths, data.train_trg_lengths, budget, shuffle=True, seed=1, epoch=0)
        return data.n_train_pairs / len(batches)

    low, high = 100, 10_000
    while high - low > 10:
        middle = (low + high) // 2
        low, high = (middle, high) if mean_sentences(middle) < sentences else (low, middle)
    return high


def train_attnmt(data: Path, work: Path, name: str, input_feeding: bool, precision: str, threads: int,
                 seconds: float, batch_tokens: int, steps: int = 0, extra: tuple[str, ...] = ()) -> dict:
    from attnmt.training.loop import train

    model_dir = work / name
    config = attnmt_config(data, input_feeding, precision, threads, seconds, batch_tokens, steps, extra)
    result = train(config, model_dir, overwrite=True, progress=False, log=lambda message: None)
    if len(read_metrics(model_dir, "train")) < 2 and not steps:
        sys.exit(f"attnmt {name}: {seconds} s of training logged fewer than two windows of "
                 f"train.log_every steps; give --train-seconds more time")
    rate = training_rate(model_dir)
    return {"name": name, "input_feeding": input_feeding, "precision": precision, "threads": threads,
            "batch_tokens": batch_tokens, "steps": result.steps,
            "tokens_per_second": None if rate is None else round(rate), "model_dir": str(model_dir),
            "best_valid_bleu": _best_valid_bleu(model_dir)}


def _best_valid_bleu(model_dir: Path) -> float | None:
    return max((e["bleu"] for e in read_metrics(model_dir, "valid") if "bleu" in e), default=None)


def describe_model(model_dir: Path) -> dict:
    """What ``train_attnmt`` reports, read back from a model directory trained before."""
    from attnmt.store import load_config_file

    config = load_config_file(model_dir)
    return {"name": model_dir.name, "input_feeding": config.model.input_feeding, "precision": config.train.precision,
            "threads": config.train.num_threads, "batch_tokens": config.train.batch_tokens,
            "steps": max(e.get("step", 0) for e in read_metrics(model_dir)), "model_dir": str(model_dir),
            "best_valid_bleu": _best_valid_bleu(model_dir)}


def decode_key(result: dict) -> str:
    return f"beam{result['beam']}-{result['precision']}" + ("-shortlist" if result.get("shortlist") else "")


def build_shortlist(model_dir: Path, data: Path, k: int, frequent: int) -> None:
    """``attnmt shortlist`` from the training data (the model's own alignments)."""
    completed = subprocess.run(attnmt_command("shortlist", str(model_dir), "--src", str(data / "train.en.gz"), "--trg",
                                              str(data / "train.de.gz"), "--k", str(k), "--frequent", str(frequent)),
                               capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"attnmt shortlist failed: {completed.stderr[-2000:]}")


def decode_attnmt(model_dir: Path, sources: list[str], beam: int, threads: int, precision: str,
                  max_output_length: int | None = None, shortlist: bool = False) -> dict:
    """``max_output_length``: a fixed limit of output tokens, as Joey NMT's ``testing.max_output_length``
    (None: attnmt's own, proportional to the source). ``shortlist``: decode with the model's shortlist."""
    from attnmt.translator import Translator

    torch.set_num_threads(threads)
    translator = Translator.load(model_dir, precision=precision, shortlist=shortlist)
    if max_output_length is not None:
        translator.config.decode = replace(translator.config.decode, max_length_ratio=0.0,
                                           max_length_extra=max_output_length)
    outputs, seconds = timed_translation(translator, sources, beam)
    return {"beam": beam, "precision": precision, "shortlist": shortlist,
            "sentences_per_second": round(len(sources) / seconds, 1),
            "target_tokens_per_second": round(sum(len(t.tokens) + 1 for t in outputs) / seconds),
            "mean_output_words": round(sum(len(t.text.split()) for t in outputs) / len(outputs), 1),
            "mean_output_pieces": round(sum(len(t.tokens) for t in outputs) / len(outputs), 1),
            "outputs": [t.text for t in outputs]}


def run_joey(seconds: int) -> dict:
    if not JOEY_SCRIPT.exists():
        return {"skipped": f"{JOEY_SCRIPT} not found"}
    completed = subprocess.run(["bash", str(JOEY_SCRIPT), str(seconds)], capture_output=True, text=True)
    rates = [float(x) for x in re.findall(r"Tokens per Sec:\s*([\d.]+)", completed.stdout)]
    params = re.findall(r"Total params:\s*(\d+)", completed.stdout)
    return {"tokens_per_second": round(statistics.median(rates[1:] or rates)) if rates else None,
            "windows": len(rates), "parameters": int(params[0]) if params else None,
            "log_tail": completed.stdout[-1500:]}


def decode_joey(config_path: Path, sources: list[str], beam: int) -> dict:
    """Time ``joeynmt translate`` with the exported model on the test set, minus its start-up (measured
    on one line). Joey reads the lines from stdin and translates them in batches of 64 sentences."""
    import yaml

    python = JOEY_ROOT / "venv" / "bin" / "python"
    if not python.exists():
        return {"beam": beam, "skipped": f"no Joey NMT installation in {JOEY_ROOT} (run.sh installs it)"}
    config = yaml.safe_load(config_path.read_text())
    config["testing"].update(beam_size=beam, batch_size=64, batch_type="sentence")
    beam_config = config_path.resolve().with_name(f"config.beam{beam}.yaml")  # Joey runs in JOEY_ROOT
    beam_config.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def timed(lines: list[str]) -> tuple[float, list[str]]:
        started = time.perf_counter()
        completed = subprocess.run([str(python), "-m", "joeynmt", "translate", str(beam_config)],
                                   input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=JOEY_ROOT)
        if completed.returncode != 0:
            raise RuntimeError(f"joeynmt translate failed: {completed.stderr[-2000:]}")
        return time.perf_counter() - started, completed.stdout.splitlines()

    startup, _ = timed(sources[:1])
    total, outputs = timed(sources)
    seconds = max(total - startup, 1e-9)
    return {"beam": beam, "sentences_per_second": round(len(sources) / seconds, 1),
            "startup_seconds": round(startup, 1),
            "mean_output_words": round(sum(len(line.split()) for line in outputs) / max(len(outputs), 1), 1),
            "outputs": outputs}


def same_outputs(ours: list[str], theirs: list[str]) -> float | None:
    """The fraction of sentences both toolkits translate identically."""
    if len(ours) != len(theirs) or not ours:
        return None
    return round(sum(a == b for a, b in zip(ours, theirs)) / len(ours), 3)


def bleu(outputs: list[str], references: list[str]) -> float | None:
    from attnmt.evaluate import score_corpus

    if len(outputs) != len(references):
        return None
    return round(score_corpus(outputs, references, metrics=("bleu",))[0].value, 2)


def search_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads. "
             f"Command: `{report['command']}`", "",
             "Matrix multiply (2048², GFLOP/s): " + ", ".join(f"{k} {v}" for k, v in report["matmul_gflops"].items()),
             "", "| training | batch | target tokens/s | × Joey | GFLOP/s | of fp32 peak | of bf16 peak |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    joey = report.get("joey", {})
    if joey.get("tokens_per_second"):
        flops = report["joey_flops_per_target_token"]
        lines.append(f"| Joey NMT 2.3.0 (input feeding, fp32) | 64 sentences | {joey['tokens_per_second']} | 1.00 | "
                     f"{joey['tokens_per_second'] * flops / 1e9:.1f} | "
                     f"{joey['tokens_per_second'] * flops / 1e9 / report['ceiling_fp32']:.0%} | |")
    for r in report["train"]:
        ratio = report.get("ratios", {}).get("train", {}).get(r["name"])
        lines.append(f"| attnmt, input feeding {'on' if r['input_feeding'] else 'off'}, {r['precision']} | "
                     f"{r['batch_tokens']} tokens ({r['sentences_per_batch']:.0f} sentences) | {r['tokens_per_second']} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} | {r['gflops']:.1f} | {r['fraction_of_fp32_peak']:.0%} | "
                     f"{r['fraction_of_bf16_peak']:.0%} |")
    lines += ["", "| decoding test_2016_flickr (1000 sentences) | sentences/s | × Joey | words per output "
                  "| pieces per output | BLEU | same output as Joey |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in report.get("joey_decode", []):
        if "sentences_per_second" in d:
            lines.append(f"| Joey NMT, {search_name(d['beam'])} | "
                         f"{d['sentences_per_second']} | 1.00 | {d['mean_output_words']} | | {d.get('bleu')} | |")
    for d in report["decode"]:
        ratio = report.get("ratios", {}).get("decode", {}).get(decode_key(d))
        same = d.get("same_as_joey")
        lines.append(f"| attnmt, {search_name(d['beam'])}, {d['precision']}{', shortlist' if d.get('shortlist') else ''} | "
                     f"{d['sentences_per_second']} | {'' if ratio is None else f'{ratio:.2f}'} | "
                     f"{d['mean_output_words']} | {d.get('mean_output_pieces', '')} | {d['bleu']} | "
                     f"{'' if same is None else f'{same:.1%}'} |")
    if report.get("decode_model"):
        model = report["decode_model"]
        lines += ["", f"Both toolkits decode the same weights: attnmt's Joey-architecture model after {model['steps']} "
                      f"training steps ({model['precision']}, {model['batch_tokens']} tokens a batch), written as a "
                      "Joey NMT model by benchmarks/joey_export.py; batches of 64 sentences (attnmt steps 64 "
                      f"sentences at a time, waiting ones of a pool of {POOL_BATCHES} batches taking the rows of "
                      "those done)"
                      + (f"; both stop an output at {report['decode_max_output_length']} tokens (Joey's "
                         "testing.max_output_length)." if report.get("decode_max_output_length") else ".")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=multi30k_dir(), help="Multi30k (default $ATTNMT_DATA/multi30k)")
    parser.add_argument("--train-seconds", type=float, default=180)
    parser.add_argument("--joey-seconds", type=int, default=600, help="Joey NMT's training time, for its tokens/s")
    parser.add_argument("--decode-train-precision", default="bf16", choices=["fp32", "bf16"],
                        help="how the decode model trains (bf16 on CPUs with AVX-512 BF16 or AMX, else fp32)")
    parser.add_argument("--decode-shortlist", action="store_true",
                        help="also decode with a shortlist built from the training data (attnmt shortlist)")
    parser.add_argument("--shortlist-k", type=int, default=50)
    parser.add_argument("--shortlist-frequent", type=int, default=100)
    parser.add_argument("--decode-precisions", default="fp32,bf16,int8",
                        help="attnmt's decoding precisions (bf16 is emulated, and slow, without AVX-512 BF16 or AMX)")
    parser.add_argument("--decode-train-seconds", type=float, default=1200,
                        help="training time of the model both toolkits decode")
    parser.add_argument("--decode-only", action="store_true", help="measure decoding only (no training runs)")
    parser.add_argument("--decode-model", type=Path,
                        help="decode this attnmt model (Joey NMT's architecture) instead of training one")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-joey", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "attnmt-speed")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    args = parser.parse_args()
    require_multi30k(args.data)
    from attnmt.config import load_config
    from attnmt.data.batching import token_batches
    from attnmt.data.corpus import read_lines
    from attnmt.model import Seq2Seq
    from attnmt.training.prepare import prepare_data

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    report: dict = {"machine": {**machine(), "threads": args.threads},
                    "command": command_line("speed.py", None)}
    report["matmul_gflops"] = {f"{name}, {threads} thread{'s' if threads > 1 else ''}":
                               round(matmul_gflops(threads, dtype), 1)
                               for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
                               for threads in sorted({1, args.threads})}
    report["ceiling_fp32"] = report["matmul_gflops"][f"fp32, {args.threads} thread{'s' if args.threads > 1 else ''}"]
    report["ceiling_bf16"] = report["matmul_gflops"][f"bf16, {args.threads} thread{'s' if args.threads > 1 else ''}"]
    print("matmul GFLOP/s:", report["matmul_gflops"], flush=True)

    # The data once, to size the batches like Joey's and to count source tokens per target token.
    probe = attnmt_config(args.data, True, "fp32", args.threads, 1, 1000)
    data = prepare_data(probe, args.work / "probe", log=lambda message: None)
    pairs = data.n_train_pairs  # lengths + 1: the </s> of each side
    src_per_trg = (int(data.train_src_lengths.sum(dtype=np.int64)) + pairs) / (int(data.train_trg_lengths.sum(dtype=np.int64)) + pairs)
    joey_batch = batch_tokens_for(data, JOEY_BATCH_SENTENCES)
    report["src_tokens_per_trg_token"] = round(src_per_trg, 3)
    vocab = data.src_tokenizer.vocab_size

    if args.decode_only or args.skip_joey:
        report["joey"] = {"skipped": "--decode-only" if args.decode_only else "--skip-joey"}
    else:
        report["joey"] = run_joey(args.joey_seconds)
    print("joey training:", {k: v for k, v in report["joey"].items() if k != "log_tail"}, flush=True)
    joey_model = Seq2Seq.from_config(probe.model, vocab, vocab)
    report["joey_flops_per_target_token"] = joey_model.train_flops_per_target_token(src_per_trg)
    sources = read_lines(args.data / "test_2016_flickr.en.gz")
    references = read_lines(args.data / "test_2016_flickr.de.gz")
    report["joey_decode"] = []

    runs = [] if args.decode_only else [
        ("feed-fp32", True, "fp32", joey_batch), ("nofeed-fp32", False, "fp32", joey_batch),
        ("feed-bf16", True, "bf16", joey_batch), ("nofeed-bf16", False, "bf16", joey_batch),
        ("feed-bf16-2000", True, "bf16", 2000)]
    report["train"] = []
    for name, input_feeding, precision, batch_tokens in runs:
        result = train_attnmt(args.data, args.work, name, input_feeding, precision, args.threads, args.train_seconds,
                              batch_tokens)
        config = load_config(Path(result["model_dir"]) / "config.yaml")
        model = Seq2Seq.from_config(config.model, vocab, vocab)
        flops = model.train_flops_per_target_token(src_per_trg)
        batches = token_batches(data.train_src_lengths, data.train_trg_lengths, batch_tokens, shuffle=True, seed=1, epoch=0)
        result.update(flops_per_target_token=round(flops / 1e6, 1),
                      sentences_per_batch=data.n_train_pairs / len(batches),
                      gflops=result["tokens_per_second"] * flops / 1e9)
        result["fraction_of_fp32_peak"] = result["gflops"] / report["ceiling_fp32"]
        result["fraction_of_bf16_peak"] = result["gflops"] / report["ceiling_bf16"]
        report["train"].append(result)
        print("attnmt training:", result, flush=True)

    # Decoding: the same weights in both toolkits (module docstring, 4.).
    if args.decode_model:
        report["decode_model"] = describe_model(args.decode_model)
    else:
        report["decode_model"] = train_attnmt(args.data, args.work, "decode-model", True, args.decode_train_precision,
                                              args.threads,
                                              args.decode_train_seconds, 2000, extra=JOEY_ARCHITECTURE)
    print("attnmt decode model:", report["decode_model"], flush=True)
    model_dir = Path(report["decode_model"]["model_dir"])
    joey_outputs: dict[int, list[str]] = {}
    length_limit = None  # attnmt's own unless Joey's fixed limit is there to match
    if not args.skip_joey:
        joey_config = export_to_joey(model_dir, args.work / "decode-model-joey")
        joey_limit = yaml.safe_load(joey_config.read_text())["testing"].get("max_output_length")
        length_limit = joey_limit if isinstance(joey_limit, int) and joey_limit > 0 else None
        report["decode_max_output_length"] = length_limit
        for beam in (1, 5):
            result = decode_joey(joey_config, sources, beam)
            if "outputs" in result:
                joey_outputs[beam] = result.pop("outputs")
                result["bleu"] = bleu(joey_outputs[beam], references)
            report["joey_decode"].append(result)
            print("joey decoding:", result, flush=True)
    if args.decode_shortlist:
        build_shortlist(model_dir, args.data, args.shortlist_k, args.shortlist_frequent)
    report["decode"] = []
    for beam in (1, 5):
        for precision in args.decode_precisions.split(","):
            for shortlist in (False, True) if args.decode_shortlist else (False,):
                result = decode_attnmt(model_dir, sources, beam, args.threads, precision, length_limit, shortlist)
                outputs = result.pop("outputs")
                result["bleu"] = bleu(outputs, references)
                result["same_as_joey"] = same_outputs(outputs, joey_outputs.get(beam, []))
                report["decode"].append(result)
                print("attnmt decoding:", result, flush=True)

    joey_rate = report["joey"].get("tokens_per_second")
    joey_decode = {d["beam"]: d.get("sentences_per_second") for d in report["joey_decode"]}
    report["ratios"] = {
        "train": {r["name"]: round(r["tokens_per_second"] / joey_rate, 2) for r in report["train"]} if joey_rate else {},
        "decode": {decode_key(d): round(d["sentences_per_second"] / joey_decode[d["beam"]], 2)
                   for d in report["decode"] if joey_decode.get(d["beam"])},
    }
    print("ratios:", json.dumps(report["ratios"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"written {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
