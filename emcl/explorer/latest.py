"""Latest wins: concurrent calls of one computation answered from the newest request, run on a
worker thread that yields the cores to searches.

Moving a slider sends a metrics request per step. Queuing each one would make the last
answer arrive long after the slider stopped; dropping them would leave callers without
an answer. Here every caller gets an answer, and while one computation runs, the callers
that arrive meanwhile wait for the next run, which uses the newest request
(docs/reliability.md §4).

Long computations (a metrics table, the test split's grounding) run on a :class:`Worker`: one
thread of its own at a lower CPU priority than the request threads, so a search arriving
while a table is computed gets the cores at once and the table takes what is left
(docs/reliability.md §4).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from emcl.runtime import flush_subnormals

T = TypeVar("T")
# Added to a worker thread's niceness (Linux: per thread; elsewhere nothing): a little for
# computations a caller waits for (metrics, figures), more for those nobody waits for.
WAITED_NICE = 3
BACKGROUND_NICE = 10
# A worker's torch intra-op threads, relative to the process's when negative: all cores but
# one, so a long computation never takes every core from the searches.
BACKGROUND_THREADS = -1


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (threads it starts inherit it, so the
    OpenMP team torch starts from it does too). Lowering a priority needs no privilege."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass  # no per-thread priority here: the work still runs, at the same priority


class Worker:
    """One thread that runs calls in order, ``nice`` steps below the request threads, with
    ``threads`` torch intra-op threads (negative: that many fewer than the process's, at
    least one; None: as many)."""

    def __init__(
        self, name: str, nice: int = WAITED_NICE, threads: int | None = BACKGROUND_THREADS
    ) -> None:
        self.name, self.nice, self.threads = name, nice, threads
        self._pool: ThreadPoolExecutor | None = None  # started on the first call
        self._lock = threading.Lock()

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                pool = ThreadPoolExecutor(1, self.name, initializer=self._setup)
                if self.threads is not None:
                    # torch.set_num_threads sets the calling thread's count and the one threads
                    # started later begin with; once the worker has its own, the caller sets
                    # that back to its own count (which it keeps).
                    mine = torch.get_num_threads()
                    pool.submit(lambda: None).result()
                    torch.set_num_threads(mine)
                self._pool = pool
            return self._pool

    def _setup(self) -> None:
        _lower_priority(self.nice)
        flush_subnormals()  # the process's entry point may not have (a library caller)
        if self.threads is not None:
            cores = torch.get_num_threads()
            wanted = self.threads if self.threads > 0 else cores + self.threads
            torch.set_num_threads(max(1, min(wanted, cores)))

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on the worker under ``torch.inference_mode()``, in a copy of the
        caller's context (Gradio's progress tracker lives there)."""
        context = contextvars.copy_context()

        def run() -> T:
            with torch.inference_mode():
                return context.run(fn)

        return self._start().submit(run)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker; the caller waits for it (its exception is raised here)."""
        return self.submit(fn).result()


class LatestWins(Generic[T]):
    """One computation at a time; callers that wait share the run of the newest request.
    Each run happens on ``worker`` (default: a worker of its own)."""

    def __init__(self, worker: Worker | None = None) -> None:
        self._worker = worker or Worker("latest-wins")
        self._cond = threading.Condition()
        self._running = False
        self._issued = 0  # tickets handed out
        self._done = 0  # the newest ticket whose answer is in _answer
        self._pending: Callable[[], T] | None = None
        self._answer: tuple[bool, object] = (False, None)  # (ok, value or exception)

    def call(self, compute: Callable[[], T]) -> T:
        """``compute()``, or the answer of a newer request that arrived while waiting."""
        with self._cond:
            self._issued += 1
            ticket = self._issued
            self._pending = compute
            while self._running and self._done < ticket:
                self._cond.wait()
            if self._done < ticket:  # nobody answered us yet: run the newest request
                run, run_ticket = self._pending, self._issued
                self._pending, self._running = None, True
            else:
                run = None
        if run is not None:
            try:
                answer: tuple[bool, object] = (True, self._worker.run(run))
            except BaseException as error:
                answer = (False, error)
            with self._cond:
                self._answer, self._done, self._running = answer, run_ticket, False
                self._cond.notify_all()
        with self._cond:
            ok, value = self._answer
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]


@dataclass(frozen=True)
class JobState:
    """A background job's progress (0 to 1, with its message) or its failure."""

    fraction: float = 0.0
    message: str = "waiting"
    error: str | None = None


JobProgress = Callable[[float, str], None]


class Jobs:
    """Keyed computations in the background on one :class:`Worker`. A key waiting or running
    is not queued twice; at most ``waiting`` wait (the oldest is dropped, and asking for it
    again queues it again); each job's progress or failure can be read while it runs. A job
    stores its answer where its caller reads it (a cache): :meth:`start` only reports."""

    def __init__(self, worker: Worker, waiting: int = 4, failures: int = 16) -> None:
        self._worker, self._waiting, self._failures = worker, waiting, failures
        self._lock = threading.RLock()  # a future done already calls back at once, in here
        self._jobs: OrderedDict[Hashable, Future] = OrderedDict()
        self._states: dict[Hashable, JobState] = {}

    def start(self, key: Hashable, compute: Callable[[JobProgress], object]) -> JobState:
        """Queue ``compute(progress)`` under ``key`` unless it is queued, running or failed;
        returns its state (a failure is kept, not retried: the answer would be the same)."""
        with self._lock:
            if key not in self._jobs or self._jobs[key].cancelled():
                self._states[key] = JobState()
                self._jobs[key] = self._worker.submit(lambda: compute(self._reporter(key)))
                self._jobs[key].add_done_callback(lambda future: self._finished(key, future))
                self._drop_oldest_waiting()
            return self._states.get(key, JobState(1.0, "done"))

    def state(self, key: Hashable) -> JobState | None:
        """The state of ``key``'s job; None when none is queued, running or failed."""
        with self._lock:
            return self._states.get(key)

    def _reporter(self, key: Hashable) -> JobProgress:
        def report(fraction: float, message: str) -> None:
            with self._lock:
                if key in self._states and self._states[key].error is None:
                    self._states[key] = JobState(fraction, message)

        return report

    def _finished(self, key: Hashable, future: Future) -> None:
        with self._lock:
            if self._jobs.get(key) is not future:
                return  # a dropped job, already forgotten
            error = None if future.cancelled() else future.exception()
            if error is None:
                self._jobs.pop(key, None)
                self._states.pop(key, None)
                return
            self._states[key] = JobState(1.0, "failed", f"{type(error).__name__}: {error}")
            failed = [k for k, f in self._jobs.items() if f.done()]
            for old in failed[: max(0, len(failed) - self._failures)]:
                self._jobs.pop(old)
                self._states.pop(old, None)

    def _drop_oldest_waiting(self) -> None:
        waiting = [k for k, f in self._jobs.items() if not f.running() and not f.done()]
        for key in waiting[: max(0, len(waiting) - self._waiting)]:
            if self._jobs[key].cancel():  # its callback forgets it
                self._jobs.pop(key, None)
                self._states.pop(key, None)


__all__ = [
    "BACKGROUND_NICE",
    "WAITED_NICE",
    "JobProgress",
    "JobState",
    "Jobs",
    "LatestWins",
    "Worker",
]
