"""Micro-batching for the web service: concurrent requests share one model call.

Requests wait in an asyncio queue; a single worker takes up to `max_batch` images and runs one
model call in a thread, so batches never overlap. What piled up during the last call goes at
once; a request that finds the server idle waits at most `max_wait_ms` for the requests already
being read or decoded (`arriving`) to join it, and not at all when there are none. With
`prepare` (the encoder, where batching does not pay), each request's images are prepared on their
own as soon as they are submitted, beside the running batch (on `threads` worker threads), and
only the batches of prepared images are run together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from rnncap.decode.inputs import stack
from rnncap.serving.api_error import ApiError


def _model_error(error: Exception) -> ApiError:
    """What a request hears when the model failed on its images (preparing or in a batch)."""
    return ApiError(500, f"model error: {error}")


@dataclass
class _Job:
    images: list  # preprocessed (3, S, S) each (tensors or arrays), or their encodings
    names: list[str]
    future: asyncio.Future


@dataclass
class Arrival:
    """One request on its way to the queue (being read or decoded): see `MicroBatcher.arriving`."""

    batcher: MicroBatcher
    on_the_way: bool = True

    def done(self, queued: bool = False) -> None:
        """Queued, or given up (an error, a timeout): no batch waits for it any longer."""
        if self.on_the_way:
            self.on_the_way = False
            self.batcher._arriving -= 1
            if not queued:
                self.batcher._wake()  # a waiting batch checks again


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    batches: int = 0
    largest_batch: int = 0


@dataclass
class MicroBatcher:
    """Collects queued jobs into batches of at most `max_batch` images and runs them in a thread.

    run_batch(images (N, 3, S, S), names) -> one result per image; batches never overlap. A job
    with more images than `max_batch` runs as a batch of its own. prepare(images (n, 3, S, S),
    alone) -> n rows, when given, runs on each request's images before it is queued (run_batch
    then gets the prepared rows, stacked by `stack_rows`), `alone` telling it that nothing else
    was running; `threads` worker threads take the preparations and the batches alike.
    """

    run_batch: Callable[[object, list[str]], list]
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 1024
    stats: BatchStats = field(default_factory=BatchStats)
    prepare: Callable[[object, bool], object] | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()  # None: an arrival gave up
        self._queued_images = 0
        self._arriving = 0  # requests being read or decoded, not queued yet
        self._markers = 0  # wake-up markers (None) in the queue
        self._carry: _Job | None = None
        self._running = 0  # calls in the worker threads (preparations and batches)
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="rnncap-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Around reading and decoding a request, up to its `submit(..., arrival)`: a request
        that finds the server idle waits (at most `max_wait_ms`) only while others are arriving."""
        arrival = Arrival(self)
        self._arriving += 1
        try:
            yield arrival
        finally:
            arrival.done()

    async def submit(self, images: list, names: list[str], arrival: Arrival | None = None) -> list:
        """Queue one request's images (prepared first, with `prepare`); resolves to their
        results. ApiError 503 when full, 500 when preparing fails. Images count as waiting from
        here, also while being prepared."""
        if self._queued_images + len(images) > self.max_queue:
            raise ApiError(503, "server busy: too many images waiting, try again later")
        self._queued_images += len(images)
        queued = False
        try:
            if self.prepare is not None:
                images = await self._prepared(images)
            job = _Job(images, names, asyncio.get_running_loop().create_future())
            if arrival is not None:
                arrival.done(queued=True)
            self._queue.put_nowait(job)
            queued = True
        finally:
            if not queued:  # preparing failed, or the request gave up meanwhile
                self._queued_images -= len(images)
        return await job.future

    async def _prepared(self, images: list) -> list:
        """`prepare` on one request's images, in a worker thread: one row per image."""
        try:
            rows = await self._in_worker(self.prepare, stack(images), self._running == 0)
        except Exception as error:
            raise _model_error(error) from None
        return list(rows)

    async def _in_worker(self, fn, *args):
        """fn(*args) in a worker thread, counted in `_running` until the call ends: a caller that
        gives up cancels a call still waiting for a thread, not one already running."""
        loop = asyncio.get_running_loop()
        self._running += 1
        call = self._executor.submit(fn, *args)
        call.add_done_callback(lambda _: loop.call_soon_threadsafe(self._call_ended))
        return await asyncio.wrap_future(call)

    def _call_ended(self) -> None:
        self._running -= 1

    def _wake(self) -> None:
        """An arrival gave up: a batch waiting for it checks again (a None in the queue)."""
        self._markers += 1
        self._queue.put_nowait(None)

    def _jobs_waiting(self) -> bool:
        return self._queue.qsize() > self._markers

    def _nobody_coming(self) -> bool:
        """No job queued and no request arriving: a wait for company would be in vain."""
        return self._arriving == 0 and not self._jobs_waiting()

    async def _next(self, deadline: float | None) -> _Job | None:
        """The next job: waits for one (deadline None), until the loop time `deadline`, or not
        at all (a deadline passed); None if none came. An arrival that gave up ends a wait once
        no other request is arriving."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        loop = asyncio.get_running_loop()
        while True:
            try:
                if deadline is None:
                    job = await self._queue.get()
                elif deadline <= loop.time():
                    job = self._queue.get_nowait()
                else:
                    job = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                return None
            if job is not None:
                self._queued_images -= len(job.images)
                return job
            self._markers -= 1
            if deadline is not None and self._nobody_coming():
                return None  # the wait is over

    async def _collect(self) -> list[_Job]:
        """The next batch. Requests that piled up while the model ran go at once; a request
        that finds the server idle waits up to `max_wait_ms` for those arriving to join it."""
        loop = asyncio.get_running_loop()
        jobs = [await self._next(None)]
        size = len(jobs[0].images)
        idle = not self._jobs_waiting()  # nothing else queued: those arriving may join
        deadline = loop.time() + (self.max_wait_ms / 1000 if idle else 0.0)
        while size < self.max_batch:
            if idle and self._nobody_coming():
                break  # waiting would only delay this batch
            job = await self._next(deadline)
            if job is None:
                break
            if size + len(job.images) > self.max_batch:
                self._carry = job  # it starts the next batch
                break
            jobs.append(job)
            size += len(job.images)
        return [job for job in jobs if not job.future.done()]  # timed-out requests dropped

    async def _work(self) -> None:
        while True:
            jobs = await self._collect()
            if not jobs:
                continue
            images = stack_rows([x for job in jobs for x in job.images])  # (N, 3, S, S)
            names = [n for job in jobs for n in job.names]
            try:
                results = await self._in_worker(self.run_batch, images, names)
            except Exception as error:  # the model failed: every waiting request hears it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(_model_error(error))
                continue
            self.stats.requests += len(jobs)
            self.stats.images += len(names)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(names))
            start = 0
            for job in jobs:
                part = results[start : start + len(job.images)]
                start += len(job.images)
                if not job.future.done():
                    job.future.set_result(part)


def stack_rows(rows: list):
    """One batch of rows: tensors stacked by torch, arrays by NumPy, tuples (an image's features
    and class logits) field by field."""
    if isinstance(rows[0], tuple):
        return tuple(stack(list(field)) for field in zip(*rows, strict=True))
    return stack(rows)
