"""--server_processes N: N serving processes on one port, under a supervisor.

One process answers at most one request per GIL-held time of a request, so
throughput past one core needs more processes. The supervisor (the process
started as `python -m serving serve`; it never imports TensorFlow) reserves
the gRPC and REST ports, starts N children by spawning fresh interpreters
(never fork: TensorFlow's threads do not survive one), and each child loads
its own copy of the models and listens on the same ports with SO_REUSEPORT,
so that the kernel spreads new connections over them. The supervisor:

  * reserves each port for its whole life with a bound socket that does not
    listen (SO_REUSEPORT): port 0 is resolved once, a port taken by anyone
    else fails the start loudly, and nobody else can take the port while a
    child is restarting; the kernel gives connections only to listening
    sockets;
  * logs TF Serving's "Running gRPC ModelServer at ..." and "Exporting
    HTTP/REST API at ..." once every child is serving;
  * forwards SIGTERM/SIGINT: every child stops gracefully, then it exits 0;
  * restarts a child that dies, from the same ports; a child that dies
    before serving MAX_START_FAILURES times in a row stops the server;
  * fails a start that a child fails with that child's one line ("Failed to
    start server. Error: ..."), printed once, exit status 255.

Each child polls the model base path itself, so during a version swap the
processes may answer from different versions for a moment (each swaps
without failing a request). Metrics are summed across the processes
(`metrics.Metrics.share`). Logs name the process ("process 2/4 pid N:").
"""

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

MAX_START_FAILURES = 3
_STOP_GRACE_SECONDS = 30.0
_RESTART_PAUSE_SECONDS = 1.0


@dataclasses.dataclass
class Role:
    """What a child process is told: who it is and where to report."""

    index: int
    count: int
    metrics_dir: str
    connection: Any  # multiprocessing.connection.Connection
    supervisor_pid: int

    @property
    def name(self) -> str:
        return f'process {self.index + 1}/{self.count} pid {os.getpid()}'

    def ready(self, grpc_port: int, rest_port: int) -> None:
        self.connection.send(('ready', grpc_port, rest_port))

    def failed(self, message: str) -> None:
        self.connection.send(('failed', message))

    def watch_supervisor(self) -> None:
        """SIGTERM to this process when its supervisor dies (Linux)."""
        try:
            import ctypes  # pylint: disable=import-outside-toplevel
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != self.supervisor_pid:
            os.kill(os.getpid(), signal.SIGTERM)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket holding `port` (0: any).

    Raises:
      OSError: the port is taken (by anyone, SO_REUSEPORT or not).
    """
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    if port:
        # Fails if any socket holds the port, SO_REUSEPORT ones included.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


@dataclasses.dataclass
class _Child:
    index: int
    process: Any  # multiprocessing.Process
    connection: Any
    serving: bool = False
    start_failures: int = 0
    failed_with: Optional[str] = None


class Supervisor:
    """Starts, watches, restarts and stops the serving processes."""

    def __init__(self, count: int, target: Callable[..., None],
                 args: Tuple[Any, ...], fail: Callable[[str], int]):
        """`target(*args, role)` serves in a child; `fail` reports a fault."""
        self._count = count
        self._target = target
        self._args = args
        self._fail = fail
        self._context = multiprocessing.get_context('spawn')
        self._stop = threading.Event()
        self._children: Dict[int, _Child] = {}
        self._metrics_dir = ''
        self._all_serving = False

    def _start(self, index: int, start_failures: int = 0) -> None:
        ours, theirs = self._context.Pipe(duplex=False)
        role = Role(index, self._count, self._metrics_dir, theirs, os.getpid())
        process = self._context.Process(target=self._target,
                                        args=(*self._args, role),
                                        name=f'server process {index + 1}/'
                                        f'{self._count}')
        process.start()
        theirs.close()
        self._children[index] = _Child(index, process, ours, False,
                                       start_failures)

    def _stop_children(self) -> None:
        for child in self._children.values():
            if child.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for child in self._children.values():
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                logging.warning('%s ignored SIGTERM; killing it',
                                child.process.name)
                child.process.kill()
                child.process.join()
            child.connection.close()

    def run(self, ports: Tuple[int, int], on_serving: Callable[[int, int],
                                                               None]) -> int:
        """Serves until SIGTERM/SIGINT; returns the exit status.

        `ports` are the reserved gRPC and REST ports; `on_serving` is called
        once every child serves.
        """

        def on_signal(signum, _):
            logging.info('Received signal %d, stopping %d server processes',
                         signum, self._count)
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self._metrics_dir = tempfile.mkdtemp(prefix='serving-metrics-')
        try:
            for index in range(self._count):
                self._start(index)
            return self._watch(ports, on_serving)
        finally:
            self._stop_children()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _watch(self, ports: Tuple[int, int], on_serving: Callable[[int, int],
                                                                  None]) -> int:
        while not self._stop.is_set():
            owners: Dict[Any, _Child] = {}
            for child in self._children.values():
                owners[child.process.sentinel] = child
                owners[child.connection] = child
            # A signal interrupts nothing here: a short timeout lets the
            # loop see the stop.
            for ready in multiprocessing.connection.wait(list(owners), 0.5):
                child = owners[ready]
                if self._children[child.index] is not child or (
                        child.connection.closed):
                    continue  # Already handled: it exited and was replaced.
                failure = self._on_event(child, ready)
                if failure is not None:
                    return self._fail(failure)
            if not self._all_serving and all(
                    c.serving for c in self._children.values()):
                self._all_serving = True
                on_serving(*ports)
        return 0

    def _on_event(self, child: _Child, ready: Any) -> Optional[str]:
        """Handles a child's message or exit; a message to fail with."""
        if ready is child.connection:
            try:
                message = child.connection.recv()
            except (EOFError, OSError):
                return self._on_exit(child)
            if message[0] == 'ready':
                child.serving, child.start_failures = True, 0
                logging.info('%s (pid %d) serving', child.process.name,
                             child.process.pid)
            else:
                child.failed_with = message[1]
            return None
        return self._on_exit(child)

    def _on_exit(self, child: _Child) -> Optional[str]:
        """A child exited: restarts it, or returns the message to fail with."""
        child.process.join(_STOP_GRACE_SECONDS)
        if child.process.is_alive() or self._stop.is_set():
            return None  # The pipe closed first; its exit comes next.
        with contextlib.suppress(EOFError, OSError):
            while child.connection.poll():  # Sent before it died.
                message = child.connection.recv()
                if message[0] == 'failed':
                    child.failed_with = message[1]
        child.connection.close()
        code = child.process.exitcode
        failures = 0 if child.serving else child.start_failures + 1
        if child.failed_with is not None and not self._all_serving:
            return child.failed_with  # The config's or a model's fault.
        if failures >= MAX_START_FAILURES:
            return child.failed_with or (
                f'{child.process.name} exited with status {code} '
                f'{failures} times in a row before serving')
        logging.warning('%s (pid %d) exited with status %s; restarting it',
                        child.process.name, child.process.pid, code)
        if failures:
            self._stop.wait(_RESTART_PAUSE_SECONDS)
        if not self._stop.is_set():
            self._start(child.index, failures)
        return None
