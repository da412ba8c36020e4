"""The request semantics of TF Serving's APIs, shared by gRPC, REST and warmup.

Each API is split in two: a public method that resolves the model spec to a
servable (holding a reference while it runs) and a `*_with(servable, ...)`
method that does the work on a given servable, which warmup replay uses.
Checks and error messages follow TF Serving's predict_util.cc,
classifier.cc, regressor.cc, multi_inference.cc and get_model_*_impl.cc.
"""

import time
from typing import Dict, List, Optional, Tuple

import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from common.signatures import DEFAULT_SIGNATURE
from serving import batching
from serving import errors
from serving import servable as servable_lib
from serving import served_versions
from serving import tensors

SIGNATURE_DEF_FIELD = 'signature_def'
_PREDICT_METHODS = (servable_lib.PREDICT_METHOD, servable_lib.CLASSIFY_METHOD,
                    servable_lib.REGRESS_METHOD)


def spec_target(
        spec: model_pb2.ModelSpec) -> Tuple[str, Optional[int], Optional[str]]:
    """(name, version, label) a ModelSpec asks for."""
    choice = spec.WhichOneof('version_choice')
    version = spec.version.value if choice == 'version' else None
    label = spec.version_label if choice == 'version_label' else None
    return spec.name, version, label


def fill_spec(spec: model_pb2.ModelSpec, servable, signature_name: str) -> None:
    """Fills a response's model spec: the servable's name and version."""
    spec.name = servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name


def serialized_examples(inp: input_pb2.Input) -> np.ndarray:
    """The Input's examples as serialized tf.Example strings (input_util.cc).

    With a context, each example is serialized after the context, so the
    example's features override the context's (protobuf merge semantics).
    """
    kind = inp.WhichOneof('kind')
    if kind == 'example_list':
        records = [e.SerializeToString() for e in inp.example_list.examples]
    elif kind == 'example_list_with_context':
        context = inp.example_list_with_context.context.SerializeToString()
        records = [
            context + e.SerializeToString()
            for e in inp.example_list_with_context.examples
        ]
    else:
        records = []
    if not records:
        raise errors.invalid_argument('Input is empty.')
    array = np.empty(len(records), dtype=object)
    array[:] = records
    return array


