"""What the benchmark scripts share: where the data is, what machine ran them, the events of a
training run, timed translation, memory figures, the matrix-multiply ceiling and writing results.

The scripts are run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``:
``from common import ...`` needs nothing more.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"  # where --out defaults: results that docs/ quotes


def data_dir() -> Path:
    """The shared data folder: $ATTNMT_DATA, default ../shared/data beside the repository."""
    return Path(os.environ.get("ATTNMT_DATA", REPO.parent / "shared" / "data"))


def multi30k_dir() -> Path:
    return data_dir() / "multi30k"


def require_multi30k(folder: Path) -> None:
    if not (folder / "train.en.gz").exists():
        raise SystemExit(f"Multi30k not found in {folder} (set ATTNMT_DATA)")


def cpu_model() -> str:
    """The CPU's name, with its family and model numbers (a name such as "AMD EPYC" spans generations)."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> dict[str, Any]:
    """The machine a result comes from: CPU, cores, torch version and threads, bf16 support."""
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in flags or "amx_bf16" in flags}


def read_metrics(model_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events of a training run's metrics.jsonl (only those named ``event``, if given)."""
    lines = (Path(model_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if event is None or e["event"] == event]


def training_rate(model_dir: Path) -> float | None:
    """The median target tokens/s of a run's "train" windows, the first (warming up) left out."""
    import statistics

    rates = [e["tokens_per_second"] for e in read_metrics(model_dir, "train")]
    rates = rates[1:] or rates
    return statistics.median(rates) if rates else None


def timed_translation(translator, sources: Sequence[str], beam: int, warmup: int = 32) -> tuple[list, float]:
    """Translate ``sources`` after a warm-up on the first ``warmup`` of them (first calls allocate and
    pick kernels): the translations and the seconds they took."""
    translator.translate(list(sources[:warmup]), beam=beam)
    started = time.perf_counter()
    outputs = translator.translate(list(sources), beam=beam)
    return outputs, time.perf_counter() - started


def scored_translation(translator, sources: Sequence[str], references: Sequence[str], beam: int) -> tuple[list, dict]:
    """``timed_translation`` scored against ``references``: the translations, and cased BLEU,
    lowercased BLEU and chrF2 (sacreBLEU, rounded to 2 decimals) with the sentences/s."""
    from attnmt.evaluate import score_corpus

    translations, seconds = timed_translation(translator, sources, beam)
    outputs = [t.text for t in translations]
    bleu, chrf = score_corpus(outputs, references, metrics=("bleu", "chrf"))
    lowercased = score_corpus(outputs, references, metrics=("bleu",), lowercase=True)[0]
    return translations, {"bleu": round(bleu.value, 2), "bleu_lowercased": round(lowercased.value, 2),
                          "chrf": round(chrf.value, 2), "sentences_per_second": round(len(sources) / seconds, 1)}


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def proc_status_kib(pid: int | str = "self") -> dict[str, int]:
    """The memory lines of /proc/PID/status (VmHWM, VmRSS, RssAnon, RssFile, ...), in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            values[key] = int(value.split()[0])
    return values


def matmul_gflops(threads: int, dtype=None, size: int = 2048, seconds: float = 3.0) -> float:
    """Sustained GFLOP/s of one square matrix product, the best case for this CPU and library."""
    import torch

    torch.set_num_threads(threads)
    dtype = dtype or torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class Measured:
    """A finished command with its wall-clock seconds and peak memory (KiB)."""

    returncode: int
    seconds: float
    peak_rss: int  # VmHWM: resident memory, mapped files included
    peak_rss_anon: int  # the largest RssAnon seen: memory the process allocated itself
    stdout: str
    stderr: str
    marks: dict  # seconds after the start at which stderr first showed each of ``watch``'s strings


def run_measured(command: list[str], watch: tuple[str, ...] = (), interval: float = 0.05, **options) -> Measured:
    """Run ``command``, sampling its /proc status every ``interval`` s for the peak RssAnon (the kernel
    keeps only the peak of the whole RSS, VmHWM), and noting when each string of ``watch`` first
    appears on its stderr (e.g. the first training log line)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
    peak = {"VmHWM": 0, "RssAnon": 0}
    stderr_lines: list[str] = []
    marks: dict[str, float] = {}

    def sample() -> None:
        while process.poll() is None:
            try:
                status = proc_status_kib(process.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            for key in peak:
                peak[key] = max(peak[key], status.get(key, 0))
            time.sleep(interval)

    def read_stderr() -> None:
        for line in process.stderr:
            stderr_lines.append(line)
            for text in watch:
                if text in line and text not in marks:
                    marks[text] = time.perf_counter() - started

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for thread in threads:
        thread.start()
    stdout = process.stdout.read()
    process.wait()
    for thread in threads:
        thread.join()
    return Measured(process.returncode, time.perf_counter() - started, peak["VmHWM"], peak["RssAnon"], stdout,
                    "".join(stderr_lines), marks)


def command_line(script: str, argv: list[str] | None) -> str:
    """How a benchmark was run, for its result file: ``python benchmarks/SCRIPT ARGS``."""
    return f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def attnmt_command(*args: str) -> list[str]:
    """``python -m attnmt ARGS`` with this interpreter."""
    return [sys.executable, "-m", "attnmt", *args]
