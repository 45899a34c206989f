"""DynamicBatcher on its own (the server's tests drive it through HTTP): when a batch waits and
when it does not, the queue bound, and an engine failure reaching every waiting caller."""

import asyncio
import time

import pytest
import torch

from effnet.deploy.batching import DynamicBatcher, Overloaded


def batcher(sizes: list[int], *, max_batch=8, max_wait_ms=200.0, capacity=64, fail=False) -> DynamicBatcher:
    def run(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(len(batch))
        if fail:
            raise RuntimeError("engine broke")
        return batch * 2

    return DynamicBatcher(run, max_batch=max_batch, max_wait_ms=max_wait_ms, capacity=capacity)


def test_a_backlog_runs_at_once_without_waiting_for_more():
    # 5 items queued before the collector starts: the engine was busy, so they are a batch already;
    # waiting the full 10 s max_wait here would leave the engine idle.
    async def main():
        sizes = []
        b = batcher(sizes, max_wait_ms=10_000)
        b.start()
        b.tasks[0].cancel()  # hold the collector back until the backlog is queued
        await asyncio.gather(b.tasks[0], return_exceptions=True)
        pending = [asyncio.create_task(b.submit(torch.full((2,), float(i)))) for i in range(5)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        b.tasks = [asyncio.create_task(b._collect())]
        outputs = await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        await b.stop()
        return sizes, outputs, elapsed

    sizes, outputs, elapsed = asyncio.run(main())
    assert sizes == [5] and elapsed < 2.0
    assert [o.tolist() for o in outputs] == [[2.0 * i] * 2 for i in range(5)]


def test_a_lone_item_waits_for_company_up_to_max_wait():
    async def main():
        sizes = []
        b = batcher(sizes, max_wait_ms=500)
        b.start()
        first = asyncio.create_task(b.submit(torch.zeros(1)))
        await asyncio.sleep(0.05)  # well inside max_wait: joins the first item's batch
        second = asyncio.create_task(b.submit(torch.ones(1)))
        await asyncio.gather(first, second)
        alone_start = time.perf_counter()
        await b.submit(torch.ones(1))  # nobody follows: runs alone once max_wait has passed
        alone = time.perf_counter() - alone_start
        await b.stop()
        return sizes, alone

    sizes, alone = asyncio.run(main())
    assert sizes == [2, 1]
    assert 0.45 <= alone < 3.0


def test_a_full_queue_refuses_at_once_and_an_engine_failure_reaches_every_caller():
    async def main():
        sizes = []
        b = batcher(sizes, capacity=3, max_wait_ms=100, fail=True)
        b.start()
        calls = [asyncio.create_task(b.submit(torch.zeros(1))) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit(torch.zeros(1))
        results = await asyncio.gather(*calls, return_exceptions=True)
        await b.stop()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "engine broke" in str(r) for r in results)
