"""One loaded model version: its SignatureDefs and callable signatures.

A Servable is what TF Serving calls a servable version: a SavedModel loaded
with `tf.saved_model.load`, plus the SignatureDefs read from its MetaGraph
(for GetModelMetadata and for checking requests). Requests hold a reference
while they run (`acquire`/`release`) so that unloading waits for in-flight
requests, as TF Serving's servable handles do.
"""

import dataclasses
import os
import threading
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import message as proto_message
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from serving import errors
from serving import tensors

PREDICT_METHOD = 'tensorflow/serving/predict'
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'
CLASSES_OUTPUT = 'classes'
SCORES_OUTPUT = 'scores'
REGRESS_OUTPUT = 'outputs'


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: dtype enum and shape (None = any rank)."""

    dtype: int
    shape: Optional[Tuple[int, ...]]

    @classmethod
    def from_info(cls, info: meta_graph_pb2.TensorInfo) -> 'TensorSpec':
        return cls(info.dtype, tensors.shape_tuple(info.tensor_shape))


def _flat_call(function) -> Optional[Callable[[Dict[str, Any]], Any]]:
    """A cheaper call of a loaded signature function, if it has one.

    Calling a signature by keyword binds the arguments to its FunctionType,
    checks and flattens them: 140 of its 210 CPU-microseconds a call on a
    small model, all of it holding the GIL. Inputs already checked against
    the SignatureDef (`check_inputs`) go straight to the ConcreteFunction's
    flat call, in its FunctionType's parameter order (outputs packed as
    before; gradients and distributed variables handled as before).
    """
    flat = getattr(function, '_call_flat', None)
    spec = getattr(function, 'structured_input_signature', None)
    function_type = getattr(function, 'function_type', None)
    if flat is None or function_type is None or not isinstance(spec, tuple):
        return None
    args, kwargs = spec
    if args or not isinstance(kwargs, dict) or not all(
            isinstance(v, tf.TensorSpec) for v in kwargs.values()):
        return None
    order = tuple(function_type.parameters)
    if sorted(order) != sorted(kwargs):
        return None

    def call(feeds: Dict[str, Any]) -> Any:
        return flat([feeds[k] for k in order], function.captured_inputs)

    return call


class Signature:
    """A callable signature with the SignatureDef it was declared with."""

    def __init__(self, name: str, signature_def: meta_graph_pb2.SignatureDef,
                 function):
        self.name = name
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.inputs: Dict[str, TensorSpec] = {
            k: TensorSpec.from_info(v)
            for k, v in sorted(signature_def.inputs.items())
        }
        self.outputs: Dict[str, TensorSpec] = {
            k: TensorSpec.from_info(v)
            for k, v in sorted(signature_def.outputs.items())
        }
        self._input_order = {k: i for i, k in enumerate(self.inputs)}
        self._tf_dtypes = {
            k: tf.dtypes.as_dtype(v.dtype) for k, v in self.inputs.items()
        }
        self._function = function
        self._flat_call = _flat_call(function)

    def check_names(self, names: Iterable[str]) -> None:
        """Checks the request's input names (VerifyRequestInputsSize & co).

        Raises:
          errors.ServingError: INVALID_ARGUMENT naming what is wrong.
        """
        sent = sorted(names)
        if sent == list(self.inputs):
            return
        expected = list(self.inputs)
        if len(sent) != len(expected):
            extra = sorted(set(sent) - set(expected))
            missing = sorted(set(expected) - set(sent))
            raise errors.invalid_argument(
                f'input size does not match signature: {len(sent)}!='
                f'{len(expected)} len({{{",".join(sent)}}}) != '
                f'len({{{",".join(expected)}}}). Sent extra: '
                f'{{{",".join(extra)}}}. Missing but required: '
                f'{{{",".join(missing)}}}.')
        for alias in sent:
            if alias not in self.inputs:
                raise errors.invalid_argument(
                    f'input tensor alias not found in signature: {alias}. '
                    f'Inputs expected to be in the set '
                    f'{{{",".join(expected)}}}.')

    def check_inputs(self, arrays: Dict[str, np.ndarray]) -> None:
        """Checks input names, dtypes and shapes before running.

        Raises:
          errors.ServingError: INVALID_ARGUMENT naming what is wrong.
        """
        self.check_names(arrays.keys())
        for alias, array in arrays.items():
            spec = self.inputs[alias]
            actual = tensors.dtype_of(array)
            if actual != spec.dtype:
                raise errors.invalid_argument(
                    f'Expects arg[{self._input_order[alias]}] to be '
                    f'{tensors.dtype_name(spec.dtype)} but '
                    f'{tensors.dtype_name(actual)} is provided')
            if not tensors.shapes_compatible(spec.shape, array.shape):
                raise errors.invalid_argument(
                    f'Input {alias} has shape '
                    f'{tensors.shape_string(array.shape)} which is not '
                    f'compatible with the signature\'s shape '
                    f'{tensors.shape_string(spec.shape)}')

    def check_outputs(self, output_filter: Iterable[str]) -> Tuple[str, ...]:
        """Validates a Predict output_filter; returns the outputs to return."""
        chosen = []
        for alias in output_filter:
            if alias not in self.outputs:
                raise errors.invalid_argument(
                    f'output tensor alias not found in signature: {alias} '
                    f'Outputs expected to be in the set '
                    f'{{{",".join(self.outputs)}}}.')
            if alias in chosen:
                raise errors.invalid_argument(
                    f'duplicate output tensor alias: {alias}')
            chosen.append(alias)
        return tuple(chosen) if chosen else tuple(self.outputs)

    def run(self,
            arrays: Dict[str, np.ndarray],
            outputs: Optional[Tuple[str, ...]] = None) -> Dict[str, np.ndarray]:
        """Calls the signature; inputs must already be checked."""
        feeds = {
            k: tf.constant(v, dtype=self._tf_dtypes[k])
            for k, v in arrays.items()
        }
        try:
            if self._flat_call is not None:
                result = self._flat_call(feeds)
            else:
                result = self._function(**feeds)
        except Exception as e:  # pylint: disable=broad-except
            raise errors.from_exception(e) from None
        keys = outputs if outputs is not None else result.keys()
        return {k: result[k].numpy() for k in keys}

    def classify_outputs(self) -> Tuple[str, Optional[str], Optional[str]]:
        """(input, classes, scores) aliases if usable for Classify.

        Mirrors PreProcessClassification with the method-name check off.
        """
        if len(self.inputs) != 1:
            raise errors.invalid_argument('Expected one input Tensor.')
        if len(self.outputs) not in (1, 2):
            raise errors.invalid_argument(
                f'Expected one or two output Tensors, found '
                f'{len(self.outputs)}')
        classes = CLASSES_OUTPUT if CLASSES_OUTPUT in self.outputs else None
        scores = SCORES_OUTPUT if SCORES_OUTPUT in self.outputs else None
        if classes is None and scores is None:
            raise errors.invalid_argument(
                f'Expected classification signature outputs to contain at '
                f'least one of "{CLASSES_OUTPUT}" or "{SCORES_OUTPUT}".')
        return next(iter(self.inputs)), classes, scores

    def regress_outputs(self) -> Tuple[str, str]:
        """The (input, output) aliases Regress uses, if the signature fits."""
        if len(self.inputs) != 1:
            raise errors.invalid_argument('Expected one input Tensor.')
        if len(self.outputs) != 1:
            raise errors.invalid_argument('Expected one output Tensor.')
        if REGRESS_OUTPUT not in self.outputs:
            raise errors.invalid_argument(
                f'No regression outputs found in signature def: '
                f'{REGRESS_OUTPUT}')
        return next(iter(self.inputs)), REGRESS_OUTPUT


class Servable:
    """A loaded SavedModel version, reference counted by in-flight requests."""

    def __init__(self, name: str, version: int, path: str,
                 signature_defs: Dict[str, meta_graph_pb2.SignatureDef],
                 signatures: Dict[str, Signature], loaded):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self.signatures = signatures
        self._loaded = loaded
        # Per-model batching_params.pbtxt
        # (--enable_per_model_batching_parameters).
        self.batching_options = None
        self._lock = threading.Condition()
        self._refs = 0
        self._closing = False

    def __repr__(self) -> str:
        return f'{{name: {self.name} version: {self.version}}}'

    def acquire(self) -> bool:
        """Takes a reference; False once the version is being unloaded."""
        with self._lock:
            if self._closing:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            if self._refs == 0:
                self._lock.notify_all()

    def close(self) -> None:
        """Refuses new requests, waits for in-flight ones, drops the model."""
        with self._lock:
            self._closing = True
            while self._refs:
                self._lock.wait()
        self.signatures = {}
        self._loaded = None

    def signature(self, name: str) -> Signature:
        """The runnable signature `name` (Predict's lookup and error)."""
        sig = self.signatures.get(name)
        if sig is None:
            raise errors.failed_precondition(
                f'Serving signature key "{name}" not found.')
        return sig


def read_meta_graph(path: str, tags: Tuple[str,
                                           ...]) -> meta_graph_pb2.MetaGraphDef:
    """Reads the MetaGraph tagged exactly `tags` from a SavedModel directory."""
    saved_model = saved_model_pb2.SavedModel()
    pb_path = os.path.join(path, 'saved_model.pb')
    pbtxt_path = os.path.join(path, 'saved_model.pbtxt')
    if os.path.exists(pb_path):
        with open(pb_path, 'rb') as f:
            data = f.read()
        try:
            saved_model.ParseFromString(data)
        except proto_message.DecodeError:
            raise errors.ServingError(
                errors.Code.DATA_LOSS,
                f"Can't parse {pb_path} as binary proto") from None
    elif os.path.exists(pbtxt_path):
        with open(pbtxt_path, encoding='utf-8') as f:
            try:
                text_format.Parse(f.read(), saved_model)
            except text_format.ParseError as e:
                raise errors.ServingError(
                    errors.Code.DATA_LOSS,
                    f"Can't parse {pbtxt_path} as text proto: {e}") from None
    else:
        raise errors.not_found(
            f'Could not find SavedModel .pb or .pbtxt at supplied export '
            f'directory path: {path}')
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    raise errors.not_found(
        f'Could not find meta graph def matching supplied tags: '
        f'{{ {" ".join(tags)} }}. To inspect available tag-sets in the '
        f'SavedModel, please use the SavedModel CLI: `saved_model_cli`')


def load(name: str, version: int, path: str, tags: Tuple[str, ...]) -> Servable:
    """Loads one SavedModel version.

    Raises:
      errors.ServingError: the SavedModel cannot be read or loaded.
    """
    meta_graph = read_meta_graph(path, tags)
    signature_defs = dict(meta_graph.signature_def.items())
    del meta_graph  # Only the SignatureDefs are kept, as TF Serving does.
    try:
        loaded = tf.saved_model.load(path, tags=list(tags))
    except Exception as e:  # pylint: disable=broad-except
        raise errors.from_exception(e) from None
    functions = loaded.signatures
    signatures = {
        key: Signature(key, sdef, functions[key])
        for key, sdef in signature_defs.items()
        if key in functions
    }
    return Servable(name, version, path, signature_defs, signatures, loaded)
