"""gRPC services: tensorflow.serving.PredictionService and ModelService.

Plus the standard grpc.health.v1 health service. Failures are returned as
the call's status code and message, as TF Serving returns them; a request
that cannot even be parsed is rejected by gRPC itself and never reaches
the servicers.
"""

import time
from concurrent import futures
from typing import Callable, List, Optional, Tuple

import grpc
from grpc_health.v1 import health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import errors
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
    """Runs one API call, records its metrics and maps errors to gRPC."""

    def __init__(self, metrics):
        self._metrics = metrics

    def __call__(self,
                 context,
                 api: str,
                 model_name: str,
                 fn,
                 request,
                 counted: bool = True):
        start = time.perf_counter()
        error: Optional[errors.ServingError] = None
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
        if error is not None:
            context.abort(_grpc_code(error.code), error.message)
        return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, inference: inference_lib.Inference, metrics=None):
        self._inference = inference
        self._timed = _Timed(metrics)

    def Predict(self, request, context):
        return self._timed(context, 'Predict', request.model_spec.name,
                           self._inference.predict, request)

    def Classify(self, request, context):
        return self._timed(context, 'Classify', request.model_spec.name,
                           self._inference.classify, request)

    def Regress(self, request, context):
        return self._timed(context, 'Regress', request.model_spec.name,
                           self._inference.regress, request)

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ''
        return self._timed(context, 'MultiInference', name,
                           self._inference.multi_inference, request)

    def GetModelMetadata(self, request, context):
        # TF Serving labels status and metadata latencies with an empty API.
        return self._timed(context,
                           '',
                           request.model_spec.name,
                           self._inference.metadata,
                           request,
                           counted=False)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self,
                 inference: inference_lib.Inference,
                 reload: ReloadFn,
                 metrics=None):
        self._inference = inference
        self._reload = reload
        self._timed = _Timed(metrics)

    def GetModelStatus(self, request, context):
        return self._timed(context,
                           '',
                           request.model_spec.name,
                           self._inference.status,
                           request,
                           counted=False)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # OK, as TF Serving reports success.
        try:
            if request.config.WhichOneof('config') != 'model_config_list':
                raise errors.invalid_argument(
                    'ServerModelConfig type not supported by '
                    'HandleReloadConfigRequest. Only ModelConfigList is '
                    'currently supported')
            self._reload(request.config, alive=context.is_active)
        except Exception as e:  # pylint: disable=broad-except
            error = errors.from_exception(e)
            response.status.error_code = int(error.code)
            response.status.error_message = error.message
            context.abort(_grpc_code(error.code), error.message)
        return response


def start(inference: inference_lib.Inference,
          reload: ReloadFn,
          addresses: List[str],
          max_threads: int,
          options: List[Tuple[str, object]],
          metrics=None) -> Tuple[grpc.Server, List[int], health.HealthServicer]:
    """Starts the gRPC server; returns (server, bound ports, health)."""
    # --grpc_channel_arguments override these defaults; gRPC answers a
    # larger request RESOURCE_EXHAUSTED before it reaches a servicer.
    merged = dict([
        ('grpc.max_receive_message_length', DEFAULT_MAX_RECEIVE_MESSAGE_LENGTH),
        ('grpc.max_send_message_length', -1),
        # No SO_REUSEPORT: a port already taken fails loudly
        # instead of being shared.
        ('grpc.so_reuseport', 0)
    ])
    merged.update(options)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads,
                                                    thread_name_prefix='grpc'),
                         options=list(merged.items()))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(inference, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(inference, reload, metrics), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    ports = []
    for address in addresses:
        port = server.add_insecure_port(address)
        if not port and not address.startswith('unix:'):
            raise OSError(f'Failed to bind gRPC server to {address}')
        ports.append(port)
    server.start()
    for service in ('', _PREDICTION_SERVICE, _MODEL_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, ports, health_servicer
