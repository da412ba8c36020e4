"""TF Serving's HTTP/REST API (http_rest_api_handler.cc), without the HTTP.

`RestApi.handle` maps one request (method, path, body) to (status, content
type, body); `http_server.py` carries it over HTTP/1.1. Routes (paths are
matched case-insensitively, as TF Serving's regexes are):
  GET  /v1/models/NAME[/versions/N | /labels/L]            model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   model metadata
  POST /v1/models/NAME[/versions/N | /labels/L]:predict    (also :classify,
                                                            :regress)
  GET  <prometheus path>             metrics, when monitoring is configured
  GET  /v1/openapi.json              this API's OpenAPI 3 document (ours;
                                     `openapi.json` beside this module)
Any other /v1/ request is a 400 "Malformed request"; other paths are 404.
Errors are `{"error": "<message>"}` with the HTTP status TF Serving maps the
status code to.
"""

import functools
import logging
import os
import re
import time
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
from serving import servable as servable_lib

_PREDICTION = re.compile(
    r'(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
    r':(classify|regress|predict)')
_STATUS = re.compile(r'(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|'
                     r'(?:/labels/([^/:]+)))?(?:/(metadata))?')
_V1 = re.compile(r'(?i)/v1/.*')
_INT64_MAX = 2**63 - 1
OPENAPI_ROUTE = '/v1/openapi.json'
OPENAPI_FILE = os.path.join(os.path.dirname(__file__), 'openapi.json')


@functools.lru_cache(maxsize=1)
def openapi_document() -> str:
    """The OpenAPI 3 document of this API (docs/openapi.json links to it)."""
    with open(OPENAPI_FILE, encoding='utf-8') as f:
        return f.read()


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
        if method == 'GET' and path == OPENAPI_ROUTE:
            return 200, 'application/json', openapi_document()
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
            sig = servable.signatures.get(name)
            specs = sig.inputs if sig is not None else {
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
        request = self._examples_request(
            classification_pb2.ClassificationRequest(), target, body)
        response = self.inference.classify(request)
        return json_codec.classify_response(response.result)

    def _regress(self, target, body: bytes) -> str:
        request = self._examples_request(regression_pb2.RegressionRequest(),
                                         target, body)
        response = self.inference.regress(request)
        return json_codec.regress_response(response.result)

    def _examples_request(self, request, target, body: bytes):
        """`request` (Classify or Regress) filled from a REST body."""
        self._spec(request.model_spec, target)
        doc = json_codec.parse_body(body)
        request.model_spec.signature_name = json_codec.signature_name(doc)
        json_codec.fill_examples(doc, request)
        return request

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
