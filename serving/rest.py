"""TF Serving's HTTP/REST API on `--rest_api_port` (http_rest_api_handler.cc).

Routes (paths are matched case-insensitively, as TF Serving's regexes are):
  GET  /v1/models/NAME[/versions/N | /labels/L]            model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   model metadata
  POST /v1/models/NAME[/versions/N | /labels/L]:predict    (also :classify,
                                                            :regress)
  GET  <prometheus path>             metrics, when monitoring is configured
Any other /v1/ request is a 400 "Malformed request"; other paths are 404.
Errors are `{"error": "<message>"}` with the HTTP status TF Serving maps the
status code to.
"""

import http.server
import logging
import queue
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from concurrent import futures
from typing import Optional, Tuple

from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import regression_pb2

from common import signatures
from serving import errors
from serving import inference as inference_lib
from serving import json_codec
from serving import memory
from serving import servable as servable_lib

_PREDICTION = re.compile(
    r'(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
    r':(classify|regress|predict)')
_STATUS = re.compile(r'(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|'
                     r'(?:/labels/([^/:]+)))?(?:/(metadata))?')
_V1 = re.compile(r'(?i)/v1/.*')
_INT64_MAX = 2**63 - 1
_MAX_IDLE_CONNECTIONS = 512


def _to_json(message) -> str:
    return json_format.MessageToJson(message,
                                     including_default_value_fields=True,
                                     preserving_proto_field_name=True,
                                     indent=1)


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    version = int(text)
    if version > _INT64_MAX:
        raise errors.invalid_argument(
            f'Failed to convert version: {text} to numeric.')
    return version


class RestApi:
    """Request handling, independent of the HTTP server plumbing."""

    def __init__(self,
                 inference: inference_lib.Inference,
                 metrics=None,
                 prometheus_path: Optional[str] = None):
        self.inference = inference
        self.metrics = metrics
        self.prometheus_path = prometheus_path

    def handle(self, method: str, path: str,
               body: bytes) -> Tuple[int, str, str]:
        """Returns (HTTP status, content type, body) for one request."""
        if (self.prometheus_path and self.metrics and method == 'GET' and
                path == self.prometheus_path):
            return 200, 'text/plain; version=0.0.4; charset=utf-8', \
                self.metrics.render()
        if not _V1.fullmatch(path):
            return 404, 'text/plain', ''
        start = time.perf_counter()
        model_name, api = '', ''
        try:
            match = _PREDICTION.fullmatch(path) if method == 'POST' else None
            status_match = (_STATUS.fullmatch(path)
                            if method == 'GET' else None)
            if match and match.group(4) in ('predict', 'classify', 'regress'):
                model_name, api = match.group(1), match.group(4)
                version = _version(match.group(2))
                target = (model_name, version, match.group(3))
                output = getattr(self, '_' + api)(target, body)
            elif status_match:
                model_name = status_match.group(1) or ''
                if not model_name:
                    raise errors.invalid_argument(
                        'Missing model name in request.')
                version = _version(status_match.group(2))
                target = (model_name, version, status_match.group(3))
                if status_match.group(4):
                    output = self._metadata(target)
                else:
                    output = self._status(target)
            else:
                raise errors.invalid_argument(
                    f'Malformed request: {method} {path}')
            code, status = 200, 'OK'
        except Exception as e:  # pylint: disable=broad-except
            error = errors.from_exception(e)
            if error.code == errors.Code.INTERNAL:
                logging.exception('REST %s %s failed', method, path)
            code, status = errors.http_status(error.code), error.code.name
            output = json_codec.error_body(error.message)
        if self.metrics:
            self.metrics.request(model_name,
                                 api,
                                 'REST',
                                 status, (time.perf_counter() - start) * 1e6,
                                 counted=bool(api))
        return code, 'application/json', output

    @staticmethod
    def _spec(spec, target) -> None:
        name, version, label = target
        spec.name = name
        if version is not None:
            spec.version.value = version
        if label:
            spec.version_label = label

    def _predict(self, target, body: bytes) -> str:
        doc = json_codec.parse_body(body)
        signature = json_codec.signature_name(doc)
        servable = self.inference.served.acquire(*target)
        try:
            name = signature or signatures.DEFAULT_SIGNATURE
            signature_def = servable.signature_defs.get(name)
            if signature_def is None:
                raise errors.invalid_argument(
                    f'Serving signature name: "{name}" not found in signature '
                    f'def')
            specs = {
                k: servable_lib.TensorSpec.from_info(v)
                for k, v in signature_def.inputs.items()
            }
            arrays, fmt = json_codec.predict_inputs(doc, specs)
            sig = self.inference.predict_signature(servable, name)
            outputs = self.inference.predict_arrays(servable, sig, arrays)
        finally:
            servable.release()
        return json_codec.predict_response(outputs, fmt)

    def _classify(self, target, body: bytes) -> str:
        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, target)
        doc = json_codec.parse_body(body)
        request.model_spec.signature_name = json_codec.signature_name(doc)
        json_codec.fill_examples(doc, request)
        response = self.inference.classify(request)
        return json_codec.classify_response(response.result)

    def _regress(self, target, body: bytes) -> str:
        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, target)
        doc = json_codec.parse_body(body)
        request.model_spec.signature_name = json_codec.signature_name(doc)
        json_codec.fill_examples(doc, request)
        response = self.inference.regress(request)
        return json_codec.regress_response(response.result)

    def _status(self, target) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, target)
        return _to_json(self.inference.status(request))

    def _metadata(self, target) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, target)
        request.metadata_field.append(inference_lib.SIGNATURE_DEF_FIELD)
        response = self.inference.metadata(request)
        parts = []
        for key, packed in sorted(response.metadata.items()):
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            packed.Unpack(signature_map)
            parts.append(f'"{key}": {_to_json(signature_map)}')
        return ('{\n"model_spec":' + _to_json(response.model_spec) +
                '\n,\n"metadata": {' + ',\n'.join(parts) + '\n}\n}\n')


