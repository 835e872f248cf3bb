"""Latest wins: concurrent calls of one computation answered from the newest request.

Moving a slider sends a metrics request per step. Queuing each one would make the last
answer arrive long after the slider stopped; dropping them would leave callers without
an answer. Here every caller gets an answer, and while one computation runs, the callers
that arrive meanwhile wait for the next run, which uses the newest request
(docs/reliability.md §4).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestWins(Generic[T]):
    """One computation at a time; callers that wait share the run of the newest request."""

    def __init__(self) -> None:
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
                answer: tuple[bool, object] = (True, run())
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


__all__ = ["LatestWins"]
