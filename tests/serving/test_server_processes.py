"""--server_processes 2: two serving processes on the same ports.

One server for the module (gRPC on port 0, Prometheus metrics on): both
processes listen on both ports, the metrics a scrape returns are the sums
over both, a process killed under traffic is replaced while the other
answers, versions swap without a failed request, and SIGTERM (the fixture's
teardown, checked there) stops every process. Tests change only what they
restore: the kill test leaves two serving processes behind it.
"""

import dataclasses
import http.client
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Set

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import conftest
from tests.serving import server_utils
from tests.serving import testmodels

ROWS = [[0.1, 0.2, 0.3, 0.4]]
_DEADLINE = 180.0  # Liveness only: a loaded machine starts a process slowly.
_LISTEN = '0A'


def _children(pid: int) -> List[int]:
    """The serving processes of a supervisor (not multiprocessing's helper)."""
    text = Path(f'/proc/{pid}/task/{pid}/children').read_text()
    return [
        int(child)
        for child in text.split()
        if b'spawn_main' in Path(f'/proc/{child}/cmdline').read_bytes()
    ]


def _listening_ports(pid: int) -> Set[int]:
    """The TCP ports `pid` holds a listening socket on."""
    inodes = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    ports = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == _LISTEN and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(':', 1)[1], 16))
    return ports


def _wait_until(condition, what: str, timeout: float = _DEADLINE):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


@pytest.fixture(scope='module')
def models(tmp_path_factory, add_version) -> Path:
    root = tmp_path_factory.mktemp('processes')
    add_version(root / 'm', 1, 0.0)
    add_version(root / 'counted', 1, 0.0)
    return root


@pytest.fixture(scope='module')
def server(tmp_path_factory, models):
    workdir = tmp_path_factory.mktemp('processes_server')
    monitoring = conftest.write_text(workdir / 'monitoring.config',
                                     conftest.MONITORING_CONFIG)
    config = conftest.write_text(
        workdir / 'models.config', 'model_config_list { ' +
        ' '.join(f'config {{ name: "{name}" base_path: "{models / name}" '
                 f'model_platform: "tensorflow" }}'
                 for name in ('m', 'counted')) + ' }\n')
    server = server_utils.start_model_server(workdir, [
        f'--model_config_file={config}',
        f'--monitoring_config_file={monitoring}', '--server_processes=2',
        '--file_system_poll_wait_seconds=1', '--version_settle_seconds=0.5',
        '--port=0'
    ])
    port = re.search(r'Running gRPC ModelServer at 127\.0\.0\.1:(\d+)',
                     server.log()).group(1)
    server = dataclasses.replace(server, grpc_port=int(port))
    yield server
    children = _children(server.process.pid)
    assert server.stop() == 0, server.log()[-3000:]
    for child in children:
        assert not Path(f'/proc/{child}').exists(), child
    assert server.log().count('Received signal 15, shutting down') >= 2


def _fresh_predict(server, model: str = 'm') -> int:
    """A REST predict on a new connection (the kernel picks the process)."""
    connection = http.client.HTTPConnection('127.0.0.1',
                                            server.rest_port,
                                            timeout=30)
    try:
        connection.request('POST',
                           f'/v1/models/{model}:predict',
                           body=json.dumps({
                               'signature_name': 'serving_float',
                               'instances': ROWS
                           }))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _ok_requests(server, model: str) -> int:
    code, text = server.http('GET', '/monitoring/prometheus/metrics')
    assert code == 200
    match = re.search(
        r'^:tensorflow:serving:request_count\{model_name="%s",status="OK"\} '
        r'(\d+)$' % model, text, re.M)
    return int(match.group(1)) if match else 0


