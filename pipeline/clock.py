"""Time for the scheduler: the clock it reads and sleeps on, and time zones.

The scheduler takes any ``Clock``; tests pass one whose ``sleep`` advances
time instantly (tests/fakes.py), so they never wait for wall time.
"""

import datetime
import os
import time
import zoneinfo
from typing import Protocol, Union


class Clock(Protocol):
    """Time source for the scheduler; ``now`` must be timezone-aware."""

    def now(self) -> datetime.datetime:
        ...

    def sleep(self, seconds: float) -> None:
        ...


class SystemClock:
    """Wall-clock time whose ``sleep`` returns early after ``interrupt()``.

    ``interrupt`` only sets a flag, so it is safe to call from a signal
    handler (setting a ``threading.Event`` there can deadlock on the lock the
    interrupted ``Event.wait`` holds); sleeps therefore go in short slices.

    Args:
        tick_seconds: Longest slice of a sleep, i.e. the most an interrupt
            waits to take effect.
    """

    def __init__(self, tick_seconds: float = 0.2):
        self._tick = tick_seconds
        self._interrupted = False

    def now(self) -> datetime.datetime:
        """Returns the current time in UTC."""
        return datetime.datetime.now(datetime.timezone.utc)

    def sleep(self, seconds: float) -> None:
        """Sleeps ``seconds``, or less once ``interrupt`` has been called."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self._interrupted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, self._tick))

    def interrupt(self) -> None:
        """Ends the current and all later sleeps (within one tick)."""
        self._interrupted = True


def local_timezone() -> datetime.tzinfo:
    """Returns the machine's time zone, with its DST rules if known."""
    name = os.environ.get('TZ', '').lstrip(':')
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open('/etc/localtime', 'rb') as zone_file:
            return zoneinfo.ZoneInfo.from_file(zone_file, key='localtime')
    except (OSError, ValueError):
        return datetime.datetime.now().astimezone().tzinfo


def resolve_timezone(tz: Union[datetime.tzinfo, str, None]) -> datetime.tzinfo:
    """A time zone from a name ('UTC', 'local', an IANA name) or tzinfo."""
    if tz is None or tz == 'local':
        return local_timezone()
    if isinstance(tz, str):
        if tz.upper() == 'UTC':
            return datetime.timezone.utc
        try:
            return zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'unknown time zone {tz!r}') from None
    return tz
