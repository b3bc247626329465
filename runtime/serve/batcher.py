"""Dynamic batching with backpressure: requests from many clients wait in one bounded queue, and one model thread
(the only place that calls the runner) takes them in batches of up to ``max_batch`` images, waiting at most
``max_delay`` after the first for more to arrive.

- A full queue refuses a request at once (``Overloaded``: HTTP 503 with Retry-After), so latency and memory stay
  bounded under any load.
- A request whose deadline passes while it waits is dropped, never run (``DeadlineExceeded``: HTTP 504).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from auditor_rt.runtime.serve.metrics import Metrics


class Overloaded(Exception):
    """The queue is full."""


class DeadlineExceeded(Exception):
    """The request waited past its deadline; it was not run."""


@dataclass
class Job:
    """One request's images (uint8 NHWC at the model's size), and what else it asked for."""

    images: np.ndarray
    deadline: float                 # time.monotonic()
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    explain: str | None = None
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False         # the deadline passed before the model took it: it is never run
    started: bool = False           # the model took it: it runs to the end, deadline or not


@dataclass
class JobResult:
    outputs: dict[str, np.ndarray]  # the audit graph's outputs for this job's images
    explanations: list | None       # per image, when the job asked for an attribution method
    queue_s: float
    model_s: float
    batch_size: int                 # images in the model call that ran this job


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
                 explain: Callable[[np.ndarray, str], list], max_batch: int, max_delay_s: float, max_queue: int,
                 metrics: Metrics, max_wait_s: float | None = None):
        self.run_batch, self.explain = run_batch, explain
        self.max_wait_s = max_wait_s
        self.images_per_s: float | None = None  # measured throughput of the model, smoothed
        self.max_batch, self.max_delay_s, self.max_queue = max_batch, max_delay_s, max_queue
        self.metrics = metrics
        self.queue: collections.deque[Job] = collections.deque()
        self.reserved = 0  # places promised to requests still being read and decoded
        self.running = 0   # images in the model call under way
        self.condition = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._work, name="model", daemon=True)
        self.thread.start()

    def reserve(self) -> None:
        """Take a place in the queue before the request's body is read and decoded, so that an overloaded server
        refuses at once, spending nothing on the request. Raises ``Overloaded`` when the queue (waiting plus
        reserved) is full, or when the measured throughput says a new request would wait past ``max_wait``."""
        with self.condition:
            if len(self.queue) + self.reserved >= self.max_queue or self.closed:
                raise Overloaded()
            if self.max_wait_s is not None and self.expected_wait(1) > self.max_wait_s:
                raise Overloaded()
            self.reserved += 1

    def release(self) -> None:
        """Give back a reserved place (the request failed before it reached the queue)."""
        with self.condition:
            self.reserved -= 1

    def submit(self, images: np.ndarray, deadline: float, explain: str | None = None) -> Job:
        """Queue a request into the place it reserved; await ``job.future``."""
        loop = asyncio.get_running_loop()
        job = Job(images, deadline, loop.create_future(), loop, explain)
        with self.condition:
            self.reserved -= 1
            self.queue.append(job)
            self.metrics.queue_depth = len(self.queue)
            self.condition.notify()
        return job

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self.thread.join(timeout=30)

    # ---- the model thread ------------------------------------------------------------------------------------------

    def expected_wait(self, images: int) -> float:
        """Seconds until a new request of ``images`` would be answered: the images queued or reserved ahead of it,
        the model call under way, and its own, at the measured throughput (0 before any measurement). Called
        under the lock."""
        if not self.images_per_s:
            return 0.0
        ahead = sum(len(job.images) for job in self.queue) + self.reserved
        return (ahead + self.running + images) / self.images_per_s

    def expire(self, job: Job) -> bool:
        """The waiter's deadline passed: drop the job unless the model has already taken it (then it finishes).
        Returns True when it was dropped."""
        with self.condition:
            if job.started:
                return False
            job.cancelled = True
            return True

    def _take_batch(self) -> tuple[list[Job], list[Job]]:
        """Block for a first job, then gather more until ``max_batch`` images or ``max_delay`` has passed.
        Returns the batch (marked started) and the jobs found expired on the way (never run)."""
        batch: list[Job] = []
        expired: list[Job] = []
        size = 0
        with self.condition:
            until = None
            while size < self.max_batch:
                if not self.queue:
                    if self.closed and not batch:
                        break
                    if until is None:  # nothing taken yet: wait for a first job
                        self.condition.wait()
                        continue
                    left = until - time.monotonic()
                    if left <= 0 or self.closed:
                        break
                    self.condition.wait(left)
                    continue
                job = self.queue[0]
                if job.cancelled or time.monotonic() > job.deadline:
                    expired.append(self.queue.popleft())
                    continue
                if batch and size + len(job.images) > self.max_batch:
                    break
                self.queue.popleft()
                job.started = True
                batch.append(job)
                size += len(job.images)
                self.running = self.metrics.model_images = size
                if until is None:
                    until = time.monotonic() + self.max_delay_s
            self.metrics.queue_depth = len(self.queue)
        return batch, expired

    def _work(self) -> None:
        while True:
            batch, expired = self._take_batch()
            for job in expired:
                self._finish(job, exception=DeadlineExceeded())
            if batch:
                self._run(batch)
                with self.condition:
                    self.running = self.metrics.model_images = 0
            elif self.closed and not expired:
                return

    def _run(self, jobs: list[Job]) -> None:
        images = np.concatenate([job.images for job in jobs])
        began = time.monotonic()
        try:
            outputs = self._chunked(images)
            explanations = [self.explain(job.images, job.explain) if job.explain else None for job in jobs]
        except Exception as exc:  # noqa: BLE001 - every waiting client gets the error, and the thread goes on
            for job in jobs:
                self._finish(job, exception=exc)
            return
        model_s = time.monotonic() - began
        self.metrics.batch(len(images), model_s)
        rate = len(images) / max(model_s, 1e-6)
        with self.condition:
            self.images_per_s = rate if self.images_per_s is None else 0.8 * self.images_per_s + 0.2 * rate
        start = 0
        for job, explained in zip(jobs, explanations):
            end = start + len(job.images)
            own = {name: value[start:end] for name, value in outputs.items()}
            self._finish(job, JobResult(own, explained, began - job.queued_at, model_s, len(images)))
            start = end

    def _chunked(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One request may bring more images than ``max_batch``: it runs in chunks of that size."""
        if len(images) <= self.max_batch:
            return self.run_batch(images)
        parts = [self.run_batch(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    @staticmethod
    def _finish(job: Job, result: JobResult | None = None, exception: BaseException | None = None) -> None:
        def settle():
            if job.future.done():
                return
            if exception is not None:
                job.future.set_exception(exception)
            else:
                job.future.set_result(result)

        job.loop.call_soon_threadsafe(settle)
