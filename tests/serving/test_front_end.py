"""Faults at the server's front end, against the session's `main_server`
(default REST timeout, 30 s): stalled and malformed connections cost
other clients nothing, and hold no thread.
"""

import http.client
import json
import os
import re
import socket
import time
from typing import List

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import testmodels

ROWS = [[0.1, 0.2, 0.3, 0.4]]
STALLED_REST = 150
STALLED_GRPC = 50
# Liveness only: the stalled connections are held for the server's 30 s
# REST timeout, so an answer within this deadline came while they stalled
# (which the test checks too).
ANSWER_DEADLINE = 20.0


def _threads(pid: int) -> int:
    return len(os.listdir(f'/proc/{pid}/task'))


def _predict_body() -> bytes:
    return json.dumps({
        'signature_name': 'serving_float',
        'instances': ROWS
    }).encode()


def _rest_predict(port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        connection.request('POST',
                           '/v1/models/mnist:predict',
                           body=_predict_body())
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _grpc_predict(address: str, timeout: float):
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(testmodels.float_predict_request(ROWS, 'mnist'),
                            timeout=timeout)


def _still_open(sockets: List[socket.socket]) -> bool:
    """Whether the server has neither answered nor closed any of them."""
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(1) is not None:
                return False  # An answer, or b'' (closed).
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)
    return True


def test_stalled_connections_cost_no_thread_and_block_no_one(main_server):
    """200 connections stalled inside a request: a new client's REST and
    gRPC predicts are answered while they stall, with no new thread."""
    assert _rest_predict(main_server.rest_port, 30) == 200
    assert _grpc_predict(main_server.grpc_address, 30).outputs
    before = _threads(main_server.process.pid)
    stalled = []
    try:
        for _ in range(STALLED_REST):
            s = socket.create_connection(('127.0.0.1', main_server.rest_port),
                                         20)
            s.sendall(b'POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\n'
                      b'Content-Length: 1000\r\n\r\n{"instances": [')
            stalled.append(s)
        for _ in range(STALLED_GRPC):
            s = socket.create_connection(('127.0.0.1', main_server.grpc_port),
                                         20)
            s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n')  # Half a preface.
            stalled.append(s)
        deadline = time.monotonic() + ANSWER_DEADLINE
        status = _rest_predict(main_server.rest_port,
                               deadline - time.monotonic())
        response = _grpc_predict(main_server.grpc_address,
                                 deadline - time.monotonic())
        held = _still_open(stalled[:STALLED_REST])
        during = _threads(main_server.process.pid)
    finally:
        for s in stalled:
            s.close()
    assert status == 200
    assert response.outputs
    assert held, 'the stalled REST connections were closed or answered'
    assert during == before, (before, during)


@pytest.mark.parametrize('port_name, garbage', [
    ('rest_port', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' * 50),
    ('rest_port', b'GET /v1/models/mnist HTTP/1.1\r\nHost x\x00\r\n\r\n'),
    ('rest_port', b'POST /v1/models/mnist:predict HTTP/1.1\r\n'
     b'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'),
    ('grpc_port', b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + b'\xff' * 64),
    ('grpc_port', b'\x00' * 9 + os.urandom(200)),
])
def test_malformed_bytes_leave_other_clients_unaffected(main_server, port_name,
                                                        garbage):
    """A keep-alive REST connection and a gRPC channel opened before the
    garbage keep being answered; the garbage gets an error or a close."""
    connection = http.client.HTTPConnection('127.0.0.1',
                                            main_server.rest_port,
                                            timeout=30)
    with grpc.insecure_channel(main_server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = testmodels.float_predict_request(ROWS, 'mnist')
        assert stub.Predict(request, timeout=30).outputs
        connection.request('POST', '/v1/models/mnist:predict', _predict_body())
        assert connection.getresponse().read()
        with socket.create_connection(
            ('127.0.0.1', getattr(main_server, port_name)), 30) as s:
            s.sendall(garbage)
            reply = b''
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        if port_name == 'rest_port':
            assert re.match(rb'HTTP/1\.[01] 400 ', reply), reply[:200]
        connection.request('POST', '/v1/models/mnist:predict', _predict_body())
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert json.loads(response.read())['predictions']
        assert stub.Predict(request, timeout=30).outputs
    connection.close()
    assert main_server.running()


def test_expect_100_continue_is_answered_before_the_body(main_server):
    """curl sends `Expect: 100-continue` with bodies over 1 KiB and waits
    for the 100 (a second) before sending the body."""
    body = json.dumps({
        'signature_name': 'serving_float',
        'instances': ROWS * 100
    }).encode()
    with socket.create_connection(('127.0.0.1', main_server.rest_port),
                                  20) as s:
        s.sendall(b'POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\n'
                  b'Expect: 100-continue\r\n'
                  b'Content-Length: %d\r\n\r\n' % len(body))
        assert s.recv(100).startswith(b'HTTP/1.1 100 Continue\r\n\r\n')
        s.sendall(body)
        assert s.recv(100).startswith(b'HTTP/1.1 200 OK\r\n')
