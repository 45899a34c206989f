"""Dynamic batching for a server: requests that arrive close together run as one batch.

One image costs the engine nearly as much fixed overhead (thread wake-ups, per-op dispatch,
small-tensor inefficiency) as several, so under load a server that waits a few milliseconds
for more requests and runs them together answers more images per second. ``DynamicBatcher``
collects items from any number of asyncio tasks; a batch closes when it holds ``max_batch``
items or ``max_wait_ms`` after its first item arrived, whichever comes first, and runs on a
thread pool of ``workers`` threads (so the event loop keeps accepting requests meanwhile). Only a
batch that starts from an empty queue waits: a backlog (items queued while the engine was busy)
runs at once, as many of it as ``max_batch`` allows.

The queue is bounded: ``submit`` raises ``Overloaded`` at once when ``capacity`` items are
waiting, so that a flood of clients gets a quick "try again" rather than a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


class Overloaded(Exception):
    """The queue is full; the client should retry later."""


class DynamicBatcher:
    """``run`` takes a stacked batch (N, ...) and returns one output row per item."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int, max_wait_ms: float,
                 capacity: int, workers: int = 1, on_batch: Callable[[int, float], None] | None = None,
                 collate: Callable = torch.stack):  # fmt: skip
        # collate: how the items become run's argument (list: inputs of different sizes, e.g. detection)
        self.run, self.max_batch, self.max_wait, self.collate = run, max_batch, max_wait_ms / 1000.0, collate
        self.capacity, self.workers, self.on_batch = capacity, workers, on_batch
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effnet-batch")
        self.tasks: list[asyncio.Task] = []

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return self.queue.qsize() if self.queue is not None else 0

    def start(self) -> None:
        """Start the collector tasks on the running event loop."""
        self.queue = asyncio.Queue(maxsize=self.capacity)
        self.tasks = [asyncio.create_task(self._collect()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.pool.shutdown(wait=True)

    async def submit(self, item: torch.Tensor) -> torch.Tensor:
        """The output row for ``item``, once its batch has run."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.capacity} images are already waiting") from None
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            # Waiting is for a batch to form while the engine would otherwise idle. Items that were
            # already queued mean the engine is the bottleneck: run them now, since a wait here would
            # leave the engine idle for up to max_wait on every batch.
            deadline = loop.time() + (self.max_wait if len(batch) == 1 else 0.0)
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            # A client that gave up (disconnected) cancelled its future: do not spend the engine on it.
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self.pool, self.run, self.collate([item for item, _ in batch]))
            except Exception as exc:  # noqa: BLE001 - the engine's failure goes to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(batch), time.perf_counter() - start)
            for row, (_, future) in zip(outputs, batch, strict=True):
                if not future.done():
                    future.set_result(row)
