"""``translate`` as a stream: lines are written chunk by chunk as they are done, one line out per line
in, in memory that does not grow with the input."""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

from attnmt.translator import Translator
from toy import toy_pairs

# A child that runs the CLI and reports its peak anonymous memory, sampled every few milliseconds.
PEAK_RSS_ANON = """
import sys, threading, time
from pathlib import Path
peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
from attnmt.cli import main
code = main(sys.argv[1:])
done.set()
print(f"peak RssAnon {peak[0]} kB", file=sys.stderr)
sys.exit(code)
"""


def translate_and_measure(model_dir: Path, source: Path, output: Path) -> int:
    """Peak RssAnon (kB) of ``attnmt translate`` on ``source`` in a fresh process."""
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_ANON, "translate", str(model_dir), "-i", str(source),
                             "-o", str(output), "--beam", "1", "--batch-size", "256"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stderr.rsplit("peak RssAnon ", 1)[1].split()[0])


def test_a_100k_line_file_is_translated_line_for_line_in_memory_that_does_not_grow(toy_model_dir, tmp_path):
    sources = [source for source, _ in toy_pairs(2_000, seed=21)] + ["", "   ", "one\x0btwo"]
    lines = [sources[i % len(sources)] for i in range(100_000)]
    big, small = tmp_path / "big.en", tmp_path / "small.en"
    big.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    small.write_text("".join(line + "\n" for line in lines[:20_000]), encoding="utf-8")  # more than a chunk

    peak_small = translate_and_measure(toy_model_dir, small, tmp_path / "small.de")
    peak_big = translate_and_measure(toy_model_dir, big, tmp_path / "big.de")
    outputs = (tmp_path / "big.de").read_text(encoding="utf-8").split("\n")
    assert len(outputs) == 100_001 and outputs[-1] == ""  # one line per line, each ended
    expected = {s: t.text for s, t in zip(sources, Translator.load(toy_model_dir).translate(sources, beam=1))}
    assert outputs[:-1] == [expected[line] for line in lines]
    # Five times the input, about the same memory: each chunk's translations are written and dropped.
    # (The allocator keeps some freed memory, so peaks wander by a few tens of MB; translating the
    # 100,000 lines in one call, as before streaming, held all of them: about 5 times a chunk's ~90 MB.)
    assert peak_big - peak_small < 80 * 1024, (peak_small, peak_big)


def test_each_chunk_is_written_before_the_rest_of_the_input_arrives(toy_model_dir):
    """Through pipes: the first chunk's translations come out while stdin is still open, so a run
    stopped half-way has written every line before the stop point."""
    translator = Translator.load(toy_model_dir)
    chunk = 64 * translator.config.decode.batch_size  # CHUNK_BATCHES decoding batches
    sources = [source for source, _ in toy_pairs(chunk + chunk // 2, seed=5)]
    process = subprocess.Popen([sys.executable, "-m", "attnmt", "translate", str(toy_model_dir), "--beam", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        process.stdin.write("".join(s + "\n" for s in sources).encode("utf-8"))
        process.stdin.flush()  # all lines sent, stdin left open: the input has not ended
        first = read_lines(process, chunk)
        assert first == [t.text for t in translator.translate(sources[:chunk], beam=1)]
        assert process.poll() is None  # still waiting for the rest of its input
        process.stdin.close()
        rest = process.stdout.read().decode("utf-8").split("\n")
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    assert rest[:-1] == [t.text for t in translator.translate(sources[chunk:], beam=1)] and rest[-1] == ""


def read_lines(process: subprocess.Popen, count: int, timeout: float = 120.0) -> list[str]:
    """``count`` lines of the process's stdout (a safety timeout, never reached by a working run)."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    data = b""
    while data.count(b"\n") < count:
        assert selector.select(timeout), f"no output within {timeout} s; {len(data.splitlines())} lines so far"
        block = process.stdout.read1(65536)
        assert block, "the process ended its output early"
        data += block
    return data.decode("utf-8").split("\n")[:count]
