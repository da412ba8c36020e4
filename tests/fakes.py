"""Test doubles shared by the scheduler tests."""

import datetime
import time
from typing import Any, Callable, List


class FakeClock:
    """A clock for tests: ``sleep`` advances time instantly.

    Args:
        start: Initial time (timezone-aware).
        real_sleep: Real seconds each ``sleep`` also takes, for tests where
            another process must make progress meanwhile.

    Attributes:
        sleeps: Every ``sleep`` duration requested, in order.
    """

    def __init__(self, start: datetime.datetime, real_sleep: float = 0.0):
        if start.tzinfo is None:
            raise ValueError('FakeClock needs a timezone-aware start time')
        self._now = start
        self._real_sleep = real_sleep
        self._callbacks: List[tuple] = []
        self.sleeps: List[float] = []

    def now(self) -> datetime.datetime:
        """Returns the fake current time."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Records the sleep and advances time by ``seconds``."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        if self._real_sleep:
            time.sleep(self._real_sleep)

    def advance(self, seconds: float) -> None:
        """Advances time, firing the ``call_at`` callbacks that come due."""
        target = self._now + datetime.timedelta(seconds=max(0.0, seconds))
        while self._callbacks and self._callbacks[0][0] <= target:
            when, _, callback = self._callbacks.pop(0)
            self._now = max(self._now, when)
            callback()
        self._now = target

    def call_at(self, when: datetime.datetime, callback: Callable[[],
                                                                  Any]) -> None:
        """Calls ``callback`` when time reaches ``when`` (during a sleep)."""
        self._callbacks.append((when, len(self._callbacks), callback))
        self._callbacks.sort(key=lambda entry: (entry[0], entry[1]))
