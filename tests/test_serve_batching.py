"""The micro-batcher on a fake decoder: what is gathered into one call, and what each request gets back."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from attnmt.serve.batching import MicroBatcher, SearchOptions
from attnmt.translator import Translation


class FakeDecoder:
    """Records each call; translates a text to its upper case, n-best as "TEXT#k"."""

    def __init__(self, hold: bool = False) -> None:
        """hold: the first call waits until ``release`` is set (``started`` says it has begun)."""
        self.calls: list[tuple[list[str], int, int]] = []
        self.threads: set[str] = set()
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, texts, beam, n_best, length_penalty):
        self.calls.append((list(texts), beam, n_best))
        self.threads.add(threading.current_thread().name)
        self.started.set()
        self.release.wait()
        return [[_translation(f"{text.upper()}#{k}") for k in range(n_best)] for text in texts]


NEVER = 3600.0  # a gathering window that only fullness closes within a test


def _translation(text: str) -> Translation:
    return Translation(text, [text], [], 0.0, 0.0, np.zeros((1, 1)))


def run(batcher: MicroBatcher, requests: list[tuple[list[str], SearchOptions, int]]):
    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts, options, n_best) for texts, options, n_best in requests))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def texts_of(results) -> list[list[str]]:
    return [[[t.text for t in n_best] for n_best in result] for result in results]


def test_concurrent_requests_share_one_call_and_get_their_own_results():
    decoder = FakeDecoder()
    batcher = MicroBatcher(decoder, max_wait=NEVER, max_batch_texts=4)  # the window closes when 4 texts are in
    requests = [(["a", "b"], SearchOptions(beam=3), 1), (["c"], SearchOptions(beam=3), 2), (["d"], SearchOptions(beam=3), 1)]
    results = run(batcher, requests)
    assert decoder.calls == [(["a", "b", "c", "d"], 3, 2)]  # one call, the largest n-best
    assert texts_of(results) == [[["A#0"], ["B#0"]], [["C#0", "C#1"]], [["D#0"]]]
    assert batcher.stats.as_dict() == {"requests": 3, "batches": 1, "texts": 4, "mean_texts_per_batch": 4.0}
    assert all(name.startswith("attnmt-decode") for name in decoder.threads)  # off the event loop


def test_different_search_options_are_decoded_apart():
    decoder = FakeDecoder()
    requests = [(["a"], SearchOptions(beam=1), 1), (["b"], SearchOptions(beam=5), 1), (["c"], SearchOptions(beam=1), 1)]
    results = run(MicroBatcher(decoder, max_wait=NEVER, max_batch_texts=3), requests)
    assert sorted(decoder.calls) == [(["a", "c"], 1, 1), (["b"], 5, 1)]
    assert texts_of(results) == [[["A#0"]], [["B#0"]], [["C#0"]]]


def test_a_full_batch_goes_without_waiting():
    decoder = FakeDecoder()
    requests = [([str(i)], SearchOptions(beam=1), 1) for i in range(4)]
    run(MicroBatcher(decoder, max_wait=NEVER, max_batch_texts=2), requests)  # only fullness closes a window
    assert [texts for texts, _, _ in decoder.calls] == [["0", "1"], ["2", "3"]]


def test_without_batching_every_request_is_its_own_call():
    decoder = FakeDecoder()
    requests = [([str(i)], SearchOptions(beam=2), 1) for i in range(4)]
    results = run(MicroBatcher(decoder, enabled=False), requests)
    assert len(decoder.calls) == 4
    assert texts_of(results) == [[["0#0"]], [["1#0"]], [["2#0"]], [["3#0"]]]


def test_a_request_that_timed_out_while_queued_is_not_decoded():
    """Events order everything: "slow" holds the decoding thread until the test lets it go, so "late"
    is still queued when its caller gives up (as a timeout does: by cancelling the request's task)."""
    decoder = FakeDecoder(hold=True)

    async def main():
        batcher = MicroBatcher(decoder, max_wait=0.0)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["slow"], SearchOptions(beam=1)))
        await asyncio.to_thread(decoder.started.wait)  # "slow" is being decoded
        late = asyncio.create_task(batcher.submit(["late"], SearchOptions(beam=1)))
        await asyncio.sleep(0)  # "late" reaches the queue behind "slow"
        late.cancel()
        decoder.release.set()
        await first
        third = await batcher.submit(["next"], SearchOptions(beam=1))
        await batcher.stop()
        return third, late.cancelled()

    third, late_cancelled = asyncio.run(main())
    assert late_cancelled
    assert [texts for texts, _, _ in decoder.calls] == [["slow"], ["next"]]
    assert third[0][0].text == "NEXT#0"


def test_a_decoding_error_reaches_every_request_of_the_batch():
    def broken(texts, beam, n_best, length_penalty):
        raise RuntimeError("boom")

    async def main():
        batcher = MicroBatcher(broken, max_wait=0.02)
        await batcher.start()
        outcomes = await asyncio.gather(batcher.submit(["a"], SearchOptions(beam=1)),
                                        batcher.submit(["b"], SearchOptions(beam=1)), return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert [str(outcome) for outcome in outcomes] == ["boom", "boom"]
