"""The server's bounds, against the real server process on 127.0.0.1:
request sizes on both ports, REST threads and time, disconnects, and a
bounded load test while versions swap and a broken version appears.

One server for the module, with small limits so that tests stay cheap.
"""

import http.client
import json
import re
import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import testmodels

# Heavy (tests/conftest.py): servers of its own, eight 30 MB bodies; about
# 65 s of one test worker idle.
pytestmark = pytest.mark.heavy(65)

REST_THREADS = 2
TIMEOUT_MS = 1500
MAX_BODY = 100_000
MAX_GRPC = 200_000
ROWS = [[0.1, 0.2, 0.3, 0.4]]
# The clients' socket timeouts bound a hang only: with both cores busy and
# the load average near 20, `_rest_ok` once waited over 20 s for its answer,
# behind the predictions of twenty bodies whose clients had gone.
HANG_SECONDS = 300


@pytest.fixture(scope='module')
def models(tmp_path_factory, add_version) -> Path:
    root = tmp_path_factory.mktemp('limits')
    add_version(root / 'm', 1, 0.0)
    return root


@pytest.fixture(scope='module')
def server(start_server, models):
    return start_server([
        '--model_name=m',
        f'--model_base_path={models / "m"}',
        '--file_system_poll_wait_seconds=1',
        '--version_settle_seconds=0.3',
        '--max_num_load_retries=0',
        f'--rest_api_num_threads={REST_THREADS}',
        f'--rest_api_timeout_in_ms={TIMEOUT_MS}',
        f'--rest_api_max_body_bytes={MAX_BODY}',
        f'--grpc_channel_arguments=grpc.max_receive_message_length={MAX_GRPC}',
    ])


