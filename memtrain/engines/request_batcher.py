"""Concurrent one-prompt requests served as batched engine calls.

veRL's agent loops send every turn of every session to a rollout replica as its own request, and a
replica over the in-process engine can run one engine call at a time (the engine is not re-entrant).
Serving the requests one by one would decode everything at batch 1 and prefill a GRPO group's identical
prompts once per member. Here the requests that arrive while a call runs wait, per Sampling, and the
next call takes all of them at once: the engine's continuous batching and shared prefills then apply
as they do to the local trainer's batched rollouts. This is batching at call granularity, not vLLM's
per-step scheduling: a request that arrives mid-call waits for that call to end.

Each request still samples with its own uniforms (HFEngine's per-prompt rows), so batching changes
which generator draws a request gets, never how its tokens are distributed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from memtrain.engines.base import Engine, Generation, Sampling

Tag = TypeVar("Tag")


class RequestBatcher(Generic[Tag]):
    """Serves `generate(prompt, sampling)` coroutines from batched `engine.generate` calls, one at a time.

    One worker task makes the calls, not the requests' own tasks: a caller that gives up (a cancelled
    request) only leaves its reply unread, and can neither interrupt a call that serves others nor let the
    next call start while the engine is still busy in its thread.

    `tag` is read right after each call, inside the lock, and returned with each Generation: a server
    stamps its replies with the weight version that produced them (veRL's global_steps). Whoever changes
    the engine's weights holds `lock`, so no call straddles an update.

    `wait` (seconds) is how long an idle batcher waits after a request before its first call, so that the
    rest of a burst that arrives over a few milliseconds (a turn's requests from many sessions) joins it,
    as Triton's `max_queue_delay` does; once calls run back to back, requests queue during them anyway.
    """

    def __init__(self, engine: Engine, tag: Callable[[], Tag], wait: float = 0.0) -> None:
        self.engine, self.tag, self.wait = engine, tag, wait
        self.lock = asyncio.Lock()  # one engine call, or one weight update, at a time
        self.waiting: dict[Sampling, list[tuple[list[int], asyncio.Future[tuple[Generation, Tag]]]]] = {}
        self.worker: asyncio.Task[None] | None = None

    async def generate(self, prompt: Sequence[int], sampling: Sampling) -> tuple[Generation, Tag]:
        reply: asyncio.Future[tuple[Generation, Tag]] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(sampling, []).append((list(prompt), reply))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self._work())
        return await reply

    async def _work(self) -> None:
        await asyncio.sleep(self.wait)  # at 0 still a yield: requests started together (a gather) all queue first
        while self.waiting:
            async with self.lock:
                sampling = next(iter(self.waiting))  # the oldest queue first
                await self._serve(self.waiting.pop(sampling), sampling)

    async def _serve(
        self, batch: list[tuple[list[int], asyncio.Future[tuple[Generation, Tag]]]], sampling: Sampling
    ) -> None:
        try:
            generations = await asyncio.to_thread(self.engine.generate, [prompt for prompt, _ in batch], sampling)
            tag = self.tag()
        except BaseException as error:
            # Every request of the call fails with the call's error rather than waiting forever; a worker
            # cancelled with the event loop passes its cancellation on after that.
            failure = (
                error if isinstance(error, Exception) else RuntimeError(f"the engine call was interrupted: {error!r}")
            )
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        for (_, reply), generation in zip(batch, generations, strict=True):
            if not reply.done():  # a caller that gave up leaves its reply unread
                reply.set_result((generation, tag))
