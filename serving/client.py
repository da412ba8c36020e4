"""A gRPC client for TF Serving-compatible model servers.

It speaks only the standard `tensorflow_serving.apis` protos, so it works the
same against this project's server (`python -m serving serve`) and against
the real `tensorflow_model_server`. The signature, input and output names come
from `common.signatures`. It imports neither TensorFlow nor its protos'
modules (`serving.api_protos` has the same messages), so that a command line
client answers in a second or two.

Example:
    with ModelServerClient('127.0.0.1:8500') as client:
        client.wait_until_available('convnet', timeout=60)
        for prediction in client.predict_images('convnet', [png_bytes]):
            print(prediction.top_class, prediction.top_score)
"""

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np

from common import signatures
from serving import api_protos
from serving import tensors
from serving.errors import Code
from serving.errors import ServingError
from serving.errors import VersionStatus


def _api(proto: str, name: str) -> Any:
    """The message class tensorflow.serving.<name> of apis/<proto>.proto."""
    return api_protos.message(f'tensorflow_serving/apis/{proto}.proto',
                              f'tensorflow.serving.{name}')


_ModelSpec = _api('model', 'ModelSpec')
_PredictRequest = _api('predict', 'PredictRequest')
_PredictResponse = _api('predict', 'PredictResponse')
_ClassificationRequest = _api('classification', 'ClassificationRequest')
_ClassificationResponse = _api('classification', 'ClassificationResponse')
_StatusRequest = _api('get_model_status', 'GetModelStatusRequest')
_StatusResponse = _api('get_model_status', 'GetModelStatusResponse')
_VersionStatusProto = _api('get_model_status', 'ModelVersionStatus')
_MetadataRequest = _api('get_model_metadata', 'GetModelMetadataRequest')
_MetadataResponse = _api('get_model_metadata', 'GetModelMetadataResponse')
_SignatureDefMap = _api('get_model_metadata', 'SignatureDefMap')
# Large enough for a batch of full-size images; gRPC's default is 4 MiB.
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_DEFAULT_BATCH_SIZE = 32


class ModelNotAvailableError(ServingError):
    """The model did not become AVAILABLE: it failed to load or timed out.

    Attributes:
        statuses: The last version statuses the server reported (may be
            empty when it never answered).
    """

    def __init__(self,
                 message: str,
                 statuses: Sequence[VersionStatus] = (),
                 code: Code = Code.UNAVAILABLE):
        self.statuses = list(statuses)
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The classes of one input with their probabilities, most likely first.

    Attributes:
        classes: Class names, sorted by descending probability.
        scores: The probabilities of `classes`, aligned with them.
    """

    classes: Tuple[str, ...]
    scores: Tuple[float, ...]

    @property
    def top_class(self) -> str:
        """The most likely class name."""
        return self.classes[0]

    @property
    def top_score(self) -> float:
        """The probability of the most likely class."""
        return self.scores[0]

    def pairs(self) -> List[Tuple[str, float]]:
        """Returns (class name, probability) pairs, most likely first."""
        return list(zip(self.classes, self.scores))


def make_prediction(classes: Sequence[Any],
                    scores: Sequence[float],
                    top_k: Optional[int] = None) -> Prediction:
    """Sorts one row of class names and scores into a `Prediction`.

    Args:
        classes: Class names (str or bytes) aligned with `scores`.
        scores: One probability per class.
        top_k: Keep only this many of the most likely classes (all if None).

    Returns:
        The classes and scores, most likely first.
    """
    names = [
        c.decode('utf-8') if isinstance(c, bytes) else str(c) for c in classes
    ]
    values = [float(s) for s in scores]
    # A stable sort keeps the model's class order among equal scores.
    order = sorted(range(len(values)), key=lambda i: -values[i])
    if top_k is not None:
        order = order[:top_k]
    return Prediction(classes=tuple(names[i] for i in order),
                      scores=tuple(values[i] for i in order))


def pad_sequences(sequences: Sequence[np.ndarray],
                  dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Pads sequences of shape [length, channels] to one batch with zeros.

    Args:
        sequences: Arrays of shape [length, channels] (or [length] for one
            channel); all must have the same number of channels.
        dtype: The dtype of the padded batch.

    Returns:
        (padded [batch, max_length, channels], lengths [batch] as int64).

    Raises:
        ValueError: If the sequences are empty or their channels differ.
    """
    if not sequences:
        raise ValueError('no sequences to pad')
    arrays = []
    for seq in sequences:
        array = np.asarray(seq, dtype=dtype)
        if array.ndim == 1:
            array = array[:, np.newaxis]
        if array.ndim != 2:
            raise ValueError('a sequence must be [length, channels], got shape '
                             f'{array.shape}')
        arrays.append(array)
    channels = {a.shape[1] for a in arrays}
    if len(channels) != 1:
        raise ValueError(
            f'sequences have different numbers of channels: {sorted(channels)}')
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    padded = np.zeros((len(arrays), int(lengths.max()), channels.pop()),
                      dtype=dtype)
    for i, array in enumerate(arrays):
        padded[i, :array.shape[0]] = array
    return padded, lengths


