"""How attnmt scales with the corpus: preparing, starting to train and training on 29 k to 10 M
sentence pairs, and translating a file of a million lines, each in a fresh process whose memory is
sampled (peak RSS and peak RssAnon, the memory it allocated itself).

    python benchmarks/scale.py                       # about an hour on 2 cores; 3 GB of disk in --work

The corpora are Multi30k en→de's training pairs repeated to each size (the figures measure the
pipeline, not translation quality). For each size:

1. ``attnmt prepare configs/multi30k_en_de.yaml``: SentencePiece trained on a sample drawn while
   streaming, the pairs encoded into the token store: seconds, pairs/s, size on disk, bytes per token;
2. ``attnmt train`` on the prepared store for ``--train-steps`` steps (fp32, validation on 100
   sentences at the end only): seconds from the start of the command to the first step, target
   tokens/s (median of the logged windows after the first), peak RSS and RssAnon.

Then ``attnmt translate`` of ``--translate-lines`` lines of dates with the quickstart model (trained
here first), greedy: sentences/s and peak memory; with ``--before TREE`` the same through an older
checkout (``git worktree add /tmp/before87 87d4bfc``, the commit before streaming: translate reads
all lines and writes them in one call) in the same run, for the ratio. The older code is given a
copy of the model whose config.yaml holds only the keys it knows (the weights are the same).

Writes ``--out`` (default docs/results/scale.json), its Markdown twin and a plot (``.png``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import (
    command_line,
    REPO,
    RESULTS,
    attnmt_command,
    machine,
    multi30k_dir,
    read_metrics,
    require_multi30k,
    run_measured,
    write_json,
)

CONFIG = REPO / "configs" / "multi30k_en_de.yaml"


def repeated_corpus(data: Path, work: Path, pairs: int) -> Path:
    """Multi30k's training pairs repeated to ``pairs`` lines, as plain files; the prefix."""
    prefix = work / f"train_{pairs}"
    if Path(f"{prefix}.de").exists():
        return prefix
    for lang in ("en", "de"):
        with gzip.open(data / f"train.{lang}.gz", "rb") as handle:
            lines = [line + b"\n" for line in handle.read().rstrip(b"\n").split(b"\n")]
        with open(f"{prefix}.{lang}.tmp", "wb") as out:
            for start in range(0, pairs, len(lines)):
                out.writelines(lines[: min(len(lines), pairs - start)])
        os.replace(f"{prefix}.{lang}.tmp", f"{prefix}.{lang}")
    return prefix


def check(measured, what: str):
    if measured.returncode != 0:
        raise SystemExit(f"{what} failed:\n{measured.stderr[-3000:]}")
    return measured


def measure_size(pairs: int, data: Path, work: Path, steps: int) -> dict:
    prefix = repeated_corpus(data, work, pairs)
    model_dir = work / f"model_{pairs}"
    shutil.rmtree(model_dir, ignore_errors=True)  # a store left by an earlier run would be reused: time 0
    overrides = ["--set", f"data.train={prefix}", "--set", f"data.valid={data}/val", "--set", "train.precision=fp32"]
    prepared = check(run_measured(attnmt_command("prepare", str(CONFIG), "--model-dir", str(model_dir),
                                                 "--no-progress", *overrides)), f"prepare {pairs}")
    store = model_dir / "data" / "train"
    meta = json.loads((store / "meta.json").read_text())
    size = sum(path.stat().st_size for path in store.iterdir())
    started = time.time()
    trained = check(run_measured(attnmt_command(
        "train", str(CONFIG), "--model-dir", str(model_dir), "--no-progress", *overrides,
        "--set", f"train.max_steps={steps}", "--set", "train.max_time=0", "--set", "train.log_every=1",
        "--set", f"train.valid_every={steps}", "--set", "train.valid_max_sentences=100")), f"train {pairs}")
    windows = read_metrics(model_dir, "train")
    rates = sorted(e["tokens_per_second"] for e in windows[1:])
    return {
        "pairs": pairs,
        "prepare_seconds": round(prepared.seconds, 1),
        "prepare_pairs_per_second": round(pairs / prepared.seconds),
        "prepare_peak_rss_mib": round(prepared.peak_rss / 1024),
        "prepare_peak_rss_anon_mib": round(prepared.peak_rss_anon / 1024),
        "store_bytes": size,
        "store_bytes_per_token": round(size / sum(meta["tokens"].values()), 3),
        "seconds_to_first_step": round(windows[0]["time"] - started, 1),
        "train_steps": len(windows),
        "train_tokens_per_second": round(rates[len(rates) // 2]) if rates else None,
        "train_peak_rss_mib": round(trained.peak_rss / 1024),
        "train_peak_rss_anon_mib": round(trained.peak_rss_anon / 1024),
    }


def model_for_older_code(model_dir: Path, tree: Path, work: Path) -> Path:
    """A copy of ``model_dir`` whose config.yaml keeps only the keys the code in ``tree`` knows."""
    import yaml

    known = json.loads(subprocess.run(
        [sys.executable, "-c", "import json; from attnmt.config import Config; print(json.dumps(Config().to_dict()))"],
        env=env_for(tree), check=True, capture_output=True, text=True).stdout)
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    kept = {section: {key: value for key, value in values.items() if key in known[section]}
            for section, values in config.items() if section in known}
    copy = work / "quickstart_model_for_older_code"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "data"))
    (copy / "config.yaml").write_text(yaml.safe_dump(kept, sort_keys=False), encoding="utf-8")
    return copy