class Inference:
    """Runs requests against the served versions of the models."""

    def __init__(self,
                 served: served_versions.ServedVersions,
                 metrics=None,
                 batcher: Optional[batching.BatchScheduler] = None,
                 method_name_check: bool = False):
        self.served = served
        self.metrics = metrics
        self.batcher = batcher
        self.method_name_check = method_name_check

    # ------------------------------------------------------------ execution

    def acquire(self, spec: model_pb2.ModelSpec):
        return self.served.acquire(*spec_target(spec))

    def run(self, servable, sig: servable_lib.Signature,
            arrays: Dict[str, np.ndarray], outputs: Tuple[str, ...],
            api: str) -> Dict[str, np.ndarray]:
        """Runs a checked signature call, batched when batching is on."""
        metrics = self.metrics

        def call(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            start = time.perf_counter()
            result = sig.run(inputs, outputs)
            if metrics:
                metrics.runtime(servable.name, api,
                                (time.perf_counter() - start) * 1e6)
            return result

        if self.batcher is None:
            return call(arrays)
        key = (servable.name, servable.version, id(servable), sig.name, outputs)
        return self.batcher.run(servable.name, key, call, arrays,
                                servable.batching_options)

    # -------------------------------------------------------------- predict

    def predict(
            self,
            request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.acquire(request.model_spec)
        try:
            return self.predict_with(servable, request)
        finally:
            servable.release()

    def predict_signature(self, servable, name: str) -> servable_lib.Signature:
        sig = servable.signature(name or DEFAULT_SIGNATURE)
        if self.method_name_check and sig.method_name not in _PREDICT_METHODS:
            raise errors.ServingError(
                errors.Code.INTERNAL,
                f'Expected prediction signature method_name to be one of '
                f'{{{", ".join(_PREDICT_METHODS)}}}. Was: {sig.method_name}')
        return sig

    def predict_with(
            self, servable,
            request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        sig = self.predict_signature(servable,
                                     request.model_spec.signature_name)
        sig.check_names(request.inputs.keys())
        arrays = tensors.arrays_from_protos(request.inputs)
        outputs = self.predict_arrays(servable, sig, arrays,
                                      request.output_filter)
        response = predict_pb2.PredictResponse()
        fill_spec(response.model_spec, servable, sig.name)
        for alias, array in outputs.items():
            tensors.fill_proto(array, response.outputs[alias],
                               sig.outputs[alias].dtype)
        return response

    def predict_arrays(
        self,
        servable,
        sig: servable_lib.Signature,
        arrays: Dict[str, np.ndarray],
        output_filter=()) -> Dict[str, np.ndarray]:
        """Predict on decoded inputs (the REST API's entry point)."""
        sig.check_inputs(arrays)
        outputs = sig.check_outputs(output_filter)
        return self.run(servable, sig, arrays, outputs, 'Predict')

    # ------------------------------------------------------------- classify

    def _task_signature(self, servable, name: str,
                        method: str) -> servable_lib.Signature:
        name = name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            raise errors.invalid_argument(
                f'No signature was found with the name: {name}')
        if self.method_name_check and sig.method_name != method:
            kind = ('classification'
                    if method == servable_lib.CLASSIFY_METHOD else 'regression')
            raise errors.invalid_argument(
                f'Expected {kind} signature method_name to be {method}. Was: '
                f'{sig.method_name}')
        return sig

    def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        servable = self.acquire(request.model_spec)
        try:
            return self.classify_with(servable, request)
        finally:
            servable.release()

    def classify_with(
        self, servable, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        sig = self._task_signature(servable, request.model_spec.signature_name,
                                   servable_lib.CLASSIFY_METHOD)
        sig.classify_outputs()
        examples = serialized_examples(request.input)
        response = classification_pb2.ClassificationResponse()
        fill_spec(response.model_spec, servable, sig.name)
        self._classify(servable, sig, examples, response.result)
        return response

    def _classify(self, servable, sig: servable_lib.Signature,
                  examples: np.ndarray,
                  result: classification_pb2.ClassificationResult) -> None:
        alias, classes_alias, scores_alias = sig.classify_outputs()
        wanted = tuple(a for a in (classes_alias, scores_alias) if a)
        arrays = {alias: examples}
        sig.check_inputs(arrays)
        if self.metrics:
            self.metrics.examples(servable.name, len(examples))
        out = self.run(servable, sig, arrays, wanted, 'Classify')
        classes = out.get(classes_alias) if classes_alias else None
        scores = out.get(scores_alias) if scores_alias else None
        num = len(examples)
        for tensor, dtype, kind in ((classes, 'DT_STRING', 'classes'),
                                    (scores, 'DT_FLOAT', 'scores')):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise errors.invalid_argument(
                    f'Expected Tensor shape: [batch_size num_classes] but got '
                    f'{tensors.shape_string(tensor.shape)}')
            actual = tensors.dtype_of(tensor)
            if tensors.dtype_name(actual) != dtype[3:].lower():
                raise errors.invalid_argument(
                    f'Expected {kind} Tensor of {dtype}. Got: '
                    f'DT_{tensors.dtype_name(actual).upper()}')
            if tensor.shape[0] != num:
                raise errors.invalid_argument(
                    f'Expected {kind} output batch size of {num}. Got: '
                    f'{tensor.shape[0]}')
        if classes is not None and scores is not None:
            if classes.shape[1] != scores.shape[1]:
                raise errors.invalid_argument(
                    f'Tensors class and score should match in dim_size(1). '
                    f'Got {classes.shape[1]} vs. {scores.shape[1]}')
        num_classes = (classes if classes is not None else scores).shape[1]
        labels = (classes.tolist() if classes is not None else None)
        values = (scores.tolist() if scores is not None else None)
        for i in range(num):
            group = result.classifications.add()
            for j in range(num_classes):
                cls = group.classes.add()
                if labels is not None:
                    cls.label = labels[i][j].decode('utf-8', 'replace')
                if values is not None:
                    cls.score = values[i][j]

    # -------------------------------------------------------------- regress

    def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        servable = self.acquire(request.model_spec)
        try:
            return self.regress_with(servable, request)
        finally:
            servable.release()

    def regress_with(
        self, servable, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        sig = self._task_signature(servable, request.model_spec.signature_name,
                                   servable_lib.REGRESS_METHOD)
        sig.regress_outputs()
        examples = serialized_examples(request.input)
        response = regression_pb2.RegressionResponse()
        fill_spec(response.model_spec, servable, sig.name)
        self._regress(servable, sig, examples, response.result)
        return response

    def _regress(self, servable, sig: servable_lib.Signature,
                 examples: np.ndarray,
                 result: regression_pb2.RegressionResult) -> None:
        alias, output = sig.regress_outputs()
        arrays = {alias: examples}
        sig.check_inputs(arrays)
        if self.metrics:
            self.metrics.examples(servable.name, len(examples))
        values = self.run(servable, sig, arrays, (output,), 'Regress')[output]
        if values.dtype != np.float32:
            raise errors.invalid_argument(
                f'Expected output Tensor of DT_FLOAT.  Got: '
                f'DT_{tensors.dtype_name(tensors.dtype_of(values)).upper()}')
        if not (values.ndim == 1 or
                (values.ndim == 2 and values.shape[1] == 1)):
            raise errors.invalid_argument(
                f'Expected output Tensor shape to be either [batch_size] or '
                f'[batch_size, 1] but got {tensors.shape_string(values.shape)}')
        if values.shape[0] != len(examples):
            raise errors.invalid_argument(
                f'Input batch size did not match output batch size: '
                f'{len(examples)} vs. {values.shape[0]}')
        for value in values.reshape(-1).tolist():
            result.regressions.add().value = value

    # ------------------------------------------------------ multi-inference

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise errors.invalid_argument(
                'Found no tasks in MultiInferenceRequest.')
        servable = self.acquire(request.tasks[0].model_spec)
        try:
            return self.multi_inference_with(servable, request)
        finally:
            servable.release()

    def multi_inference_with(
        self, servable, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        model_name = request.tasks[0].model_spec.name if request.tasks else ''
        plan: List[Tuple[str, servable_lib.Signature]] = []
        seen = set()
        inputs = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise errors.invalid_argument(
                    'Found ModelSpec with an empty model name.')
            if task.model_spec.name != model_name:
                raise errors.invalid_argument(
                    'All ModelSpecs in a MultiInferenceRequest must access the '
                    'same model name.')
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise errors.invalid_argument(
                    f'Duplicate evaluation of signature: {name}')
            seen.add(name)
            sig = servable.signatures.get(name)
            if sig is None:
                raise errors.invalid_argument(
                    f'Requested signature not found in model graph: {name}')
            if task.method_name == servable_lib.CLASSIFY_METHOD:
                inputs.add(sig.classify_outputs()[0])
            elif task.method_name == servable_lib.REGRESS_METHOD:
                inputs.add(sig.regress_outputs()[0])
            else:
                raise errors.ServingError(
                    errors.Code.UNIMPLEMENTED,
                    f'Unsupported signature method_name: {task.method_name}')
            plan.append((task.method_name, sig))
        if len(inputs) != 1:
            raise errors.invalid_argument(
                'Input tensor must be the same for all Signatures.')
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for method, sig in plan:
            result = response.results.add()
            fill_spec(result.model_spec, servable, sig.name)
            if method == servable_lib.CLASSIFY_METHOD:
                self._classify(servable, sig, examples,
                               result.classification_result)
            else:
                self._regress(servable, sig, examples, result.regression_result)
        return response

    # ------------------------------------------------------ metadata/status

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField('model_spec'):
            raise errors.invalid_argument('Missing ModelSpec')
        if not request.metadata_field:
            raise errors.invalid_argument(
                'GetModelMetadataRequest must specify at least one '
                'metadata_field')
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid_argument(
                    f'Metadata field {field} is not supported')
        servable = self.acquire(request.model_spec)
        try:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature_def in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature_def)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
            return response
        finally:
            servable.release()

    def status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField('model_spec'):
            raise errors.invalid_argument('Missing ModelSpec')
        statuses = self.served.version_status(*spec_target(request.model_spec))
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(
                status.state)
            entry.status.SetInParent()  # TF Serving always sets it (OK too).
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response