class BodyTooLarge(Exception):
    """A request body above the server's limit."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Handles the requests of one connection, one request per call.

    Unlike http.server's own loop it does not hold a thread between requests:
    `_RestServer` calls `handle_one_request` when the connection has a
    request to read, and waits for the next one without a thread.
    """

    protocol_version = 'HTTP/1.1'
    server_version = 'TensorFlowServing-compatible'
    api: RestApi = None  # Set on the per-server subclass.
    max_body_bytes = 0  # 0: no limit. Set on the per-server subclass.
    timeout_seconds = 30.0  # Set on the per-server subclass.

    def __init__(self, connection, client_address, server):
        # BaseRequestHandler.__init__ would handle the whole connection.
        self.request = connection
        self.client_address = client_address
        self.server = server
        self.timeout = self.timeout_seconds
        self.setup()

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        chunks, left = [], size
        while left > 0:
            if time.monotonic() > deadline:
                raise socket.timeout('request body not received in time')
            chunk = self.rfile.read1(min(left, 1 << 20))
            if not chunk:
                raise ValueError('connection closed inside the body')
            chunks.append(chunk)
            left -= len(chunk)
        return b''.join(chunks)

    def _check_size(self, size: int) -> None:
        if self.max_body_bytes and size > self.max_body_bytes:
            raise BodyTooLarge(
                f'Request body of {size} bytes or more exceeds the limit of '
                f'{self.max_body_bytes} bytes (--rest_api_max_body_bytes)')

    def _read_body(self) -> bytes:
        # The whole body must arrive within the timeout, not just each read.
        deadline = time.monotonic() + self.timeout_seconds
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                total += size
                self._check_size(total)
                chunks.append(self._read_exactly(size, deadline))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        self._check_size(length)
        return self._read_exactly(length, deadline) if length > 0 else b''

    def _send(self, code: int, content_type: str, text: str) -> None:
        data = text.encode('utf-8')
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except BodyTooLarge as e:
            # The rest of the body is not read: the connection cannot go on.
            self.close_connection = True
            self._send(413, 'application/json', json_codec.error_body(str(e)))
            return
        except socket.timeout:
            self.close_connection = True
            self._send(
                408, 'application/json',
                json_codec.error_body(
                    'Request body not received within --rest_api_timeout_in_ms')
            )
            return
        except ValueError:
            self.send_error(400, 'Bad request body')
            return
        path = urllib.parse.urlsplit(self.path).path
        self._send(*self.api.handle(self.command, path, body))
        size = len(body)
        del body  # Before the trim, so that its pages are free to return.
        memory.release_after(size)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve
    do_OPTIONS = _serve

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        logging.debug('REST %s', format % args)


