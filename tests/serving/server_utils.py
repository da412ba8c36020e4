"""Running the real model server as a subprocess in tests (no TensorFlow here).

    server = start_model_server(tmp_path, ['--model_name=m',
                                           '--model_base_path=/abs/m'])
    stub = PredictionServiceStub(grpc.insecure_channel(server.grpc_address))
    urllib.request.urlopen(server.rest_url + '/v1/models/m')
    server.stop()

`start_model_server` picks free ports, waits until the server logs that its
ports are up (which TF Serving, and this server, do only once the initial
models are AVAILABLE) and raises with the server's log if it exits first.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from common import environment
from serving.process import free_port  # pylint: disable=unused-import

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY_LINE = 'Running gRPC ModelServer at'
_REST_LINE = 'Exporting HTTP/REST API at'


def server_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(environment.LEGACY_KERAS_ENV)
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO_ROOT)] +
        [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


@dataclasses.dataclass
class ServerProcess:
    """A running `python -m serving serve` process."""

    process: subprocess.Popen
    grpc_port: int
    rest_port: int
    log_path: Path
    host: str = '127.0.0.1'

    @property
    def grpc_address(self) -> str:
        return f'{self.host}:{self.grpc_port}'

    @property
    def rest_url(self) -> str:
        return f'http://{self.host}:{self.rest_port}'

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self,
                     text: str,
                     timeout: float = 60.0,
                     count: int = 1) -> None:
        """Waits until `text` occurs `count` times in the server's log."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if not self.running():
                raise RuntimeError(f'server exited while waiting for {text!r}:'
                                   f'\n{self.log()}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'{text!r} not logged in {timeout}s:\n'
                                   f'{self.log()}')
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL if it does not exit; returns the exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    # Small REST helpers, handy in tests.
    def http(self,
             method: str,
             path: str,
             body: Any = None,
             raw: Optional[bytes] = None,
             timeout: float = 30.0) -> Tuple[int, Any]:
        """Sends a REST request; returns (HTTP status, decoded JSON or text)."""
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.rest_url + path,
                                         data=data,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                code, text = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            code, text = e.code, e.read().decode()
        try:
            return code, json.loads(text)
        except ValueError:
            return code, text

    def model_states(self, model: str) -> List[Tuple[int, str]]:
        """[(version, state)] from GET /v1/models/<model>, [] if unknown."""
        code, body = self.http('GET', f'/v1/models/{model}')
        if code != 200:
            return []
        return [(int(s['version']), s['state'])
                for s in body['model_version_status']]

    def wait_for_states(self,
                        model: str,
                        expected: Sequence[Tuple[int, str]],
                        timeout: float = 60.0) -> List[Tuple[int, str]]:
        """Waits until the model's version states include all of `expected`."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.model_states(model)
            if all(e in states for e in expected):
                return states
            if not self.running():
                raise RuntimeError(f'server exited:\n{self.log()}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'{model} states {states}, wanted '
                                   f'{expected}\n{self.log()[-4000:]}')
            time.sleep(0.2)


def launch(tmp_path: Path,
           args: Sequence[str],
           rest: bool = True,
           grpc_port: Optional[int] = None) -> ServerProcess:
    """Starts the server process without waiting for it."""
    grpc_port = grpc_port or free_port()
    rest_port = free_port() if rest else 0
    log_path = Path(tmp_path) / f'server-{grpc_port}.log'
    command = [
        sys.executable, '-m', 'serving', 'serve', f'--port={grpc_port}',
        f'--rest_api_port={rest_port}', *args
    ]
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(command,
                                   stdout=log,
                                   stderr=subprocess.STDOUT,
                                   env=server_env(),
                                   cwd=str(REPO_ROOT))
    return ServerProcess(process, grpc_port, rest_port, log_path)


def start_model_server(tmp_path: Path,
                       args: Sequence[str],
                       rest: bool = True,
                       timeout: float = 180.0) -> ServerProcess:
    """Starts the server and waits until its ports are up.

    Raises:
      RuntimeError: the server exited (e.g. a model failed to load).
      TimeoutError: not up within `timeout` seconds.
    """
    for attempt in range(3):
        server = launch(tmp_path, args, rest)
        try:
            server.wait_for_log(_REST_LINE if rest else _READY_LINE, timeout)
            return server
        except RuntimeError:
            # A port picked by free_port() may have been taken meanwhile.
            if 'Failed to bind' in server.log() or \
                    'Address already in use' in server.log():
                if attempt < 2:
                    continue
            raise
        except TimeoutError:
            server.stop()
            raise
    raise AssertionError('unreachable')
