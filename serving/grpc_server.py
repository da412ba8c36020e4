"""gRPC services on grpc.aio: TF Serving's, and grpc.health.v1's health.

tensorflow.serving.PredictionService and ModelService, plus the standard
grpc.health.v1 health service.

Calls are received on the event loop, so a slow or stalled client holds a
stream, not a thread; the model work of each call runs on
`--grpc_max_threads` worker threads. Failures are returned as the call's
status code and message, as TF Serving returns them; a request that cannot
even be parsed is INTERNAL and never reaches the servicers.
"""

import threading
import time
from typing import Callable, List, Optional, Tuple

import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import errors
from serving import event_loop
from serving import inference as inference_lib
from serving import memory

_PREDICTION_SERVICE = 'tensorflow.serving.PredictionService'
_MODEL_SERVICE = 'tensorflow.serving.ModelService'

ReloadFn = Callable[..., None]

# TF Serving leaves gRPC messages unbounded; one huge Predict then holds
# gigabytes. Requests are bounded by default, responses are not (they are
# already in memory when sent).
DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH = 64 * 1024 * 1024


def _grpc_code(code: errors.Code) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == int(code))


class _Timed:
    """Runs one API call on a worker, records its metrics, maps errors."""

    def __init__(self, metrics, workers: event_loop.WorkerPool):
        self._metrics = metrics
        self._workers = workers

    def _run(self, api: str, model_name: str, fn, request, counted: bool):
        """On a worker thread: (response, error) of one call."""
        start = time.perf_counter()
        response, error = None, None
        try:
            response = fn(request)
        except Exception as e:  # pylint: disable=broad-except
            error = errors.from_exception(e)
        if self._metrics:
            self._metrics.request(model_name,
                                  api,
                                  'GRPC',
                                  error.code.name if error else 'OK',
                                  (time.perf_counter() - start) * 1e6,
                                  counted=counted)
        memory.release_after(request.ByteSize())
        return response, error

    async def __call__(self,
                       context: grpc.aio.ServicerContext,
                       api: str,
                       model_name: str,
                       fn,
                       request,
                       counted: bool = True):
        response, error = await self._workers.run(self._run, api, model_name,
                                                  fn, request, counted)
        if error is not None:
            await context.abort(_grpc_code(error.code), error.message)
        return response


def _internal_on_parse_error(handler: grpc.RpcMethodHandler):
    """The handler, parsing its request itself.

    A request that does not parse is INTERNAL, as gRPC's sync server and TF
    Serving answer it (grpc.aio would say UNKNOWN).
    """
    if (handler is None or handler.unary_unary is None or
            handler.request_deserializer is None):
        return handler
    behavior, parse = handler.unary_unary, handler.request_deserializer

    async def unary_unary(raw: bytes, context):
        try:
            request = parse(raw)
        except Exception:  # pylint: disable=broad-except
            await context.abort(grpc.StatusCode.INTERNAL,
                                'Exception deserializing request!')
        return await behavior(request, context)

    return handler._replace(unary_unary=unary_unary, request_deserializer=None)


class _ParsingHandlers(grpc.GenericRpcHandler):
    """A service's handlers, each wrapped once by _internal_on_parse_error.

    (Not a grpc.aio interceptor: those cost ~0.3 CPU-ms a call.)
    """

    def __init__(self, handlers: grpc.GenericRpcHandler):
        self._handlers = handlers
        self._wrapped = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method not in self._wrapped:
            self._wrapped[method] = _internal_on_parse_error(
                self._handlers.service(handler_call_details))
        return self._wrapped[method]