def model_spec(model: str,
               version: Optional[int] = None,
               label: Optional[str] = None,
               signature: Optional[str] = None) -> Any:
    """Builds the ModelSpec naming a model, its version or label, a signature.

    Raises:
        ValueError: Both a version and a label were given.
    """
    if version is not None and label is not None:
        raise ValueError('give a version or a label, not both')
    spec = _ModelSpec(name=model)
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = label
    if signature is not None:
        spec.signature_name = signature
    return spec


def _batches(items: Sequence[Any], size: int) -> List[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class ModelServerClient:
    """A client for one TF Serving-compatible model server over gRPC.

    Every call takes the model name, and optionally a version number or a
    version label (not both); without either the server picks its latest
    available version.
    """

    def __init__(self, address: str, timeout: float = 30.0):
        """Opens a channel (lazily: nothing is sent until the first call).

        Args:
            address: HOST:PORT of the server's gRPC port.
            timeout: Deadline in seconds for each RPC.
        """
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ('grpc.max_send_message_length', _MAX_MESSAGE_BYTES),
                ('grpc.max_receive_message_length', _MAX_MESSAGE_BYTES),
                # gRPC backs off up to 2 minutes between reconnects by default;
                # a poller waiting for a starting server should notice it soon.
                ('grpc.initial_reconnect_backoff_ms', 250),
                ('grpc.max_reconnect_backoff_ms', 1000),
            ])
        self._get_model_status = self._method('ModelService/GetModelStatus',
                                              _StatusResponse)
        self._get_model_metadata = self._method(
            'PredictionService/GetModelMetadata', _MetadataResponse)
        self._predict = self._method('PredictionService/Predict',
                                     _PredictResponse)
        self._classify = self._method('PredictionService/Classify',
                                      _ClassificationResponse)
        self._metadata_cache: Dict[Tuple[str, Optional[int], Optional[str]],
                                   Dict[str, Any]] = {}

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> 'ModelServerClient':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- Plumbing -----------------------------------------------------------

    def _method(self, name: str, response_class: Any) -> Any:
        # Requests of TensorFlow's classes serialize the same: any will do.
        return self._channel.unary_unary(
            f'/tensorflow.serving.{name}',
            request_serializer=lambda request: request.SerializeToString(),
            response_deserializer=response_class.FromString)

    def _call(self,
              rpc: Any,
              request: Any,
              what: str,
              timeout: Optional[float] = None) -> Any:
        try:
            return rpc(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            status = e.code() if hasattr(e, 'code') else None
            code = Code(status.value[0]) if status is not None else Code.UNKNOWN
            details = (e.details() if hasattr(e, 'details') else '') or str(e)
            if code == Code.UNAVAILABLE:
                details = (f'cannot reach the model server at {self.address} '
                           f'({details}){_http_hint(details)}')
            raise ServingError(code, details, context=what) from None

    # --- Model service ------------------------------------------------------

    def model_status(self,
                     model: str,
                     version: Optional[int] = None,
                     label: Optional[str] = None) -> List[VersionStatus]:
        """Returns the state of each version of `model` the server knows.

        Args:
            model: The model name.
            version: Ask about this version only.
            label: Ask about the version with this label only.

        Returns:
            One `VersionStatus` per version, sorted by version number.

        Raises:
            ServingError: The RPC failed (e.g. NOT_FOUND for an unknown model,
                UNAVAILABLE when the server is down).
        """
        request = _StatusRequest(model_spec=model_spec(model, version, label))
        response = self._call(self._get_model_status, request,
                              f'GetModelStatus({model})')
        statuses = [
            VersionStatus(
                version=s.version,
                state=api_protos.enum_name(_VersionStatusProto, 'State',
                                           s.state),
                error=ServingError(s.status.error_code, s.status.error_message)
                if s.status.error_code else None)
            for s in response.model_version_status
        ]
        return sorted(statuses, key=lambda s: s.version)

    def wait_until_available(self,
                             model: str,
                             timeout: float,
                             version: Optional[int] = None,
                             poll_interval: float = 0.5) -> List[VersionStatus]:
        """Polls GetModelStatus until a version of `model` is AVAILABLE.

        Connection failures and NOT_FOUND count as "not yet": the server may
        still be starting or reading its config.

        Args:
            model: The model name.
            timeout: Give up after this many seconds.
            version: Wait for this version; by default any version will do.
            poll_interval: Seconds between polls.

        Returns:
            The statuses of the model's versions once one is AVAILABLE.

        Raises:
            ModelNotAvailableError: Every version ended without becoming
                available (a failed load), or the time ran out; carries the
                last statuses or the last RPC error.
        """
        deadline = time.monotonic() + timeout
        last_error: Optional[ServingError] = None
        statuses: List[VersionStatus] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                statuses = self.model_status(model, version=version)
                last_error = None
            except ServingError as e:
                last_error = e
            else:
                if any(s.state == 'AVAILABLE' for s in statuses):
                    return statuses
                if statuses and all(s.state == 'END' for s in statuses):
                    failed = [s for s in statuses if s.error_code]
                    if failed:
                        raise ModelNotAvailableError(
                            f'model {model!r} failed to load: ' +
                            '; '.join(str(s) for s in failed),
                            statuses=statuses)
            if remaining <= 0:
                break
            time.sleep(min(poll_interval, max(remaining, 0.01)))
        if last_error is not None:
            raise ModelNotAvailableError(
                f'model {model!r} not available after {timeout:g}s: '
                f'{last_error}',
                statuses=statuses,
                code=last_error.code)
        shown = '; '.join(str(s) for s in statuses) or 'no versions'
        raise ModelNotAvailableError(
            f'model {model!r} not available after {timeout:g}s: {shown}',
            statuses=statuses)

    def model_metadata(self,
                       model: str,
                       version: Optional[int] = None,
                       label: Optional[str] = None) -> Dict[str, Any]:
        """Returns the model's signatures, from GetModelMetadata.

        Args:
            model: The model name.
            version: The version to ask about (default: the latest).
            label: The version label to ask about.

        Returns:
            {signature name: tensorflow SignatureDef proto}; each SignatureDef
            has `inputs` and `outputs` maps of TensorInfo (name, dtype, shape).

        Raises:
            ServingError: The RPC failed or the answer has no signatures.
        """
        what = f'GetModelMetadata({model})'
        request = _MetadataRequest(model_spec=model_spec(model, version, label),
                                   metadata_field=['signature_def'])
        response = self._call(self._get_model_metadata, request, what)
        if 'signature_def' not in response.metadata:
            raise ServingError(Code.INTERNAL,
                               'the answer has no signature_def',
                               context=what)
        signature_map = _SignatureDefMap()
        if not response.metadata['signature_def'].Unpack(signature_map):
            raise ServingError(Code.INTERNAL,
                               'signature_def is not a SignatureDefMap',
                               context=what)
        return dict(signature_map.signature_def)

    def _cached_metadata(self, model: str, version: Optional[int],
                         label: Optional[str]) -> Dict[str, Any]:
        key = (model, version, label)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = self.model_metadata(
                model, version, label)
        return self._metadata_cache[key]

    def input_dtypes(self,
                     model: str,
                     signature: str,
                     version: Optional[int] = None,
                     label: Optional[str] = None) -> Dict[str, np.dtype]:
        """Returns {input name: numpy dtype} that `signature` declares.

        Raises:
            ServingError: The model has no such signature, or the RPC failed.
        """
        signature_defs = self._cached_metadata(model, version, label)
        if signature not in signature_defs:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f'model {model!r} has no signature {signature!r} '
                f'(it has: {_signature_names(signature_defs)})')
        return {
            name: tensors.numpy_dtype(info.dtype)
            for name, info in signature_defs[signature].inputs.items()
        }

    # --- Prediction service -------------------------------------------------

    def predict(
            self,
            model: str,
            inputs: Mapping[str, Any],
            signature: str = signatures.DEFAULT_SIGNATURE,
            version: Optional[int] = None,
            label: Optional[str] = None,
            output_filter: Optional[Sequence[str]] = None
    ) -> Dict[str, np.ndarray]:
        """Sends one Predict request.

        Args:
            model: The model name.
            inputs: {input name: array-like}; a list of bytes becomes a string
                tensor.
            signature: The signature to run.
            version: The model version (default: the latest).
            label: The version label.
            output_filter: Return only these outputs (default: all).

        Returns:
            {output name: numpy array}; string outputs hold bytes objects.

        Raises:
            ServingError: The RPC failed.
        """
        try:
            return self.send_predict(
                build_predict_request(model, inputs, signature, version, label,
                                      output_filter))
        except ServingError as e:
            if (e.code not in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION)
                    or signature not in e.message):
                raise
            try:
                names = _signature_names(
                    self._cached_metadata(model, version, label))
            except ServingError:
                raise e from None
            raise ServingError(
                e.code,
                f'{e.message.rstrip(".")}; the model has: {names}',
                context=e.context) from None

    def send_predict(self, request: Any) -> Dict[str, np.ndarray]:
        """Sends a ready-made PredictRequest; returns {output: numpy array}.

        Raises:
            ServingError: The RPC failed.
        """
        what = (f'Predict({request.model_spec.name}, '
                f'{request.model_spec.signature_name or "serving_default"})')
        response = self._call(self._predict, request, what)
        try:
            return tensors.arrays_from_protos(response.outputs)
        except ServingError as e:
            raise ServingError(Code.INTERNAL, f'the answer has a bad tensor: '
                               f'{e.message}',
                               context=what) from None

    def _predict_classes(self, model: str, inputs: Mapping[str,
                                                           Any], signature: str,
                         version: Optional[int], label: Optional[str],
                         top_k: Optional[int]) -> List[Prediction]:
        outputs = self.predict(
            model,
            inputs,
            signature=signature,
            version=version,
            label=label,
            output_filter=[signatures.SCORES_OUTPUT, signatures.CLASSES_OUTPUT])
        return predictions_from_outputs(outputs, top_k, what=signature)

    def _classify_in_batches(self, model: str, items: Sequence[Any],
                             batch_size: int,
                             to_inputs: Callable[[Sequence[Any]],
                                                 Mapping[str,
                                                         Any]], signature: str,
                             version: Optional[int], label: Optional[str],
                             top_k: Optional[int]) -> List[Prediction]:
        """Classifies `items` a request per `batch_size`, in order."""
        results: List[Prediction] = []
        for batch in _batches(list(items), batch_size):
            results.extend(
                self._predict_classes(model, to_inputs(batch), signature,
                                      version, label, top_k))
        return results

    def predict_images(
            self,
            model: str,
            images: Sequence[bytes],
            version: Optional[int] = None,
            label: Optional[str] = None,
            top_k: Optional[int] = 5,
            batch_size: int = _DEFAULT_BATCH_SIZE) -> List[Prediction]:
        """Classifies encoded images (PNG, JPEG, ...) on the image signature.

        Args:
            model: The model name.
            images: Encoded image files' bytes, as the image signature takes.
            version: The model version (default: the latest).
            label: The version label.
            top_k: Keep this many classes per image (all if None).
            batch_size: Images per request.

        Returns:
            One `Prediction` per image, in order.

        Raises:
            ServingError: The RPC failed or the answer is malformed.
        """
        return self._classify_in_batches(
            model, images, batch_size, lambda batch: {
                signatures.IMAGE_INPUT:
                    np.array([bytes(b) for b in batch], dtype=object)
            }, signatures.IMAGE_SIGNATURE, version, label, top_k)

    def predict_sequences(
            self,
            model: str,
            sequences: Sequence[np.ndarray],
            version: Optional[int] = None,
            label: Optional[str] = None,
            top_k: Optional[int] = 5,
            batch_size: int = _DEFAULT_BATCH_SIZE) -> List[Prediction]:
        """Classifies sequences on the sequence signature.

        Each batch is padded with zeros to its longest sequence and sent with
        the lengths, in the dtypes the model's signature declares.

        Args:
            model: The model name.
            sequences: Float arrays of shape [length, channels].
            version: The model version (default: the latest).
            label: The version label.
            top_k: Keep this many classes per sequence (all if None).
            batch_size: Sequences per request.

        Returns:
            One `Prediction` per sequence, in order.

        Raises:
            ServingError: The RPC failed or the answer is malformed.
            ValueError: The sequences do not share a channel count.
        """
        dtypes = self.input_dtypes(model, signatures.SEQUENCE_SIGNATURE,
                                   version, label)
        values_dtype = dtypes.get(signatures.SEQUENCE_INPUT, np.float32)
        lengths_dtype = dtypes.get(signatures.LENGTH_INPUT, np.int64)

        def to_inputs(batch):
            padded, lengths = pad_sequences(batch, dtype=values_dtype)
            return {
                signatures.SEQUENCE_INPUT: padded,
                signatures.LENGTH_INPUT: lengths.astype(lengths_dtype),
            }

        return self._classify_in_batches(model, sequences, batch_size,
                                         to_inputs,
                                         signatures.SEQUENCE_SIGNATURE, version,
                                         label, top_k)

    def predict_clips(
            self,
            model: str,
            clips: Sequence[np.ndarray],
            version: Optional[int] = None,
            label: Optional[str] = None,
            top_k: Optional[int] = 5,
            batch_size: int = _DEFAULT_BATCH_SIZE) -> List[Prediction]:
        """Classifies clips on the clip signature.

        Args:
            model: The model name.
            clips: Arrays [frames, height, width, channels] of the model's
                clip shape, values as the clips' files hold them.
            version: The model version (default: the latest).
            label: The version label.
            top_k: Keep this many classes per clip (all if None).
            batch_size: Clips per request.

        Returns:
            One `Prediction` per clip, in order.

        Raises:
            ServingError: The RPC failed (a clip of another shape than the
                model's) or the answer is malformed.
        """
        return self._classify_in_batches(
            model, clips, batch_size, lambda batch: {
                signatures.CLIP_INPUT:
                    np.stack([np.asarray(c, np.float32) for c in batch])
            }, signatures.CLIP_SIGNATURE, version, label, top_k)

    def classify_examples(self,
                          model: str,
                          serialized_examples: Sequence[bytes],
                          signature: str = signatures.DEFAULT_SIGNATURE,
                          version: Optional[int] = None,
                          label: Optional[str] = None,
                          top_k: Optional[int] = None) -> List[Prediction]:
        """Classifies serialized tf.Examples with the Classify RPC.

        Args:
            model: The model name.
            serialized_examples: Serialized tf.train.Example protos.
            signature: The signature taking serialized examples.
            version: The model version (default: the latest).
            label: The version label.
            top_k: Keep this many classes per example (all if None).

        Returns:
            One `Prediction` per example, in order.

        Raises:
            ServingError: The RPC failed or the answer does not have one
                result per example.
        """
        request = build_classification_request(model, serialized_examples,
                                               signature, version, label)
        return self.send_classify(request, top_k=top_k)

    def send_classify(self,
                      request: Any,
                      top_k: Optional[int] = None) -> List[Prediction]:
        """Sends a ready-made ClassificationRequest.

        Returns:
            One `Prediction` per example, in order (all classes if top_k is
            None, so the model's class count can be checked).

        Raises:
            ServingError: The RPC failed or the answer does not have one
                result per example.
        """
        what = f'Classify({request.model_spec.name})'
        response = self._call(self._classify, request, what)
        expected = len(request.input.example_list.examples)
        got = len(response.result.classifications)
        if got != expected:
            raise ServingError(Code.INTERNAL,
                               f'{got} results for {expected} examples',
                               context=what)
        return [
            make_prediction([c.label
                             for c in row.classes],
                            [c.score
                             for c in row.classes], top_k)
            for row in response.result.classifications
        ]


