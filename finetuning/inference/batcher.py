"""Dynamic micro-batching: concurrent requests wait a few milliseconds to share one forward
pass, so a busy service runs batches instead of one pass per request."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Pending = tuple[list, asyncio.Future, float]  # inputs (texts or pairs), result, when queued


class MicroBatcher:
    """Collects requests for up to `max_wait_ms` or until `max_batch` texts, runs `predict`
    on them together in one worker thread (the event loop keeps accepting), and hands each
    request its own rows back. A request larger than `max_batch` runs alone. `on_wait`,
    if given, hears how long each request queued before its batch started (seconds)."""

    def __init__(self, predict: Callable[[list], np.ndarray], max_batch: int,
                 max_wait_ms: float, on_wait: Callable[[float], None] | None = None):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.on_wait = on_wait
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None
        self.batches = self.texts = 0  # run so far (/health reports them)

    def start(self) -> None:
        """Begin serving the queue (inside the running event loop)."""
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop taking work; requests still queued fail rather than hang."""
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while not self.queue.empty():
            _, future, _ = self.queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list) -> np.ndarray:
        """The logits of `texts`, computed in some batch with other requests' texts."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        await self.queue.put((texts, future, loop.time()))
        return await future

    async def collect(self) -> list[Pending]:
        """The next batch: the first request waiting, then whatever else arrives in time."""
        batch = [await self.queue.get()]
        size = len(batch[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while size < self.max_batch and (left := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except TimeoutError:
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def run(self) -> None:
        """Serve batches until stopped."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.collect()
            if self.on_wait is not None:
                for _, _, queued in batch:
                    self.on_wait(loop.time() - queued)
            texts = [text for request, _, _ in batch for text in request]
            try:
                logits = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception as err:  # the model failed: every waiting request learns why
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.batches += 1
            self.texts += len(texts)
            start = 0
            for request, future, _ in batch:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(logits[start:start + len(request)])
                start += len(request)
