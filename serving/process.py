"""A model server as a child process: ours, or TF Serving's where installed.

Used by the serving check before push, the demo and the tests: one way to
start a server on loopback and stop it.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from absl import logging

TF_SERVING_BINARY = 'tensorflow_model_server'
_LOG_TAIL_CHARS = 4000
_STOP_GRACE_SECONDS = 10


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def server_command(port: int, model_name: str,
                   model_base_path: str) -> List[str]:
    """The command that serves one model on loopback, gRPC only.

    Uses `tensorflow_model_server` when it is on PATH, else this project's
    server (`python -m serving serve`) with the same flags.

    Raises:
        RuntimeError: Neither server is available.
    """
    flags = [
        f'--port={port}',
        '--rest_api_port=0',
        f'--model_name={model_name}',
        f'--model_base_path={model_base_path}',
        # A model that fails to load once is reported at once, not
        # after minutes of retries.
        '--max_num_load_retries=0'
    ]
    binary = shutil.which(TF_SERVING_BINARY)
    if binary:
        return [binary] + flags
    if importlib.util.find_spec('serving.__main__') is None:
        raise RuntimeError(
            f'no model server: {TF_SERVING_BINARY} is not on PATH and the '
            '`serving` package has no __main__')
    return [sys.executable, '-m', 'serving', 'serve'] + flags


def _server_env() -> Dict[str, str]:
    """The environment for `python -m serving`, whatever the working dir."""
    env = dict(os.environ)
    spec = importlib.util.find_spec('serving')
    if spec is not None and spec.origin:
        root = os.path.dirname(os.path.dirname(spec.origin))
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (root, env.get('PYTHONPATH')) if p)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return env


class ServerProcess:
    """A model server subprocess whose output goes to a log file."""

    def __init__(self, command: Sequence[str], log_path: str):
        self.command = list(command)
        self.log_path = log_path
        self._log = open(log_path, 'wb')  # pylint: disable=consider-using-with
        try:
            # FileNotFoundError/PermissionError here are our infrastructure's
            # faults, so they propagate.
            self._process = subprocess.Popen(  # pylint: disable=consider-using-with
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=_server_env())
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._process.pid

    def exit_code(self) -> Optional[int]:
        """The exit status if the server has stopped, else None."""
        return self._process.poll()

    def log_tail(self, limit: int = _LOG_TAIL_CHARS) -> str:
        """The last `limit` characters the server printed."""
        self._log.flush()
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode('utf-8', errors='replace').strip()
        except OSError:
            return ''

    def stop(self) -> None:
        """Stops the server: SIGTERM, then SIGKILL after a grace period."""
        try:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    logging.warning(
                        'Model server %d ignored SIGTERM; killing '
                        'it.', self._process.pid)
                    self._process.kill()
                    self._process.wait()
        finally:
            self._log.close()
