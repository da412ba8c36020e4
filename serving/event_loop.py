"""Event loops in threads of their own, and the model work's worker threads.

The gRPC server runs on one loop and the REST server on another; their
requests' model work runs on the worker threads. The main thread loads
models, watches signals and calls into a loop with `run`.

Which loop (measured with `wrk -c64` and 64 concurrent gRPC calls on a
two-core machine, docs/serving-front-end.md): grpc.aio costs a third less
CPU a call on uvloop's loop (libuv) than on asyncio's own. aiohttp does not
gain from it: uvloop writes a response holding the GIL (a third of the
loop's GIL time under load went to that `write`), asyncio's socket
transport releases it, so REST stays on asyncio's loop.
"""

import asyncio
import collections
import queue
import threading
from typing import Awaitable, Callable, Deque, List, Tuple, TypeVar

import uvloop

T = TypeVar('T')


class EventLoopThread:
    """An event loop running in a daemon thread until `close`."""

    def __init__(self, name: str = 'event-loop', libuv: bool = False):
        """Starts the loop: uvloop's if `libuv`, else asyncio's own."""
        self._loop = (uvloop.new_event_loop()
                      if libuv else asyncio.new_event_loop())
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


class WorkerPool:
    """Bounded worker threads that run blocking calls for an event loop.

    `run` awaits a call on a worker. Cheaper a call than
    `loop.run_in_executor`: no concurrent.futures.Future chained to an
    asyncio one, and results come back in batches, one loop wake-up for
    every result that finished while the loop was busy (under load, one
    for many). Threads start as calls find none idle, up to `max_threads`,
    and stay.
    """

    def __init__(self, max_threads: int, name: str):
        self._max_threads = max(1, max_threads)
        self._name = name
        self._calls: 'queue.SimpleQueue' = queue.SimpleQueue()
        # (waiter, whether the call returned, its result or exception)
        self._done: Deque[Tuple[asyncio.Future, bool, object]]
        self._done = collections.deque()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._idle = 0
        self._waking = False
        self._closed = False

    async def run(self, fn: Callable[..., T], *args) -> T:
        """fn(*args) on a worker thread; its result (or its exception)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError('worker pool is shut down')
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max_threads:
                thread = threading.Thread(
                    target=self._work,
                    args=(loop,),
                    name=f'{self._name}_{len(self._threads)}',
                    daemon=True)
                self._threads.append(thread)
                thread.start()
        self._calls.put((future, fn, args))
        return await future

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        calls, done = self._calls, self._done
        while True:
            item = calls.get()
            if item is None:
                return
            future, fn, args = item
            if future.cancelled():
                ok, value = False, None
            else:
                try:
                    ok, value = True, fn(*args)
                except BaseException as e:  # pylint: disable=broad-except
                    ok, value = False, e
            del item, fn, args
            with self._lock:
                done.append((future, ok, value))
                wake = not self._waking
                self._waking = True
                self._idle += 1
            del future, value
            if wake:
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # The loop is closed.
                    return

    def _deliver(self) -> None:
        """On the loop: hands every finished call's result to its waiter."""
        with self._lock:
            self._waking = False
            finished = list(self._done)
            self._done.clear()
        for future, ok, value in finished:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            elif value is not None:
                future.set_exception(value)

    def shutdown(self) -> None:
        """On the loop: refuses new calls and cancels the queued ones.

        The threads end once their running calls have.
        """
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(threads):
            self._calls.put(None)