def build_classification_request(model: str,
                                 serialized_examples: Sequence[bytes],
                                 signature: str = signatures.DEFAULT_SIGNATURE,
                                 version: Optional[int] = None,
                                 label: Optional[str] = None) -> Any:
    """Builds a Classify request for serialized tf.Examples.

    Args:
        model: The model name.
        serialized_examples: Serialized tf.train.Example protos.
        signature: The signature taking serialized examples.
        version: The model version (default: the latest).
        label: The version label.

    Returns:
        The request.
    """
    request = _ClassificationRequest(
        model_spec=model_spec(model, version, label, signature))
    examples = request.input.example_list.examples
    for serialized in serialized_examples:
        examples.add().ParseFromString(serialized)
    return request


def build_predict_request(model: str,
                          inputs: Mapping[str, Any],
                          signature: str = signatures.DEFAULT_SIGNATURE,
                          version: Optional[int] = None,
                          label: Optional[str] = None,
                          output_filter: Optional[Sequence[str]] = None) -> Any:
    """Builds a Predict request.

    Args:
        model: The model name.
        inputs: {input name: array-like}; a list of bytes becomes a string
            tensor.
        signature: The signature to run.
        version: The model version (default: the latest).
        label: The version label.
        output_filter: Ask only for these outputs (default: all).

    Returns:
        The request.
    """
    request = _PredictRequest(
        model_spec=model_spec(model, version, label, signature))
    for name, value in inputs.items():
        if not isinstance(value, np.ndarray):
            value = np.asarray(value,
                               dtype=object if _is_bytes_list(value) else None)
        tensors.fill_proto(value, request.inputs[name])
    if output_filter:
        request.output_filter.extend(output_filter)
    return request