class _Registrar:
    """Takes what generated add_*_to_server functions register, wrapped."""

    def __init__(self, server: grpc.aio.Server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_ParsingHandlers(h) for h in handlers))


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, inference: inference_lib.Inference, timed: _Timed):
        self._inference = inference
        self._timed = timed

    async def Predict(self, request, context):
        return await self._timed(context, 'Predict', request.model_spec.name,
                                 self._inference.predict, request)

    async def Classify(self, request, context):
        return await self._timed(context, 'Classify', request.model_spec.name,
                                 self._inference.classify, request)

    async def Regress(self, request, context):
        return await self._timed(context, 'Regress', request.model_spec.name,
                                 self._inference.regress, request)

    async def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ''
        return await self._timed(context, 'MultiInference', name,
                                 self._inference.multi_inference, request)

    async def GetModelMetadata(self, request, context):
        # TF Serving labels status and metadata latencies with an empty API.
        return await self._timed(context,
                                 '',
                                 request.model_spec.name,
                                 self._inference.metadata,
                                 request,
                                 counted=False)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, inference: inference_lib.Inference, reload: ReloadFn,
                 timed: _Timed, workers: event_loop.WorkerPool):
        self._inference = inference
        self._reload = reload
        self._timed = timed
        self._workers = workers

    async def GetModelStatus(self, request, context):
        return await self._timed(context,
                                 '',
                                 request.model_spec.name,
                                 self._inference.status,
                                 request,
                                 counted=False)

    def _reload_config(self, request, alive: Callable[[], bool]):
        """On a worker thread: the reload's error, if any."""
        try:
            if request.config.WhichOneof('config') != 'model_config_list':
                raise errors.invalid_argument(
                    'ServerModelConfig type not supported by '
                    'HandleReloadConfigRequest. Only ModelConfigList is '
                    'currently supported')
            self._reload(request.config, alive=alive)
        except Exception as e:  # pylint: disable=broad-except
            return errors.from_exception(e)
        return None

    async def HandleReloadConfigRequest(self, request, context):
        # The reload stops waiting for its loads once the caller is gone.
        gone = threading.Event()
        context.add_done_callback(lambda _: gone.set())
        error = await self._workers.run(self._reload_config, request,
                                        lambda: not gone.is_set())
        if error is not None:
            await context.abort(_grpc_code(error.code), error.message)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # OK, as TF Serving reports success.
        return response


class GrpcServer:
    """The gRPC port(s) of the server, on the running event loop."""

    def __init__(self, server: grpc.aio.Server, ports: List[int],
                 health_servicer, workers: event_loop.WorkerPool):
        self.ports = ports
        self._server = server
        self._health = health_servicer
        self._workers = workers

    async def stop(self, grace: Optional[float] = 2.0) -> None:
        """Reports NOT_SERVING, then ends calls after `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._workers.shutdown()


async def start(inference: inference_lib.Inference,
                reload: ReloadFn,
                addresses: List[str],
                max_threads: int,
                options: List[Tuple[str, object]],
                metrics=None) -> GrpcServer:
    """Starts the gRPC server on the running loop (OSError: cannot bind)."""
    # --grpc_channel_arguments override these defaults; gRPC answers a
    # larger request RESOURCE_EXHAUSTED before it reaches a servicer.
    merged = dict([
        ('grpc.max_receive_message_length', DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH),
        ('grpc.max_send_message_length', -1),
        # No SO_REUSEPORT: a port already taken fails loudly instead of
        # being shared (--server_processes turns it on once its supervisor
        # has found the port free and holds it).
        ('grpc.so_reuseport', 0)
    ])
    merged.update(options)
    server = grpc.aio.server(options=list(merged.items()))
    workers = event_loop.WorkerPool(max_threads, 'grpc')
    timed = _Timed(metrics, workers)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(inference, timed), _Registrar(server))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(inference, reload, timed, workers), _Registrar(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    ports = []
    try:
        for address in addresses:
            try:
                port = server.add_insecure_port(address)
            except RuntimeError as e:
                raise OSError(
                    f'Failed to bind gRPC server to {address}: {e}') from None
            if not port and not address.startswith('unix:'):
                raise OSError(f'Failed to bind gRPC server to {address}')
            ports.append(port)
        await server.start()
    except BaseException:
        workers.shutdown()
        raise
    for service in ('', _PREDICTION_SERVICE, _MODEL_SERVICE):
        await health_servicer.set(service,
                                  health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, ports, health_servicer, workers)
