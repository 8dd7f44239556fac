"""Where decoding time goes: the work a search does, the rate it does it at, and a profile.

    python benchmarks/decode_profile.py MODEL_DIR --src test.en [--beam 5] [--precision fp32] [--profile]
    python benchmarks/decode_profile.py MODEL_DIR --src test.en --batch-size 1 --python-profile   # as the server decodes

Counts what the search asks of the model — decoder steps, hypothesis rows per step (every live
hypothesis of every sentence still searched), source tokens encoded — and turns them into
multiply-adds with ``Seq2Seq.multiply_adds``: the arithmetic the search needed, whatever the toolkit.
Achieved GFLOP/s against this machine's measured matrix-multiply rate says how much of the time goes
to arithmetic; rows per sentence say how much arithmetic the search algorithm asks for, and the
steps and time by rows per step (``steps_by_rows``) how full the steps are: a step costs nearly as
much with a few rows as with a batch's worth (it reads every weight), so many steps of a few rows mean
time lost to the last long outputs of batches.
``--profile`` adds a ``torch.profiler`` table of the operators that take the time and splits the
time into matrix products, other operators and the time outside operators (a second pass:
profiling slows the run down); ``--python-profile`` a cProfile table of the Python functions by their
own time (tokenization, search bookkeeping, tensor calls), the fixed costs that dominate short outputs
and batches of one sentence (``--batch-size 1``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import RESULTS, matmul_gflops, timed_translation, write_json


ROW_BUCKETS = (1, 8, 32, 64, 320)  # steps by their number of hypothesis rows: 1, 2-8, 9-32, 33-64, 65-320, more


def row_bucket(rows: int) -> str:
    """The name of the bucket of ``ROW_BUCKETS`` a step of ``rows`` rows falls in."""
    lower = 1
    for upper in ROW_BUCKETS:
        if rows <= upper:
            return f"{lower}-{upper}" if lower < upper else str(upper)
        lower = upper + 1
    return f">{ROW_BUCKETS[-1]}"


class SearchCounter:
    """Counts the calls search makes to a model's ``encode`` and ``step`` (instance attributes shadow
    them), and clocks the time spent inside them: the rest of a run is search bookkeeping, batching,
    tokenization and detokenization."""

    def __init__(self, model) -> None:
        self.steps = self.rows = self.source_tokens = self.sentences = 0
        self.source_rows = 0.0  # sum over rows of their padded source length, for the attention terms
        self.encode_seconds = self.step_seconds = 0.0
        # row bucket -> [steps, seconds], the buckets in order
        self.by_rows = {row_bucket(rows): [0, 0.0] for rows in (*ROW_BUCKETS, ROW_BUCKETS[-1] + 1)}
        encode, step = model.encode, model.step

        def counted_encode(src, src_lengths):
            self.sentences += src.size(0)
            self.source_tokens += int(src_lengths.sum())
            started = time.perf_counter()
            result = encode(src, src_lengths)
            self.encode_seconds += time.perf_counter() - started
            return result

        def counted_step(prev_tokens, state, memory):
            self.steps += 1
            self.rows += prev_tokens.size(0)
            states = getattr(memory, "inner", memory).states  # a shortlisted model wraps the model's memory
            self.source_rows += prev_tokens.size(0) * states.size(1)
            started = time.perf_counter()
            result = step(prev_tokens, state, memory)
            elapsed = time.perf_counter() - started
            self.step_seconds += elapsed
            bucket = self.by_rows[row_bucket(prev_tokens.size(0))]
            bucket[0] += 1
            bucket[1] += elapsed
            return result

        model.encode, model.step = counted_encode, counted_step

    def summary(self, model, seconds: float) -> dict:
        """``model``: an fp32 model of the same shape (a quantized one does not expose its weights' sizes)."""
        mean_src = self.source_rows / max(self.rows, 1)
        per_source, per_target = model.multiply_adds(src_len=mean_src)
        macs = self.source_tokens * per_source + self.rows * per_target
        return {"sentences": self.sentences, "seconds": round(seconds, 2),
                "sentences_per_second": round(self.sentences / seconds, 1),
                "decoder_steps": self.steps, "hypothesis_rows": self.rows,
                "rows_per_sentence": round(self.rows / max(self.sentences, 1), 1),
                "rows_per_step": round(self.rows / max(self.steps, 1), 1),
                "mflop_per_sentence": round(2 * macs / max(self.sentences, 1) / 1e6, 1),
                "gflops": round(2 * macs / seconds / 1e9, 1),
                **self.time_split(seconds),
                "steps_by_rows": {bucket: {"steps": steps, "seconds": round(spent, 3),
                                           "share_of_step_time": round(spent / max(self.step_seconds, 1e-9), 3)}
                                  for bucket, (steps, spent) in self.by_rows.items() if steps}}

    def time_split(self, seconds: float) -> dict:
        """Milliseconds per sentence inside the model's encode, inside its steps, and outside the model
        (search bookkeeping, batching, tokenization, detokenization), of a run of ``seconds``."""
        outside = seconds - self.encode_seconds - self.step_seconds
        per_sentence = 1e3 / max(self.sentences, 1)
        return {"encode_ms_per_sentence": round(self.encode_seconds * per_sentence, 3),
                "step_ms_per_sentence": round(self.step_seconds * per_sentence, 3),
                "outside_model_ms_per_sentence": round(outside * per_sentence, 3),
                "outside_model_share": round(outside / seconds, 3)}


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_addmm_activation", "aten::baddbmm")


def time_breakdown(averages, seconds: float, sentences: int) -> dict:
    """Where a profiled run's wall time went, per sentence: matrix products (the arithmetic that
    any decoder of this model does), the other operators (element-wise work, softmax, top-k,
    indexing, copies, allocation), and the time outside every operator (Python: search bookkeeping,
    module calls, tokenization, detokenization; and the profiler's own overhead, which inflates this
    share). ``averages``: ``torch.profiler``'s ``key_averages()``, whose self times add up to the
    time spent inside operators on the calling thread."""
    products = sum(event.self_cpu_time_total for event in averages if event.key in MATRIX_PRODUCTS) / 1e6
    operators = sum(event.self_cpu_time_total for event in averages) / 1e6
    calls = sum(event.count for event in averages)
    parts = {"matrix products": products, "other operators": operators - products,
             "outside operators (Python, profiler)": max(seconds - operators, 0.0)}
    return {"profiled_seconds": round(seconds, 2), "operator_calls_per_sentence, nested included": round(calls / sentences, 1),
            **{f"{name}, ms per sentence": round(1e3 * value / sentences, 3) for name, value in parts.items()},
            **{f"{name}, share": round(value / seconds, 3) for name, value in parts.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--src", type=Path, required=True, help="source sentences, one a line (plain or .gz)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table")
    parser.add_argument("--batch-size", type=int, default=0, help="sentences per batch; 0: the model's decode.batch_size")
    parser.add_argument("--python-profile", action="store_true", help="also print a cProfile table (own time)")
    parser.add_argument("--no-ceiling", action="store_true", help="do not measure the matrix-multiply rate")
    parser.add_argument("--max-output-length", type=int, default=0,
                        help="stop outputs at this many tokens, as Joey NMT's testing.max_output_length (0: attnmt's own limit)")
    parser.add_argument("--shortlist", action="store_true",
                        help="decode with the model's vocabulary shortlist (the MFLOP figures still count the full output layer)")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode_profile.json",
                        help="write the figures as JSON here (default docs/results/decode_profile.json)")
    args = parser.parse_args(argv)
    from attnmt.data.corpus import read_lines
    from attnmt.model import Seq2Seq
    from attnmt.translator import Translator

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = read_lines(args.src)
    translator = Translator.load(args.model_dir, precision=args.precision, shortlist=args.shortlist)
    if args.batch_size:
        translator.config.decode.batch_size = args.batch_size
    if args.max_output_length:
        translator.config.decode = replace(translator.config.decode, max_length_ratio=0.0,
                                           max_length_extra=args.max_output_length)
    translator.translate(sources[:32], beam=args.beam)  # warm-up, before the counting starts
    counter = SearchCounter(translator.model)
    outputs, seconds = timed_translation(translator, sources, args.beam, warmup=0)
    shape = Seq2Seq.from_config(translator.config.model, translator.src_tokenizer.vocab_size,
                                translator.trg_tokenizer.vocab_size)
    report = {"model_dir": str(args.model_dir), "beam": args.beam, "precision": args.precision, "shortlist": args.shortlist,
              "batch_size": translator.config.decode.batch_size, "threads": torch.get_num_threads(),
              "mean_output_words": round(sum(len(t.text.split()) for t in outputs) / max(len(outputs), 1), 2),
              **counter.summary(shape, seconds)}
    if not args.no_ceiling:
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        report["matmul_gflops"] = round(matmul_gflops(torch.get_num_threads(), dtype), 1)
        report["fraction_of_matmul_rate"] = round(report["gflops"] / report["matmul_gflops"], 3)
    print(json.dumps(report, indent=1))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            translator.translate(sources, beam=args.beam)
        profiled_seconds = time.perf_counter() - started
        averages = profiler.key_averages()
        table = averages.table(sort_by="self_cpu_time_total", row_limit=15)
        print(table)
        report["profile"] = table
        report["time_breakdown"] = time_breakdown(averages, profiled_seconds, len(sources))
        print(json.dumps(report["time_breakdown"], indent=1))
    if args.python_profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(translator.translate, sources, beam=args.beam)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        print(text.getvalue())
        report["python_profile"] = text.getvalue()
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
