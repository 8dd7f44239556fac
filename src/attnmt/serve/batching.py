"""Micro-batching: requests that arrive within a few milliseconds of each other are decoded as one batch.

Decoding a batch of sentences costs little more than decoding one of them, so under concurrent load
the server answers more requests per second when it gathers them first. The model runs in one worker
thread, off the event loop: the loop keeps accepting requests (and gathering the next batch) while
PyTorch works. With batching off, every request is decoded on its own by the same single thread, so
the two modes differ only in the gathering.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from attnmt.translation import Translation

# decode(texts, beam, n_best, length_penalty) -> the n-best translations of each text, in order
DecodeFunction = Callable[[Sequence[str], int, int, "float | None"], list[list[Translation]]]


@dataclass(frozen=True)
class SearchOptions:
    """Requests with equal options can share a batch (search takes one beam size per call)."""

    beam: int
    length_penalty: float | None = None


@dataclass
class _Pending:
    texts: list[str]
    n_best: int
    options: SearchOptions
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    requests: int = 0  # requests decoded (timed-out ones that never reached the model excluded)
    batches: int = 0  # calls into the model
    texts: int = 0  # sentences decoded

    def as_dict(self) -> dict[str, float]:
        mean = self.texts / self.batches if self.batches else 0.0
        return {"requests": self.requests, "batches": self.batches, "texts": self.texts,
                "mean_texts_per_batch": round(mean, 2)}


class MicroBatcher:
    """Gathers concurrent requests for up to ``max_wait`` seconds (or ``max_batch_texts`` sentences)
    and decodes them with one call of ``decode`` in a single worker thread.

    Use inside a running event loop: ``await start()``, ``await submit(...)``, ``await stop()``.
    """

    def __init__(
        self,
        decode: DecodeFunction,
        enabled: bool = True,
        max_wait: float = 0.005,
        max_batch_texts: int = 64,
    ) -> None:
        self.decode = decode
        self.enabled = enabled
        self.max_wait = max_wait
        self.max_batch_texts = max_batch_texts
        self.stats = BatcherStats()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnmt-decode")
        if self.enabled:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._gather_and_decode(), name="attnmt-micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():  # requests that will never be decoded
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def submit(
        self, texts: Sequence[str], options: SearchOptions, n_best: int = 1
    ) -> list[list[Translation]]:
        """The ``n_best`` best translations of each text. Cancelling the awaiting task (e.g. a
        timeout) drops the request if it has not reached the model yet."""
        if self._executor is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if not self.enabled:
            return await self._run_in_worker(list(texts), options, n_best)
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Pending(list(texts), n_best, options, future))
        return await future

    async def _run_in_worker(
        self, texts: list[str], options: SearchOptions, n_best: int, requests: int = 1
    ) -> list[list[Translation]]:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(
            self._executor, self.decode, texts, options.beam, n_best, options.length_penalty
        )
        self.stats.requests += requests
        self.stats.batches += 1
        self.stats.texts += len(texts)
        return results

    async def _gather_and_decode(self) -> None:
        """The worker task: take the oldest request, gather more until its window closes, decode."""
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = first.arrived + self.max_wait  # requests that waited during the last decode go at once
            while sum(len(p.texts) for p in batch) < self.max_batch_texts:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get_nowait() if remaining <= 0 else
                                 await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            await self._decode_batch(batch)

    async def _decode_batch(self, batch: list[_Pending]) -> None:
        """Decode each group of requests with the same search options as one call; hand out results."""
        groups: dict[SearchOptions, list[_Pending]] = {}
        for pending in batch:
            if not pending.future.done():  # a request that timed out while queued is skipped
                groups.setdefault(pending.options, []).append(pending)
        for options, group in groups.items():
            texts = [text for pending in group for text in pending.texts]
            n_best = max(pending.n_best for pending in group)
            try:
                results = await self._run_in_worker(texts, options, n_best, requests=len(group))
            except Exception as error:  # a bug in decoding: every request of the group gets it
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            start = 0
            for pending in group:
                mine = results[start:start + len(pending.texts)]
                start += len(pending.texts)
                if not pending.future.done():
                    pending.future.set_result([n_best_list[:pending.n_best] for n_best_list in mine])