def test_processes_share_both_ports_and_sum_their_metrics(server):
    children = _children(server.process.pid)
    assert len(children) == 2
    for child in children:
        assert {server.grpc_port, server.rest_port} <= _listening_ports(child)
    # Only this test calls `counted`. New connections, so that the kernel
    # spreads them over both processes (all 60 to one: 2**-59); a scrape
    # reaches one and must count all.
    assert [_fresh_predict(server, 'counted') for _ in range(60)] == [200] * 60
    request = testmodels.float_predict_request(ROWS, 'counted')
    for _ in range(10):
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(request, timeout=30)
    # Each process shares its counts every half second: polled, not timed.
    # Ten scrapes on new connections reach both processes (all ten to one:
    # 2**-9), and each must count all 70, no more.
    _wait_until(
        lambda: [_ok_requests(server, 'counted')
                 for _ in range(10)] == [70] * 10,
        'every scrape to count both processes\' requests')
    assert [_ok_requests(server, 'counted') for _ in range(20)] == [70] * 20


class _FreshLoad:
    """A thread sending REST predicts, each on a new connection."""

    def __init__(self, server):
        self._server = server
        self.outcomes: List[object] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._done.is_set():
            try:
                self.outcomes.append(_fresh_predict(self._server))
            except (OSError, http.client.HTTPException) as e:
                self.outcomes.append(repr(e))

    def __enter__(self) -> '_FreshLoad':
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(60)


def test_a_killed_process_is_replaced_while_the_other_answers(server):
    victim, survivor = _children(server.process.pid)
    restarts = server.log().count('restarting it')
    with _FreshLoad(server) as load:
        _wait_until(lambda: load.outcomes.count(200) >= 10, 'answers')
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log('restarting it', _DEADLINE, restarts + 1)
        killed_at = len(load.outcomes)
        # Answered by the survivor while the replacement starts.
        _wait_until(lambda: load.outcomes[killed_at:].count(200) >= 20,
                    'answers after the kill')
        _wait_until(lambda: len(_children(server.process.pid)) == 2,
                    'a replacement process')
        replacement = (set(_children(server.process.pid)) - {survivor}).pop()
        server.wait_for_log(f'(pid {replacement}) serving', _DEADLINE)
    assert replacement != victim
    assert {server.grpc_port, server.rest_port} <= _listening_ports(replacement)
    assert f'exited with status -{int(signal.SIGKILL)}' in server.log()
    # Only requests the killed process held can fail, not later ones.
    assert load.outcomes[killed_at:][-20:] == [200] * 20, load.outcomes[-40:]


def _grpc_versions(server, versions: List[int], failures: List[str],
                   done: threading.Event) -> None:
    request = testmodels.float_predict_request(ROWS, 'm')
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not done.is_set():
            try:
                response = stub.Predict(request, timeout=30)
                versions.append(response.model_spec.version.value)
            except grpc.RpcError as e:
                failures.append(f'gRPC {e.code()}: {e.details()}')


def _latest_everywhere(server, version: int) -> bool:
    """Ten GETs on new connections all report `version` AVAILABLE."""
    for _ in range(10):
        code, body = server.http('GET', '/v1/models/m')
        states: Dict[int, str] = {
            int(s['version']): s['state']
            for s in body.get('model_version_status', [])
        } if code == 200 else {}
        if states.get(version) != 'AVAILABLE':
            return False
    return True


def test_versions_swap_in_both_processes_without_a_failed_request(
        server, models, add_version):
    first = 1 + max(
        int(p.name) for p in (models / 'm').iterdir() if p.name.isdigit())
    versions: List[int] = []
    failures: List[str] = []
    done = threading.Event()
    threads = [
        threading.Thread(target=_grpc_versions,
                         args=(server, versions, failures, done))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        with _FreshLoad(server) as load:
            for version in (first, first + 1):
                add_version(models / 'm', version, float(version % 3))
                # Each process swaps on its own poll: every one, at last.
                _wait_until(lambda v=version: _latest_everywhere(server, v),
                            f'version {version} in both processes')
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    rest_failures = [o for o in load.outcomes if o != 200]
    assert not failures and not rest_failures, (failures[:3], rest_failures[:3])
    assert versions and versions[-1] == first + 1
    assert load.outcomes.count(200) + len(versions) >= 100
