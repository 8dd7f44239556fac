"""Load test of ``attnmt serve``: concurrent clients on loopback, micro-batching on and off.

Starts ``attnmt serve MODEL_DIR`` in a subprocess on 127.0.0.1 once per mode, lets ``--clients``
clients (one keep-alive connection each) send one sentence per request, back to back, for
``--duration`` seconds, and reports requests/s, p50 and p99 latency, errors and how many sentences
each decoding batch held. Traffic goes to 127.0.0.1 only; every loop is bounded in time and count.

    python benchmarks/serve_load.py quickstart_out/model                  # 32 clients, 30 s per mode
    python benchmarks/serve_load.py runs/en-de --clients 8 --duration 10 --beam 5 --attention

Sentences: ``--sentences FILE`` (one per line), else the source side of the model's test (or
validation) split named in its config.yaml. Needs nothing beyond attnmt itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common import RESULTS, attnmt_command, command_line, machine, write_json

HOST = "127.0.0.1"


@dataclass
class LoadResult:
    mode: str
    clients: int
    seconds: float
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    mean_sentences_per_batch: float


def load_sentences(model_dir: Path, path: Path | None) -> list[str]:
    from attnmt.store import load_config_file
    from attnmt.data.corpus import read_lines, read_parallel

    if path is not None:
        sentences = read_lines(path)
    else:
        config = load_config_file(model_dir)
        split = config.data.test or config.data.valid
        if not split:
            raise SystemExit(f"{model_dir}/config.yaml names no test or valid split: give --sentences FILE")
        sentences = read_parallel(split, config.data.src_lang, config.data.trg_lang).src
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise SystemExit("no sentences to send")
    return sentences


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(model_dir: Path, port: int, batching: bool, args: argparse.Namespace,
                 log_path: Path) -> subprocess.Popen:
    command = attnmt_command("serve", str(model_dir), "--host", HOST, "--port", str(port),
                             "--no-access-log", "--threads", str(args.threads), "--device", args.device)
    if not batching:
        command.append("--no-batching")
    log = log_path.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; see {log_path}")
        try:
            get_json(f"http://{HOST}:{port}/health")
            return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"the server did not answer within 120 s; see {log_path}")


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection that POSTs JSON. A few lines instead of a full HTTP client,
    so that the load generator spends its time waiting rather than parsing: with httpx the client
    itself capped the load near 200 requests/s and queued requests on its own side."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.writer.write(head + payload)
        response_head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(response_head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", response_head)
        if length is None:
            raise ConnectionError("a response without Content-Length")
        body = await self.reader.readexactly(int(length.group(1)))
        if re.search(rb"(?im)^connection:\s*close", response_head):
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_clients(port: int, sentences: list[str], clients: int, duration: float, max_requests: int,
                      body_extra: dict) -> tuple[list[float], int, float]:
    """Latencies (s) of the successful requests, the error count and the elapsed seconds."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    started = time.perf_counter()
    deadline = started + duration

    async def client(seed: int) -> None:
        nonlocal errors, sent
        rng = random.Random(seed)
        connection = KeepAliveConnection(port)
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            payload = json.dumps({"text": rng.choice(sentences), **body_extra}).encode()
            began = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(connection.post_json("/v1/translate", payload), timeout=60)
                ok = status == 200 and body.startswith(b'{"results"')
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                connection.close()
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
        connection.close()

    await asyncio.gather(*(client(seed) for seed in range(clients)))
    return latencies, errors, time.perf_counter() - started


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def measure(model_dir: Path, sentences: list[str], batching: bool, args: argparse.Namespace) -> LoadResult:
    port = free_port()
    mode = "micro-batching on" if batching else "micro-batching off"
    log_path = args.log_dir / f"serve_{port}.log"
    server = start_server(model_dir, port, batching, args, log_path)
    url = f"http://{HOST}:{port}"
    body_extra = {"attention": args.attention} | ({"beam": args.beam} if args.beam else {})
    try:
        asyncio.run(run_clients(port, sentences, min(args.clients, 4), args.warmup, 10_000, body_extra))
        before = get_json(f"{url}/health")["decoded"]
        latencies, errors, elapsed = asyncio.run(
            run_clients(port, sentences, args.clients, args.duration, args.max_requests, body_extra))
        after = get_json(f"{url}/health")["decoded"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    batches = after["batches"] - before["batches"]
    milliseconds = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return LoadResult(
        mode=mode, clients=args.clients, seconds=round(elapsed, 1), requests=len(latencies) + errors, errors=errors,
        requests_per_second=round(len(latencies) / elapsed, 1),
        p50_ms=round(float(np.percentile(milliseconds, 50)), 1), p99_ms=round(float(np.percentile(milliseconds, 99)), 1),
        mean_sentences_per_batch=round((after["texts"] - before["texts"]) / batches, 2) if batches else 0.0,
    )


def markdown_table(results: list[LoadResult]) -> str:
    lines = ["| mode | clients | requests | requests/s | p50 ms | p99 ms | errors | sentences per batch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.mode} | {r.clients} | {r.requests} | {r.requests_per_second} | {r.p50_ms} | {r.p99_ms} "
                     f"| {r.errors} | {r.mean_sentences_per_batch} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per mode (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of light load before measuring")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop a mode after this many requests")
    parser.add_argument("--modes", choices=["both", "on", "off"], default="both", help="micro-batching on, off or both")
    parser.add_argument("--beam", type=int, default=None, help="beam size per request (default: the model's)")
    parser.add_argument("--attention", action="store_true", help="ask for the attention matrices too")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1)")
    parser.add_argument("--device", default="cpu", help="the server's torch device (default cpu)")
    parser.add_argument("--sentences", type=Path, default=None, help="file of source sentences, one per line")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json",
                        help="write the results here as JSON (default docs/results/serve_load.json)")
    parser.add_argument("--log-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    args = parser.parse_args(argv)

    sentences = load_sentences(args.model_dir, args.sentences)
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.modes]
    results = []
    for batching in modes:
        result = measure(args.model_dir, sentences, batching, args)
        print(f"{result.mode}: {result.requests_per_second} requests/s, p50 {result.p50_ms} ms, "
              f"p99 {result.p99_ms} ms, {result.errors} errors", file=sys.stderr, flush=True)
        results.append(result)
    import torch

    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}, server on {args.device} with {args.threads} "
          f"torch thread(s); {len(sentences)} sentences; beam {args.beam or 'of the model'}; "
          f"attention {'on' if args.attention else 'off'}; {args.clients} clients, {args.duration:g} s per mode\n")
    print(markdown_table(results))
    write_json(args.out, {"machine": machine(), "command": command_line("serve_load.py", argv),
                          "results": [asdict(r) for r in results]})
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
