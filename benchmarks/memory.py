"""Where training's memory goes: RssAnon over a run, beside the steps and validations, and how many
oneDNN primitives the run creates (one per distinct matrix shape, kept in oneDNN's primitive cache).

    python benchmarks/memory.py configs/multi30k_en_de.yaml --minutes 10 --set train.precision=fp32
    python benchmarks/memory.py configs/multi30k_en_de.yaml --minutes 10 --cache-capacity 64   # bf16 CPUs

Trains in a subprocess with ``ONEDNN_VERBOSE=profile_create`` (oneDNN prints a line for every
primitive it creates: ``create:cache_miss`` for a new one, ``create:cache_hit`` for one it found in
its cache) and samples the process's RssAnon and VmHWM every second. Each row of the result is a time
point: seconds, RssAnon, the last logged step, and the primitives created so far. Memory that grows
with the count of created primitives and stops growing when they stop is oneDNN's primitive cache
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 primitives by default; ``--cache-capacity`` sets it);
memory that grows with validations or steps is something else. On CPUs without AVX-512 BF16 or AMX,
bf16 matrix products do not go through oneDNN at all (PyTorch falls back to its own slow kernels).

Writes ``--out`` (default docs/results/memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from common import RESULTS, attnmt_command, command_line, machine, multi30k_dir, proc_status_kib, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--cache-capacity", type=int, help="ONEDNN_PRIMITIVE_CACHE_CAPACITY for the run")
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="attnmt-memory-"))
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_create"}
    if args.cache_capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(args.cache_capacity)
    overrides = [f"data.train={args.data}/train", f"data.valid={args.data}/val", f"train.max_time={args.minutes}m",
                 *args.overrides]
    command = attnmt_command("train", str(args.config), "--model-dir", str(work / "model"), "--no-progress",
                             *[item for override in overrides for item in ("--set", override)])
    started = time.time()  # the clock of metrics.jsonl's "time"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    created, tail = [0], deque(maxlen=40)

    def count_primitives() -> None:
        for line in process.stdout:
            if line.startswith("onednn_verbose") and ",create:cache_miss," in line:
                created[0] += 1
            elif not line.startswith("onednn_verbose"):
                tail.append(line)

    reader = threading.Thread(target=count_primitives, daemon=True)
    reader.start()
    samples = []
    while process.poll() is None:
        try:
            status = proc_status_kib(process.pid)
        except FileNotFoundError:
            break
        metrics = work / "model" / "metrics.jsonl"
        steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines()[-1:]] if metrics.exists() else []
        samples.append({"seconds": round(time.time() - started, 1), "rss_anon_mib": round(status["RssAnon"] / 1024),
                        "peak_rss_mib": round(status["VmHWM"] / 1024), "step": steps[-1] if steps else 0,
                        "onednn_primitives_created": created[0]})
        time.sleep(1.0)
    process.wait()
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"training failed (exit {process.returncode}):\n{''.join(tail)}")
    events = [json.loads(line) for line in (work / "model" / "metrics.jsonl").read_text().splitlines()]
    report = {"machine": machine(), "command": command_line("memory.py", argv),
              "peak_rss_anon_mib": max(s["rss_anon_mib"] for s in samples),
              "peak_rss_mib": max(s["peak_rss_mib"] for s in samples),
              "validations_at_seconds": [round(e["time"] - started) for e in events if e["event"] == "valid"],
              "onednn_primitives_created": created[0], "samples": samples}
    write_json(args.out, report)
    print({key: value for key, value in report.items() if key != "samples"})


if __name__ == "__main__":
    main()