def predictions_from_outputs(outputs: Mapping[str, np.ndarray],
                             top_k: Optional[int] = None,
                             what: str = 'Predict') -> List[Prediction]:
    """Turns `scores` and `classes` outputs into one `Prediction` per row.

    Args:
        outputs: Predict outputs holding `scores` [batch, C] and `classes`
            [batch, C].
        top_k: Keep this many classes per row (all if None).
        what: Names the call in errors.

    Returns:
        One `Prediction` per row.

    Raises:
        ServingError: An output is missing or the shapes do not agree.
    """
    for name in (signatures.SCORES_OUTPUT, signatures.CLASSES_OUTPUT):
        if name not in outputs:
            raise ServingError(
                Code.INTERNAL, f'the answer has no {name!r} output '
                f'(it has: {", ".join(sorted(outputs)) or "none"})',
                context=what)
    scores = np.asarray(outputs[signatures.SCORES_OUTPUT])
    classes = np.asarray(outputs[signatures.CLASSES_OUTPUT])
    if scores.ndim != 2 or scores.shape != classes.shape:
        raise ServingError(
            Code.INTERNAL, f'scores {list(scores.shape)} and classes '
            f'{list(classes.shape)} are not both [batch, num_classes]',
            context=what)
    return [
        make_prediction(classes[i], scores[i], top_k)
        for i in range(scores.shape[0])
    ]


def _is_bytes_list(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and bool(value) and
            all(isinstance(v, bytes) for v in value))


def _signature_names(signature_defs: Mapping[str, Any]) -> str:
    # `__saved_model_init_op` is no signature one can call.
    names = sorted(n for n in signature_defs if not n.startswith('__'))
    return ', '.join(names) or 'none'


def _http_hint(details: str) -> str:
    """A hint when gRPC reached an HTTP/1 server (e.g. the REST port)."""
    if 'Failed parsing HTTP/2' in details or 'http1' in details.lower():
        return ('; this is an HTTP/1 port (the REST API?): --server takes '
                "the server's gRPC port")
    return ''
