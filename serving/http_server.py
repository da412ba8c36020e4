"""The REST API over HTTP/1.1 on aiohttp's event-driven server.

Connections live on the event loop: an idle or slow client holds a socket,
never a thread. Once a request's body is in, `RestApi.handle` runs on
`--rest_api_num_threads` worker threads. aiohttp sets TCP_NODELAY on every
accepted socket and sends a response's headers and body in one write, so a
keep-alive client does not wait for a delayed ACK.

Bounds (the flags' meaning is TF Serving's, plus our body limit):
  * `--rest_api_timeout_in_ms`: a connection idle (or inside its headers)
    this long is closed; a body not received whole within it is answered
    408 and the connection closed.
  * `--rest_api_max_body_bytes`: a larger body is answered 413 as soon as
    its headers (or its chunks so far) say so; the rest of the body is then
    read and dropped for at most the timeout (a lingering close), so that
    a client still sending reads the 413 instead of a reset.
"""

import asyncio
import logging
import socket
from typing import Optional, Tuple

import aiohttp
from aiohttp import web

from serving import event_loop
from serving import json_codec
from serving import memory
from serving import rest_api

_SERVER_HEADER = 'TensorFlowServing-compatible'
_SHUTDOWN_GRACE_SECONDS = 2.0


class BodyTooLarge(Exception):
    """A request body above the server's limit."""


class ClientGone(Exception):
    """The client closed its connection before the response was sent."""


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves a RestApi on one port until `stop`."""

    def __init__(self, api: rest_api.RestApi, num_threads: int, timeout_ms: int,
                 max_body_bytes: int):
        self._api = api
        self._timeout = max(timeout_ms, 1) / 1000.0
        self._max_body_bytes = max_body_bytes
        self._workers = event_loop.WorkerPool(num_threads, 'rest')
        self._runner: Optional[web.ServerRunner] = None

    async def start(self,
                    host: str,
                    port: int,
                    reuse_port: bool = False) -> int:
        """Opens the port (0: any free one); returns the bound port.

        With `reuse_port`, other processes of the same user that set it too
        listen on the same port (SO_REUSEPORT; --server_processes).
        """
        sock = _bind(host, port, reuse_port)
        server = web.Server(self._handle,
                            keepalive_timeout=self._timeout,
                            lingering_time=self._timeout,
                            auto_decompress=False,
                            access_log=None)
        # Requests in flight at shutdown get as long as gRPC's grace.
        self._runner = web.ServerRunner(
            server,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_GRACE_SECONDS)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return sock.getsockname()[1]

    async def stop(self) -> None:
        """Closes the port and the connections; ends the worker threads."""
        if self._runner is not None:
            await self._runner.cleanup()
        self._workers.shutdown()

    def _check_size(self, size: int) -> None:
        if self._max_body_bytes and size > self._max_body_bytes:
            raise BodyTooLarge(
                f'Request body of {size} bytes or more exceeds the limit of '
                f'{self._max_body_bytes} bytes (--rest_api_max_body_bytes)')

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The whole body, within the timeout (asyncio.TimeoutError)."""
        self._check_size(request.content_length or 0)
        if request.content.is_eof():  # It came with the headers: no timer.
            body = request.content.read_nowait(-1)
            self._check_size(len(body))
            return body
        if (request.version == aiohttp.HttpVersion11 and
                request.headers.get('Expect', '').lower() == '100-continue'):
            # curl asks so for bodies over 1 KiB, then waits a second.
            await request.writer.write(b'HTTP/1.1 100 Continue\r\n\r\n')
            request.writer.output_size = 0
        return await asyncio.wait_for(self._read_body(request), self._timeout)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        chunks, total = [], 0
        while True:
            try:
                chunk = await request.content.readany()
            except ConnectionError as e:
                raise ClientGone(type(e).__name__) from None
            if not chunk:
                if not request.content.is_eof():
                    raise ClientGone('ConnectionResetError')
                return b''.join(chunks)
            total += len(chunk)
            self._check_size(total)
            chunks.append(chunk)

    def _answer(self, request: web.BaseRequest, code: int, content_type: str,
                text: str) -> web.Response:
        response = web.Response(status=code,
                                body=text.encode('utf-8'),
                                headers={
                                    'Content-Type': content_type,
                                    'Server': _SERVER_HEADER
                                })
        if code in (408, 413):
            # The connection cannot carry another request.
            response.force_close()
        del request
        return response

    def _call(self, method: str, path: str,
              body: bytes) -> Tuple[int, str, str]:
        """Runs on a worker thread: the request, then a memory trim."""
        size = len(body)
        try:
            return self._api.handle(method, path, body)
        finally:
            del body  # Before the trim, so that its pages are free to return.
            memory.release_after(size)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info('peername') or ('?', 0)
        try:
            body = await self._body(request)
        except BodyTooLarge as e:
            return self._answer(request, 413, 'application/json',
                                json_codec.error_body(str(e)))
        except asyncio.TimeoutError:
            return self._answer(
                request, 408, 'application/json',
                json_codec.error_body(
                    'Request body not received within --rest_api_timeout_in_ms')
            )
        except ClientGone as e:
            return self._client_gone(request, peer, str(e))
        path = request.raw_path.partition('?')[0]
        answer = await self._workers.run(self._call, request.method, path, body)
        del body
        transport = request.transport
        if transport is None or transport.is_closing():
            return self._client_gone(request, peer, 'ConnectionResetError')
        return self._answer(request, *answer)

    @staticmethod
    def _client_gone(request: web.BaseRequest, peer,
                     reason: str) -> web.StreamResponse:
        """Logs one line, no traceback; the connection is dropped."""
        logging.info('REST client %s:%s disconnected: %s', peer[0], peer[1],
                     reason)
        request.protocol.force_close()
        return web.Response(status=400)
