"""One asyncio event loop in a thread of its own, for the server's ports.

The gRPC and REST servers run on it; the main thread loads models, watches
signals and calls into the loop with `run`.
"""

import asyncio
import threading
from typing import Awaitable, TypeVar

T = TypeVar('T')


class EventLoopThread:
    """An event loop running in a daemon thread until `close`."""

    def __init__(self, name: str = 'event-loop'):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=name,
                                        daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = None) -> T:
        """Runs a coroutine on the loop; returns its result (or raises)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def close(self) -> None:
        """Stops the loop and waits for its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
