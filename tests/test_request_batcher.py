"""RequestBatcher: concurrent one-prompt requests become batched engine calls, one call at a time."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from tiny_llama import tiny_llama

from memtrain.engines import Generation, Sampling
from memtrain.engines.hf import HFEngine
from memtrain.engines.request_batcher import RequestBatcher

SHORT, LONG = Sampling(max_new_tokens=2), Sampling(max_new_tokens=5)


class RecordingEngine:
    """Answers each prompt with its tokens reversed; records the batches; the first call waits for `release`."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[list[list[int]], Sampling]] = []
        self.started, self.release, self.fail_on = threading.Event(), threading.Event(), fail_on

    def generate(self, prompts, sampling):
        self.calls.append(([list(p) for p in prompts], sampling))
        if len(self.calls) == 1:
            self.started.set()
            self.release.wait(10)
        if self.fail_on is not None and any(self.fail_on in p for p in prompts):
            raise RuntimeError(f"prompt with token {self.fail_on} broke the engine")
        return [Generation(tuple(reversed(p)), (0.0,) * len(p), False) for p in prompts]


async def while_first_call_runs(engine: RecordingEngine, batcher: RequestBatcher, later):
    """Start one request, and once its call is in the engine, the `later` (prompt, sampling) requests."""
    first = asyncio.ensure_future(batcher.generate([1], SHORT))
    await asyncio.to_thread(engine.started.wait, 10)
    rest = [asyncio.ensure_future(batcher.generate(prompt, sampling)) for prompt, sampling in later]
    await asyncio.sleep(0.05)  # the later requests are queued behind the running call
    engine.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_requests_that_arrive_during_a_call_share_the_next_one_per_sampling():
    engine = RecordingEngine()
    batcher = RequestBatcher(engine, tag=lambda: "v")
    later = [([2, 3], SHORT), ([4], LONG), ([5, 6, 7], SHORT), ([8], SHORT)]
    replies = asyncio.run(while_first_call_runs(engine, batcher, later))
    assert engine.calls == [([[1]], SHORT), ([[2, 3], [5, 6, 7], [8]], SHORT), ([[4]], LONG)]
    assert [reply[0].token_ids for reply in replies] == [(1,), (3, 2), (4,), (7, 6, 5), (8,)]
    assert {reply[1] for reply in replies} == {"v"}
    assert not batcher.waiting


def test_requests_started_together_are_one_call_equal_to_the_engines_own_batch():
    """A gather of requests is one engine call: with the same generator seed, the tokens of one batched call."""
    model = tiny_llama(64)
    prompts = [[5, 9, 3], [7, 2], [5, 9, 3], [11, 4, 6, 8]]
    sampling = Sampling(max_new_tokens=6, temperature=1.0)
    direct = HFEngine(model, 0, torch.Generator().manual_seed(3)).generate(prompts, sampling)
    served = HFEngine(model, 0, torch.Generator().manual_seed(3))
    calls = []
    recorded = served.generate
    served.generate = lambda batch, s: calls.append(len(batch)) or recorded(batch, s)
    batcher = RequestBatcher(served, tag=lambda: 0)

    async def together():
        return await asyncio.gather(*[batcher.generate(prompt, sampling) for prompt in prompts])

    assert [generation for generation, _ in asyncio.run(together())] == direct
    assert calls == [len(prompts)]


@pytest.mark.parametrize(("wait", "calls"), [(0.0, [[[1]], [[2]]]), (0.5, [[[1], [2]]])])
def test_an_idle_batcher_waits_for_the_rest_of_a_burst(wait, calls):
    """A request 20 ms behind the first one joins its call only when the batcher waits for bursts."""
    engine = RecordingEngine()
    engine.release.set()
    batcher = RequestBatcher(engine, tag=lambda: 0, wait=wait)

    async def burst():
        first = asyncio.ensure_future(batcher.generate([1], SHORT))
        await asyncio.sleep(0.02)
        return await asyncio.gather(first, batcher.generate([2], SHORT))

    replies = asyncio.run(burst())
    assert [batch for batch, _ in engine.calls] == calls
    assert [reply[0].token_ids for reply in replies] == [(1,), (2,)]


def test_an_engine_error_fails_every_request_of_its_call_and_the_next_call_still_runs():
    engine = RecordingEngine(fail_on=3)
    batcher = RequestBatcher(engine, tag=lambda: 0)
    replies = asyncio.run(while_first_call_runs(engine, batcher, [([2, 3], SHORT), ([5], SHORT), ([4], LONG)]))
    assert replies[0][0].token_ids == (1,) and replies[3][0].token_ids == (4,)
    for failed in replies[1:3]:
        assert isinstance(failed, RuntimeError) and "token 3 broke the engine" in str(failed)


def test_a_weight_update_holding_the_lock_waits_for_the_running_call_and_tags_the_next():
    engine = RecordingEngine()
    version = {"steps": 1}
    batcher = RequestBatcher(engine, tag=lambda: version["steps"])

    async def update():
        async with batcher.lock:
            version["steps"] = 2

    async def scenario():
        first = asyncio.ensure_future(batcher.generate([1], SHORT))
        await asyncio.to_thread(engine.started.wait, 10)
        pushed = asyncio.ensure_future(update())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.generate([2], SHORT))
        await asyncio.sleep(0.05)
        assert not pushed.done()  # the push waits for the call that is decoding
        engine.release.set()
        return await asyncio.gather(first, pushed, second)

    first, _, second = asyncio.run(scenario())
    assert first[1] == 1 and second[1] == 2


def test_a_cancelled_request_neither_interrupts_its_call_nor_lets_the_next_call_overlap_it():
    engine = RecordingEngine()
    batcher = RequestBatcher(engine, tag=lambda: 0)

    async def scenario():
        cancelled = asyncio.ensure_future(batcher.generate([1], SHORT))
        served = asyncio.ensure_future(batcher.generate([2], SHORT))  # queued before the call: in its batch
        await asyncio.to_thread(engine.started.wait, 10)
        cancelled.cancel()
        later = asyncio.ensure_future(batcher.generate([3], SHORT))
        await asyncio.sleep(0.05)
        calls_while_busy = len(engine.calls)  # the engine is still in the first call
        engine.release.set()
        return calls_while_busy, await asyncio.gather(cancelled, served, later, return_exceptions=True)

    calls_while_busy, (cancelled, served, later) = asyncio.run(scenario())
    assert calls_while_busy == 1 and engine.calls[0][0] == [[1], [2]] and engine.calls[1][0] == [[3]]
    assert isinstance(cancelled, asyncio.CancelledError)
    assert served[0].token_ids == (2,) and later[0].token_ids == (3,)