class _RestServer(socketserver.TCPServer):
    """An HTTP server whose threads are bounded, as TF Serving's are.

    `num_threads` worker threads handle requests; no thread waits on an
    idle connection: one selector thread accepts connections and watches the
    idle ones, and hands a connection to a worker when a request arrives on
    it. A connection idle for longer than the timeout is closed, and a
    request must arrive whole within it (408 otherwise).
    """

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler_class, num_threads: int,
                 timeout_seconds: float):
        super().__init__(address, handler_class)
        self._timeout = timeout_seconds
        self._workers = futures.ThreadPoolExecutor(max_workers=max(
            1, num_threads),
                                                   thread_name_prefix='rest')
        self._selector = selectors.DefaultSelector()
        self._returned: 'queue.SimpleQueue' = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accepts connections and dispatches their requests until shutdown."""
        del poll_interval
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        idle = {}  # handler -> when it became idle
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(
                        timeout=min(1.0, self._timeout)):
                    if key.fileobj is self.socket:
                        self._accept(idle)
                    elif key.fileobj is self._wake_read:
                        self._wake_read.recv(4096)
                    else:
                        self._selector.unregister(key.fileobj)
                        idle.pop(key.data, None)
                        self._workers.submit(self._handle, key.data)
                while not self._returned.empty():
                    handler = self._returned.get()
                    idle[handler] = time.monotonic()
                    self._selector.register(handler.request,
                                            selectors.EVENT_READ, handler)
                expired = time.monotonic() - self._timeout
                for handler, since in list(idle.items()):
                    if since < expired:
                        del idle[handler]
                        self._selector.unregister(handler.request)
                        self._close(handler)
        finally:
            for handler in idle:
                self._close(handler)
            self._stopped.set()

    def _accept(self, idle) -> None:
        try:
            connection, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            logging.warning('REST accept failed: %s', e)
            return
        connection.setblocking(True)
        connection.settimeout(self._timeout)
        try:
            handler = self.RequestHandlerClass(connection, address, self)
        except OSError:
            connection.close()
            return
        if len(idle) >= _MAX_IDLE_CONNECTIONS:
            # Bounded file descriptors: the longest idle connection goes.
            oldest = min(idle, key=idle.get)
            del idle[oldest]
            self._selector.unregister(oldest.request)
            self._close(oldest)
        idle[handler] = time.monotonic()
        self._selector.register(connection, selectors.EVENT_READ, handler)

    def _handle(self, handler: _Handler) -> None:
        """Serves the requests waiting on a connection (a worker thread)."""
        try:
            while True:
                handler.close_connection = True
                handler.handle_one_request()
                handler.wfile.flush()
                if handler.close_connection or not self._pending(handler):
                    break
        except (ConnectionError, socket.timeout) as e:
            # A client that went away or stalled: one line, no traceback.
            logging.info('REST client %s:%s disconnected: %s',
                         *handler.client_address[:2],
                         type(e).__name__)
            handler.close_connection = True
        except Exception:  # pylint: disable=broad-except
            logging.exception('REST request from %s failed',
                              handler.client_address[0])
            handler.close_connection = True
        if handler.close_connection or self._stopping.is_set():
            self._close(handler)
            return
        self._returned.put(handler)
        try:
            self._wake_write.send(b'x')
        except OSError:
            self._close(handler)

    @staticmethod
    def _pending(handler: _Handler) -> bool:
        """Whether a next request is already buffered (pipelined)."""
        connection = handler.request
        connection.setblocking(False)
        try:
            return bool(handler.rfile.peek(1))
        except (BlockingIOError, OSError):
            return False
        finally:
            connection.settimeout(handler.timeout)

    @staticmethod
    def _close(handler: _Handler) -> None:
        try:
            handler.finish()
        except OSError:
            pass
        try:
            handler.request.close()
        except OSError:
            pass

    def shutdown(self) -> None:
        """Stops serving; waits for the selector thread to end."""
        self._stopping.set()
        try:
            self._wake_write.send(b'x')
        except OSError:
            pass
        self._stopped.wait(10)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self.server_close()


def start(api: RestApi,
          host: str,
          port: int,
          num_threads: int = 4,
          timeout_ms: int = 30000,
          max_body_bytes: int = 0) -> Tuple[socketserver.TCPServer, int]:
    """Starts serving in a background thread; returns (server, bound port).

    Args:
        api: Handles each request.
        host: Address to bind.
        port: Port to bind (0: any free one).
        num_threads: Threads that handle requests (--rest_api_num_threads).
        timeout_ms: A connection idle this long is closed, and a request
            must arrive whole within it (--rest_api_timeout_in_ms).
        max_body_bytes: Larger request bodies are answered 413 without being
            read (0: no limit; --rest_api_max_body_bytes).
    """
    timeout = max(timeout_ms, 1) / 1000.0
    handler = type('Handler', (_Handler,), {
        'api': api,
        'max_body_bytes': max_body_bytes,
        'timeout_seconds': timeout
    })
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    server_class = type('Server', (_RestServer,), {'address_family': family})
    server = server_class((host, port), handler, num_threads, timeout)
    thread = threading.Thread(target=server.serve_forever,
                              name='rest',
                              daemon=True)
    thread.start()
    return server, server.server_address[1]