@pytest.fixture(scope='module')
def stub(server):
    channel = grpc.insecure_channel(server.grpc_address,
                                    options=[('grpc.max_send_message_length',
                                              64 << 20)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _predict_body(rows) -> bytes:
    return json.dumps({
        'signature_name': 'serving_float',
        'instances': rows
    }).encode()


def _threads(server) -> int:
    status = Path(f'/proc/{server.process.pid}/status').read_text()
    return int(re.search(r'^Threads:\s+(\d+)', status, re.M).group(1))


def _peak_rss_mb(server) -> float:
    status = Path(f'/proc/{server.process.pid}/status').read_text()
    return int(re.search(r'^VmHWM:\s+(\d+)', status, re.M).group(1)) / 1024


def _rest_ok(server) -> None:
    code, body = server.http('POST',
                             '/v1/models/m:predict',
                             raw=_predict_body(ROWS),
                             timeout=HANG_SECONDS)
    assert code == 200, body


def test_grpc_request_above_max_receive_is_resource_exhausted(server, stub):
    big = testmodels.float_predict_request(
        np.zeros((MAX_GRPC // 16 + 10, 4), np.float32).tolist(), 'm')
    assert big.ByteSize() > MAX_GRPC
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(big, timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = testmodels.float_predict_request(ROWS, 'm')
    assert stub.Predict(small, timeout=30).outputs
    assert server.running()


def test_rest_body_above_the_limit_is_413_unread(server):
    connection = http.client.HTTPConnection('127.0.0.1',
                                            server.rest_port,
                                            timeout=HANG_SECONDS)
    # Headers only: the server must answer without waiting for the body.
    connection.putrequest('POST', '/v1/models/m:predict')
    connection.putheader('Content-Length', str(50 * MAX_BODY))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert 'rest_api_max_body_bytes' in json.loads(response.read())['error']
    connection.close()
    code, _ = server.http('POST',
                          '/v1/models/m:predict',
                          raw=b' ' * (MAX_BODY + 1))
    assert code == 413
    _rest_ok(server)


def test_rest_client_still_sending_a_large_body_reads_the_413(server):
    """A body 80 times the limit, sent whole: the client reads the 413 the
    server answered early, not a connection reset."""
    body = b' ' * (80 * MAX_BODY)
    with socket.create_connection(('127.0.0.1', server.rest_port),
                                  HANG_SECONDS) as s:
        s.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Length: %d\r\n\r\n' % len(body) + body)
        reply = b''
        while b'\r\n\r\n' not in reply:
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b'HTTP/1.1 413'), reply[:200]
    _rest_ok(server)


def test_rest_stalled_body_is_408_and_idle_connections_close(server):
    # The socket's timeout only bounds a hang: the 408 itself says the
    # server's own timeout ended the request.
    with socket.create_connection(('127.0.0.1', server.rest_port), 120) as s:
        s.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Length: 100\r\n\r\n{"instan')
        reply = s.recv(4096)
        assert reply.startswith(b'HTTP/1.1 408'), reply
    with socket.create_connection(('127.0.0.1', server.rest_port),
                                  HANG_SECONDS) as s:
        assert s.recv(10) == b''  # Idle: closed by the server.
    _rest_ok(server)


def test_rest_threads_stay_bounded_under_many_connections(server):
    _rest_ok(server)
    before = _threads(server)
    idle = [
        socket.create_connection(('127.0.0.1', server.rest_port), HANG_SECONDS)
        for _ in range(60)
    ]
    stalled = []
    for _ in range(20):
        s = socket.create_connection(('127.0.0.1', server.rest_port),
                                     HANG_SECONDS)
        s.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Length: 1000\r\n\r\n{')
        stalled.append(s)
    try:
        # Answered only once the server has taken the 80 connections opened
        # before it (accepted in order): the threads counted then serve them.
        _rest_ok(server)
        during = _threads(server)
        # Stalled bodies occupy the workers at most until the timeout.
        _rest_ok(server)
    finally:
        for s in idle + stalled:
            s.close()
    assert during <= before + REST_THREADS, (before, during)


def test_client_disconnects_are_logged_in_one_line(server):
    linger = struct.pack('ii', 1, 0)  # close() sends a reset
    body = _predict_body(np.ones((2000, 4)).tolist())
    for _ in range(20):
        s = socket.create_connection(('127.0.0.1', server.rest_port),
                                     HANG_SECONDS)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Content-Length: %d\r\n\r\n' % len(body) + body)
        s.close()
    disconnected = re.compile(r'REST client 127\.0\.0\.1:\d+ disconnected: '
                              r'(BrokenPipeError|ConnectionResetError)')
    deadline = time.monotonic() + 120  # Bounds a hang only.
    while not disconnected.search(server.log()):
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    _rest_ok(server)
    log = server.log()
    assert 'Traceback' not in log, log[-3000:]


class _Load:
    """gRPC and REST clients (kept-alive connections) calling predict in
    threads until the block ends: what they served and how they failed."""

    def __init__(self, server, stub, grpc_clients: int, rest_clients: int):
        self.server, self.stub = server, stub
        self.served = {'grpc': 0, 'rest': 0}
        self.failures = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads = ([
            threading.Thread(target=self._grpc_client)
            for _ in range(grpc_clients)
        ] + [
            threading.Thread(target=self._rest_client)
            for _ in range(rest_clients)
        ])

    def __enter__(self) -> '_Load':
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(60)

    def total(self) -> int:
        return self.served['grpc'] + self.served['rest']

    def _count(self, kind: str) -> None:
        with self._lock:
            self.served[kind] += 1

    def _grpc_client(self) -> None:
        request = testmodels.float_predict_request(ROWS, 'm')
        while not self._done.is_set():
            try:
                self.stub.Predict(request, timeout=30)
                self._count('grpc')
            except grpc.RpcError as e:
                self.failures.append(f'gRPC {e.code()}: {e.details()}')

    def _rest_client(self) -> None:
        connection = http.client.HTTPConnection('127.0.0.1',
                                                self.server.rest_port,
                                                timeout=30)
        while not self._done.is_set():
            try:
                connection.request('POST',
                                   '/v1/models/m:predict',
                                   body=_predict_body(ROWS))
                response = connection.getresponse()
                text = response.read()
                if response.status == 200:
                    self._count('rest')
                else:
                    self.failures.append(
                        f'REST {response.status}: {text[:200]}')
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f'REST {type(e).__name__}: {e}')
                connection.close()
        connection.close()


def _next_version(models: Path) -> int:
    """The version after every one in the model's folder (the module's
    tests add versions, in any order)."""
    return 1 + max(
        int(p.name) for p in (models / 'm').iterdir() if p.name.isdigit())


def test_load_while_versions_swap_and_a_broken_version_appears(
        server, stub, models, add_version):
    """16 gRPC and 16 REST clients while three versions swap in and a broken
    one appears; no request that should succeed fails, the server stays up,
    its memory stays bounded."""
    first = _next_version(models)
    swaps, broken = 0, []
    with _Load(server, stub, 16, 16) as load:
        # Four new versions: three swap in, the second is broken; counted,
        # not a time window.
        for version in range(first, first + 4):
            if version == first + 1:
                # A broken version: it fails to load, the previous serves on.
                (models / 'm' / str(version)).mkdir()
                (models / 'm' / str(version) / 'saved_model.pb').write_bytes(
                    b'garbage' * 10)
                server.wait_for_log(f'{{name: m version: {version}}} failed',
                                    timeout=60)
                broken.append(version)
            else:
                add_version(models / 'm', version, float(version % 3))
                server.wait_for_states('m', [(version, 'AVAILABLE')],
                                       timeout=60)
                swaps += 1
        # Both kinds of client answered while the versions swapped.
        deadline = time.monotonic() + 120  # Bounds a hang only.
        while not (load.served['grpc'] and load.served['rest']):
            assert time.monotonic() < deadline, (load.served, load.failures[:5])
            time.sleep(0.1)
    peak = _peak_rss_mb(server)
    print(f'\nload: {load.served} requests served during {swaps} swaps and '
          f'{len(broken)} broken versions, {len(load.failures)} failures, '
          f'peak server RSS {peak:.0f} MB')
    assert not load.failures, load.failures[:5]
    assert load.served['grpc'] > 0 and load.served['rest'] > 0
    assert swaps == 3 and broken == [first + 1]
    assert server.running()
    assert peak < 4096
    _rest_ok(server)


SWAPS = 5
SWAP_REQUESTS = 2000


def test_requests_across_version_swaps_never_fail(server, stub, models,
                                                  add_version):
    """At least SWAP_REQUESTS predicts over kept-alive REST connections and
    gRPC, across SWAPS new versions: not one fails."""
    first = _next_version(models)
    with _Load(server, stub, 4, 4) as load:
        for version in range(first, first + SWAPS):
            add_version(models / 'm', version, float(version % 3))
            server.wait_for_states('m', [(version, 'AVAILABLE')], timeout=120)
        deadline = time.monotonic() + 120  # Liveness only.
        while load.total() < SWAP_REQUESTS and not load.failures:
            assert time.monotonic() < deadline, load.served
            time.sleep(0.05)
    print(f'\n{load.total()} requests across {SWAPS} swaps, '
          f'{len(load.failures)} failed')
    assert not load.failures, load.failures[:5]
    assert load.total() >= SWAP_REQUESTS


def test_grpc_requests_are_bounded_by_default(main_server):
    """Without --grpc_channel_arguments a request above 64 MiB is refused."""
    request = testmodels.float_predict_request(ROWS, 'mnist')
    tensor = request.inputs['x']
    rows = (64 << 20) // 16 + 1
    tensor.ClearField('float_val')
    tensor.tensor_shape.dim[0].size = rows
    tensor.tensor_content = bytes(16 * rows)
    with grpc.insecure_channel(main_server.grpc_address,
                               options=[('grpc.max_send_message_length',
                                         128 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=60)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = testmodels.float_predict_request(ROWS, 'mnist')
        assert stub.Predict(small, timeout=30).outputs


def _rss_mb(server) -> float:
    status = Path(f'/proc/{server.process.pid}/status').read_text()
    return int(re.search(r'^VmRSS:\s+(\d+)', status, re.M).group(1)) / 1024


@pytest.fixture
def fresh_server(start_server, tmp_path, add_version):
    """A server of its own, default body limit: its memory is this test's
    traffic only, not the run's before it. The body's deadline is ten
    minutes, not 30 s: on a busy machine four 30 MB bodies at once took
    longer than 30 s to arrive (408s), and the deadline is not what this
    test checks."""
    add_version(tmp_path / 'mnist', 1, 0.0)
    return start_server([
        '--model_name=mnist', f'--model_base_path={tmp_path / "mnist"}',
        '--rest_api_timeout_in_ms=600000'
    ])


def _four_large_requests_at_once(server, body: bytes) -> float:
    """The server's RSS in MB after four large bodies and one small one."""
    codes = []

    def large():
        try:
            # The timeout only bounds a hang (a busy machine parses 30 MB of
            # JSON slowly).
            code, _ = server.http('POST',
                                  '/v1/models/mnist:predict',
                                  raw=body,
                                  timeout=1200)
        except OSError as error:
            code = repr(error)
        codes.append(code)

    threads = [threading.Thread(target=large) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 4
    code, _ = server.http('POST',
                          '/v1/models/mnist:predict',
                          raw=_predict_body(ROWS),
                          timeout=60)
    assert code == 200
    return _rss_mb(server)


def test_memory_of_large_requests_is_returned(fresh_server):
    """Four REST bodies near the 32 MiB default limit at once, twice: the
    server gives back most of what they took, and keeps no more after the
    second four than after the first."""
    body = _predict_body([[0.25, 0.5, 0.75, 1.0]] * 380_000)  # ~30 MB.
    assert len(body) < 32 << 20
    fresh_server.http('POST',
                      '/v1/models/mnist:predict',
                      raw=_predict_body(ROWS),
                      timeout=60)
    before = _rss_mb(fresh_server)
    first = _four_large_requests_at_once(fresh_server, body)
    peak = _peak_rss_mb(fresh_server)
    second = _four_large_requests_at_once(fresh_server, body)
    print(f'server RSS {before:.0f} MB before, peak {peak:.0f} MB, '
          f'{first:.0f} MB after four, {second:.0f} MB after eight')
    # What the first four leave varies with how they overlapped (glibc's
    # arenas fragment): measured +110 to +185 MB of about +1,900 here, +340
    # on the CI machine. Their parsed JSON kept alive would be +515 MB more
    # each time. The trim itself: test_units.test_memory_is_trimmed_...
    assert first - before < (peak - before) / 2, (before, peak, first)
    assert second - first < 250, (first, second)