def env_for(tree: Path | None) -> dict:
    """The environment that makes a child import attnmt from ``tree``'s src/ (None: this checkout)."""
    if tree is None:
        return dict(os.environ)
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    found = subprocess.run([sys.executable, "-c", "import attnmt; print(attnmt.__file__)"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to((tree / "src").resolve()):
        raise SystemExit(f"--before {tree}: the child imports attnmt from {found}, not from {tree / 'src'}")
    return env


def measure_translate(work: Path, lines: int, before: Path | None) -> dict:
    """The quickstart model translating ``lines`` dates, greedy, through this tree and ``before``."""
    from attnmt.datasets.dates import generate_pairs

    model_dir = work / "quickstart" / "model"
    if not (model_dir / "model.safetensors").exists():
        check(run_measured(attnmt_command("quickstart", "--out", str(work / "quickstart"), "--no-progress")),
              "quickstart")
    source = work / f"dates_{lines}.src"
    if not source.exists():
        source.write_text("".join(src + "\n" for src, _ in generate_pairs(lines, seed=7)), encoding="utf-8")
    runs = {}
    for name, tree in (("streaming", None), ("one call (before)", before)):
        if name != "streaming" and tree is None:
            continue
        model = model_dir if tree is None else model_for_older_code(model_dir, tree, work)
        output = work / f"dates_{lines}.{name.split()[0]}.out"
        measured = check(run_measured(attnmt_command("translate", str(model), "-i", str(source), "-o", str(output),
                                                     "--beam", "1"), env=env_for(tree)), f"translate ({name})")
        written = sum(1 for _ in open(output, encoding="utf-8"))
        assert written == lines, f"{name}: {written} lines written for {lines}"
        runs[name] = {"seconds": round(measured.seconds, 1), "sentences_per_second": round(lines / measured.seconds),
                      "peak_rss_mib": round(measured.peak_rss / 1024),
                      "peak_rss_anon_mib": round(measured.peak_rss_anon / 1024)}
        print(name, runs[name], flush=True)
    report = {"lines": lines, "model": "the quickstart model (greedy)", "runs": runs}
    if len(runs) == 2:  # other batches, same model: rounding may flip a rare greedy choice, no more
        with open(work / f"dates_{lines}.streaming.out", encoding="utf-8") as a, \
                open(work / f"dates_{lines}.one.out", encoding="utf-8") as b:
            report["lines_that_differ"] = sum(x != y for x, y in zip(a, b))
    return report


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch "
             f"{report['machine']['torch']}. Command: `{report['command']}`", "",
             "| training pairs | prepare s | pairs/s | store MiB | bytes/token | prepare peak RssAnon MiB | "
             "s to first step | tokens/s | train peak RSS MiB | train peak RssAnon MiB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["sizes"]:
        lines.append(f"| {r['pairs']:,} | {r['prepare_seconds']} | {r['prepare_pairs_per_second']:,} | "
                     f"{r['store_bytes'] / 2**20:.1f} | {r['store_bytes_per_token']} | {r['prepare_peak_rss_anon_mib']} | "
                     f"{r['seconds_to_first_step']} | {r['train_tokens_per_second']} | {r['train_peak_rss_mib']} | "
                     f"{r['train_peak_rss_anon_mib']} |")
    if report.get("translate"):
        t = report["translate"]
        differ = f" ({t['lines_that_differ']} lines differ between the two)" if "lines_that_differ" in t else ""
        lines += ["", f"Translating {t['lines']:,} lines with {t['model']}{differ}:", "",
                  "| translate | seconds | sentences/s | peak RSS MiB | peak RssAnon MiB |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {r['seconds']} | {r['sentences_per_second']} | {r['peak_rss_mib']} | "
                  f"{r['peak_rss_anon_mib']} |" for name, r in t["runs"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = [r["pairs"] for r in report["sizes"]]
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    panels = [("prepare_seconds", "prepare (s)"), ("seconds_to_first_step", "train start to first step (s)"),
              ("train_tokens_per_second", "training target tokens/s"),
              ("train_peak_rss_anon_mib", "peak RssAnon while training (MiB)")]
    for index, (key, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        axes.plot(sizes, [r[key] for r in report["sizes"]], marker="o")
        axes.set_xscale("log")
        axes.set_xlabel("training pairs")
        axes.set_title(label, fontsize=9)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="29000,290000,2900000,10000000")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--translate-lines", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, help="an older attnmt source tree to translate with too")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "scale")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    require_multi30k(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "command": command_line("scale.py", argv), "sizes": []}
    if args.translate_lines:
        report["translate"] = measure_translate(args.work, args.translate_lines, args.before)
        write_report(report, args.out)
    for pairs in (int(size) for size in args.sizes.split(",") if size):
        report["sizes"].append(measure_size(pairs, args.data, args.work, args.train_steps))
        print(report["sizes"][-1], flush=True)
        write_report(report, args.out)
    print(markdown(report))


def write_report(report: dict, out: Path) -> None:
    """The JSON, its Markdown twin and the plot, after every measurement (a crash keeps what was done)."""
    write_json(out, report)
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    if report["sizes"]:
        plot(report, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
