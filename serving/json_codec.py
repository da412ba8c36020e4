"""JSON <-> tensors and tf.Examples for the REST API (as json_tensor.cc).

Requests: `{"signature_name": ..., "instances": [...]}` (row format, one
entry per batch element, objects when there are several named inputs) or
`{"inputs": ...}` (columnar: one value, or an object of named values). JSON
values are converted to the signature's dtypes with TF Serving's checks
(no lossy float conversion, no floats for ints, `{"b64": ...}` for bytes).
Responses mirror the request: `predictions` (rows) or `outputs` (columns);
float32 values print as TF Serving prints them ("%g" with 6 digits, 9 when
needed to round-trip, ".0" added to whole numbers); string outputs whose
name ends in `_bytes` come back as `{"b64": ...}`.
"""

import base64
import binascii
import json
import math
from json import encoder as json_encoder
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2
from tensorflow.core.framework import types_pb2

from serving import errors
from serving import servable as servable_lib
from serving import tensors

ROW, COLUMNAR = 'row', 'columnar'
_BYTES_SUFFIX = '_bytes'
_INT_RANGES = {
    types_pb2.DT_INT32: (-2**31, 2**31 - 1),
    types_pb2.DT_INT16: (-2**31, 2**31 - 1),
    types_pb2.DT_INT8: (-2**31, 2**31 - 1),
    types_pb2.DT_UINT8: (-2**31, 2**31 - 1),
    types_pb2.DT_INT64: (-2**63, 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_MAX_INT = {types_pb2.DT_FLOAT: 2**24 - 1, types_pb2.DT_DOUBLE: 2**53 - 1}
_FLOAT_MAX = {
    types_pb2.DT_FLOAT: float(np.finfo(np.float32).max),
    types_pb2.DT_DOUBLE: float(np.finfo(np.float64).max)
}


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_type(value: Any) -> str:
    if value is None:
        return 'Null'
    if value is True:
        return 'True'
    if value is False:
        return 'False'
    if isinstance(value, dict):
        return 'Object'
    if isinstance(value, list):
        return 'Array'
    if isinstance(value, str):
        return 'String'
    return 'Number'


def _status_text(error: errors.ServingError) -> str:
    return f'{error.code.name}: {error.message}'


def parse_body(body: bytes) -> Dict[str, Any]:
    """Parses a request body into a JSON object, as TF Serving words faults."""
    if not body:
        raise errors.invalid_argument('JSON Parse error: The document is empty')
    try:
        doc = json.loads(body)
    except RecursionError:
        raise errors.invalid_argument(
            'JSON Parse error: document nested too deeply') from None
    except (ValueError, UnicodeDecodeError) as e:
        offset = getattr(e, 'pos', 0)
        raise errors.invalid_argument(
            f'JSON Parse error: {getattr(e, "msg", str(e))} at offset: '
            f'{offset}') from None
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f'JSON Value: {_dump(doc)} Is not object')
    return doc


def signature_name(doc: Dict[str, Any]) -> str:
    """The request's `signature_name` ('' when absent); it must be a string."""
    name = doc.get('signature_name', '')
    if not isinstance(name, str):
        raise errors.invalid_argument(
            f'JSON Value: {_dump(doc)} not formatted correctly. '
            f"'signature_name' key must be a string value.")
    return name


# ------------------------------------------------------------------ values


def _is_b64(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 1 and
            isinstance(value.get('b64'), str))


def _b64decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise errors.invalid_argument(
            f'JSON Value: {_dump(value)} not formatted correctly for base64 '
            f'data')
    text = value['b64'].strip()
    try:
        return base64.b64decode(text + '=' * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_argument('Unable to base64 decode') from None


def _type_error(value: Any, dtype: int) -> errors.ServingError:
    return errors.invalid_argument(
        f'JSON Value: {_dump(value)} Type: {_json_type(value)} is not of '
        f'expected type: {tensors.dtype_name(dtype)}')


def _convert(values: List[Any], dtype: int) -> np.ndarray:
    """Converts every leaf to `dtype`, type and range checked; a flat array.

    Strings are UTF-8 encoded, `{"b64": ...}` objects decoded (as
    json_tensor.cc's AddValueToTensor does for each value).
    """
    if dtype == types_pb2.DT_STRING:
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            if isinstance(value, str):
                out[i] = value.encode('utf-8')
            elif isinstance(value, dict):
                out[i] = _b64decode(value)
            else:
                raise _type_error(value, dtype)
        return out
    if dtype == types_pb2.DT_BOOL:
        for value in values:
            if not isinstance(value, bool):
                raise _type_error(value, dtype)
        return np.array(values, dtype=np.bool_)
    if dtype in _FLOAT_MAX:
        limit, top = _FLOAT_MAX_INT[dtype], _FLOAT_MAX[dtype]
        for value in values:
            kind = type(value)
            if kind is int:
                ok = abs(value) <= limit
            elif kind is float:
                ok = not math.isfinite(value) or -top <= value <= top
            else:
                raise _type_error(value, dtype)
            if not ok:
                target = 'float' if dtype == types_pb2.DT_FLOAT else 'double'
                raise errors.invalid_argument(
                    f'Cannot convert JSON value: {_dump(value)} to {target} '
                    f'without loss of precision.')
        return np.array(values, dtype=tensors.numpy_dtype(dtype))
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        for value in values:
            if type(value) is not int or not low <= value <= high:
                raise _type_error(value, dtype)
        wide = np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64
        return np.array(values, dtype=wide).astype(tensors.numpy_dtype(dtype))
    raise errors.ServingError(
        errors.Code.UNIMPLEMENTED,
        f'Conversion of JSON Value: {_dump(values[0]) if values else "[]"} '
        f'to type: {tensors.dtype_name(dtype)}')


def _dense_shape(value: Any) -> List[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, level: int, shape: List[int], out: List[Any]) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise errors.invalid_argument(
                f'JSON Value: {_dump(value)} found at incorrect level: '
                f'{level + 1} in the JSON DOM. Expected at level: {len(shape)}')
        out.append(value)
        return
    if level >= len(shape):
        raise errors.invalid_argument(
            f'Encountered list at unexpected level: {level} expected < '
            f'{len(shape)}')
    if len(value) != shape[level]:
        raise errors.invalid_argument(
            f'Encountered list at unexpected size: {len(value)} at level: '
            f'{level} expected size: {shape[level]}')
    for item in value:
        _flatten(item, level + 1, shape, out)


def to_tensor(value: Any, dtype: int) -> np.ndarray:
    """A (nested-list) JSON value as a tensor of `dtype`."""
    shape = _dense_shape(value)
    leaves: List[Any] = []
    try:
        _flatten(value, 0, shape, leaves)
    except RecursionError:
        raise errors.invalid_argument('JSON value nested too deeply') from None
    return _convert(leaves, dtype).reshape(shape)


# --------------------------------------------------------------- requests


def predict_inputs(
    doc: Dict[str, Any], specs: Mapping[str, servable_lib.TensorSpec]
) -> Tuple[Dict[str, np.ndarray], str]:
    """Decodes `instances` or `inputs` into arrays; returns (arrays, format)."""
    if not specs:
        raise errors.invalid_argument('Failed to get input map for signature')
    has_instances, has_inputs = 'instances' in doc, 'inputs' in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {_dump(doc)} Not formatted correctly expecting only "
            f"one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc['instances']
        if not isinstance(instances, list):
            raise errors.invalid_argument(
                f"JSON Value: {_dump(doc)} Excepting 'instances' to be an "
                f"list/array")
        if not instances:
            raise errors.invalid_argument(
                f"JSON Value: {_dump(doc)} No values in 'instances' array")
        try:
            return _from_instances(instances, specs), ROW
        except RecursionError:
            raise errors.invalid_argument(
                "'instances' nested too deeply") from None
    if has_inputs:
        return _from_inputs(doc['inputs'], specs), COLUMNAR
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


def _numbers_at_once(instances: List[Any], dtype: int) -> Optional[np.ndarray]:
    """`instances` as one array when all of it is numbers that fit `dtype`.

    None otherwise: the element-by-element path then finds and words the
    fault. Its result is the same; this is ~20x faster on large requests.
    """
    if dtype not in _FLOAT_MAX and dtype not in _INT_RANGES:
        return None
    try:
        grid = np.array(instances, dtype=object)
    except ValueError:
        return None
    kinds = set(map(type, grid.flat))
    try:
        if dtype in _FLOAT_MAX and kinds and kinds <= {int, float}:
            ints = [v for v in grid.flat if type(v) is int]
            if ints and max(map(abs, ints)) > _FLOAT_MAX_INT[dtype]:
                return None
            values = grid.astype(np.float64)
            finite = values[np.isfinite(values)]
            if finite.size and np.abs(finite).max() > _FLOAT_MAX[dtype]:
                return None
            return values.astype(tensors.numpy_dtype(dtype))
        if dtype in _INT_RANGES and kinds == {int}:
            low, high = _INT_RANGES[dtype]
            if min(grid.flat) < low or max(grid.flat) > high:
                return None
            wide = np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64
            return grid.astype(wide).astype(tensors.numpy_dtype(dtype))
    except OverflowError:  # An int too large for a float64.
        return None
    return None


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _from_instances(
        instances: List[Any],
        specs: Mapping[str, servable_lib.TensorSpec]) -> Dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise errors.invalid_argument(
            'instances is a plain list, but expecting list of objects as '
            'multiple input tensors required as per tensorinfo_map')
    objects = _is_element_object(instances[0])
    names = sorted(specs)
    if not objects and len(names) == 1:
        array = _numbers_at_once(instances, specs[names[0]].dtype)
        if array is not None:
            return {names[0]: array}
    parts: Dict[str, List[np.ndarray]] = {}
    shapes: Dict[str, List[int]] = {}

    def add(item: Any, name: str) -> None:
        if name not in specs:
            raise errors.invalid_argument(
                f'JSON object: does not have named input: {name}')
        shape = _dense_shape(item)
        values: List[Any] = []
        _flatten(item, 0, shape, values)
        array = _convert(values, specs[name].dtype)
        if name not in shapes:
            shapes[name] = shape
            parts[name] = [array]
            return
        expected = shapes[name]
        expected_size = int(np.prod(expected)) if expected else 1
        if expected_size != len(values):
            raise errors.invalid_argument(
                f'Expecting tensor size: {expected_size} but got: '
                f'{len(values)}')
        if expected != shape:
            raise errors.invalid_argument(
                f'Expecting shape [{",".join(map(str, expected))}] but got: '
                f'[{",".join(map(str, shape))}]')
        parts[name].append(array)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise errors.invalid_argument(
                    f'Expecting object but got list at item {index} of input '
                    f'list')
            for name, item in element.items():
                try:
                    add(item, name)
                except errors.ServingError as e:
                    raise errors.invalid_argument(
                        f'Failed to process element: {index} key: {name} of '
                        f"'instances' list. Error: {_status_text(e)}") from None
            if sorted(element) != names:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f'JSON object: {_dump(element)} keys must be equal to: '
                    f'{",".join(names)}')
        else:
            if _is_element_object(element):
                raise errors.invalid_argument(
                    f'Expecting value/list but got object at item {index} of '
                    f'input list')
            try:
                add(element, names[0])
            except errors.ServingError as e:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f'Error: {_status_text(e)}') from None
    return {
        name: np.concatenate(arrays).reshape([len(instances)] + shapes[name])
        for name, arrays in parts.items()
    }


def _from_inputs(
        value: Any,
        specs: Mapping[str, servable_lib.TensorSpec]) -> Dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise errors.invalid_argument(
                'inputs is a plain value/list, but expecting an object as '
                'multiple input tensors required as per tensorinfo_map')
        name = next(iter(specs))
        return {name: to_tensor(value, specs[name].dtype)}
    arrays = {}
    for name in sorted(specs):
        if name not in value:
            raise errors.invalid_argument(
                f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = to_tensor(value[name], specs[name].dtype)
    return arrays


def _feature(name: str, content: Any) -> feature_pb2.Feature:
    """One tf.Example feature from a JSON value or list of values.

    The list kind (bytes, int64 or float) comes from the values, as
    json_tensor.cc's MakeExampleFromJsonObject does.
    """
    feature = feature_pb2.Feature()
    kind = None

    def need(expected: str) -> None:
        nonlocal kind
        if kind not in (None, expected):
            raise errors.invalid_argument(
                f'Unexpected element type in feature: {name} expecting type: '
                f'{kind}')
        kind = expected

    for value in content if isinstance(content, list) else [content]:
        if value is None or isinstance(value,
                                       list) or (isinstance(value, dict) and
                                                 not _is_b64(value)):
            raise errors.invalid_argument(
                f'Feature: {name} has element with unexpected JSON type: '
                f'{_json_type(value)}')
        if isinstance(value, bool):
            need('int64')
            feature.int64_list.value.append(int(value))
        elif isinstance(value, dict):
            need('bytes')
            feature.bytes_list.value.append(_b64decode(value))
        elif isinstance(value, str):
            need('bytes')
            feature.bytes_list.value.append(value.encode('utf-8'))
        elif isinstance(value, float):
            need('float')
            if (math.isfinite(value) and
                    abs(value) > _FLOAT_MAX[types_pb2.DT_FLOAT]):
                raise errors.invalid_argument(
                    f'Cannot convert JSON value: {_dump(value)} to float '
                    f'without loss of precision.')
            feature.float_list.value.append(value)
        else:
            need('int64')
            if value >= 2**63:
                raise errors.invalid_argument(
                    f'Feature: {name} has uint64 element. Only int64 is '
                    f'supported.')
            feature.int64_list.value.append(value)
    return feature


def _example(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f'Example must be JSON object but got JSON {_json_type(value)}')
    example = example_pb2.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature(name, content))
    return example


def fill_examples(doc: Dict[str, Any], request) -> None:
    """Fills a Classification/RegressionRequest's input from `examples`."""
    has_context = 'context' in doc
    if has_context:
        request.input.example_list_with_context.context.CopyFrom(
            _example(doc['context']))
    if 'examples' not in doc:
        raise errors.invalid_argument(
            f"JSON Value: {_dump(doc)} When method is classify, key "
            f"'examples' is expected and was not found")
    examples = doc['examples']
    if not isinstance(examples, list):
        raise errors.invalid_argument(
            f"JSON Value: {_dump(doc)} Expecting 'examples' value to be an "
            f"list/array")
    if not examples:
        raise errors.invalid_argument(
            f"JSON Value: {_dump(doc)} 'examples' value is an empty array")
    target = (request.input.example_list_with_context.examples
              if has_context else request.input.example_list.examples)
    for value in examples:
        target.add().CopyFrom(_example(value))


# -------------------------------------------------------------- responses

# Outputs this small are formatted value by value: numpy's calls cost more
# than the values (~10 us a response).
_SMALL_OUTPUT = 16

# How printf writes what JSON spells otherwise.
_NON_FINITE = {
    'nan': 'NaN',
    '-nan': 'NaN',
    'inf': 'Infinity',
    '-inf': '-Infinity'
}


def _json_number(token: str) -> str:
    """A printf token as JSON writes it: ".0" on whole numbers, NaN spelt."""
    if '.' in token or 'e' in token:
        return token
    return _NON_FINITE.get(token, token + '.0')


def _decimal_token(value: float, short_form: str, full_form: str,
                   np_type) -> str:
    """One value as `_decimal_tokens` writes it."""
    token = short_form % value
    if np_type(token) != np_type(value):  # NaN too: no matter.
        token = full_form % value
    return _json_number(token)


def _decimal_tokens(flat: np.ndarray, short: int, full: int,
                    np_type) -> List[str]:
    """Each number as the shorter of %.{short}g and %.{full}g that round-trips.

    As json_tensor.cc's WriteDecimal writes floats. Python's own formatting
    and parsing, not numpy's: numpy's vectorized string functions were 5x
    slower on large outputs (12 s for 3.8 million floats).
    """
    values = flat.tolist()
    short_form, full_form = f'%.{short}g', f'%.{full}g'
    if flat.size <= _SMALL_OUTPUT:
        return [
            _decimal_token(v, short_form, full_form, np_type) for v in values
        ]
    tokens = [short_form % v for v in values]
    back = np.array([float(t) for t in tokens]).astype(np_type)
    for i in np.flatnonzero(back != flat).tolist():
        tokens[i] = full_form % values[i]
    return [_json_number(t) for t in tokens]


def _tokens(array: np.ndarray, as_bytes: bool) -> List[str]:
    """Every element of `array` as a JSON token, in row-major order."""
    flat = array.reshape(-1)
    kind = array.dtype
    if kind == np.float32:
        return _decimal_tokens(flat, 6, 9, np.float32)
    if kind == np.float64:
        return _decimal_tokens(flat, 6, 17, np.float64)
    if kind == np.float16:
        return _decimal_tokens(flat.astype(np.float32), 6, 9, np.float32)
    if kind == np.bool_:
        return ['true' if v else 'false' for v in flat.tolist()]
    if kind.kind in ('i', 'u'):
        return [str(v) for v in flat.tolist()]
    if kind == np.dtype(object):
        if as_bytes:
            return [
                '{"b64": "%s"}' % base64.b64encode(v).decode('ascii')
                for v in flat.tolist()
            ]
        # What json.dumps(ensure_ascii=False) calls, without its set-up.
        return [
            json_encoder.encode_basestring(v.decode('utf-8', 'replace'))
            for v in flat.tolist()
        ]
    raise errors.invalid_argument(
        f'Failed to write JSON value for tensor type: '
        f'{tensors.dtype_name(tensors.dtype_of(array))}')


def _nest(tokens: List[str], shape: Tuple[int, ...]) -> str:
    if not shape:
        return tokens[0]
    if len(shape) == 1:
        return '[' + ', '.join(tokens) + ']'
    step = len(tokens) // shape[0] if shape[0] else 0
    return '[' + ', '.join(
        _nest(tokens[i * step:(i + 1) * step], shape[1:])
        for i in range(shape[0])) + ']'


def _row_texts(tokens: List[str], shape: Tuple[int, ...]) -> List[str]:
    """The JSON text of each batch element of a [batch, ...] tensor."""
    batch, inner = shape[0], shape[1:]
    if not inner:
        return tokens
    step = len(tokens) // batch if batch else 0
    if len(inner) == 1 and step:  # The common case, without recursion.
        return [
            '[' + ', '.join(tokens[i:i + step]) + ']'
            for i in range(0, len(tokens), step)
        ]
    return [_nest(tokens[i * step:(i + 1) * step], inner) for i in range(batch)]


def predict_response(outputs: Dict[str, np.ndarray], fmt: str) -> str:
    """A Predict response body: `predictions` for row requests, else `outputs`.

    As json_tensor.cc's MakeJsonFromTensors writes it.
    """
    if not outputs:
        raise errors.invalid_argument('Cannot convert empty tensor map to JSON')
    names = sorted(outputs)
    tokens = {n: _tokens(outputs[n], n.endswith(_BYTES_SUFFIX)) for n in names}
    if fmt == COLUMNAR:
        if len(names) == 1:
            body = _nest(tokens[names[0]], outputs[names[0]].shape)
        else:
            body = '{' + ', '.join(
                f'{json.dumps(n)}: {_nest(tokens[n], outputs[n].shape)}'
                for n in names) + '}'
        return '{"outputs": ' + body + '}'
    batch = -1
    for name in names:
        shape = outputs[name].shape
        if not shape:
            raise errors.invalid_argument(
                f'Tensor name: {name} has no shape information ')
        if batch >= 0 and shape[0] != batch:
            raise errors.invalid_argument(
                f'Tensor name: {name} has inconsistent batch size: {shape[0]} '
                f'expecting: {batch}')
        batch = shape[0]
    texts = [_row_texts(tokens[n], outputs[n].shape) for n in names]
    if len(names) == 1:
        rows = texts[0]
    else:
        keys = [json.dumps(n) + ': ' for n in names]
        rows = [
            '{' + ', '.join(k + t
                            for k, t in zip(keys, parts)) + '}'
            for parts in zip(*texts)
        ]
    return '{"predictions": [' + ', '.join(rows) + ']}'


def classify_response(result) -> str:
    """A Classify response body: `results`, [label, score] pairs per example.

    As json_tensor.cc's MakeJsonFromClassificationResult writes it.
    """
    if not result.classifications:
        raise errors.invalid_argument(
            'Cannot convert empty ClassificationResults to JSON')
    scores = np.array(
        [c.score for group in result.classifications for c in group.classes],
        dtype=np.float32)
    score_tokens = iter(_tokens(scores, False) if scores.size else [])
    groups = []
    for group in result.classifications:
        pairs = [
            f'[{json.dumps(c.label, ensure_ascii=False)}, '
            f'{next(score_tokens)}]' for c in group.classes
        ]
        groups.append('[' + ', '.join(pairs) + ']')
    return '{"results": [' + ', '.join(groups) + ']}'


def regress_response(result) -> str:
    """A Regress response body: `results`, one value per example.

    As json_tensor.cc's MakeJsonFromRegressionResult writes it.
    """
    if not result.regressions:
        raise errors.invalid_argument(
            'Cannot convert empty RegressionResults to JSON')
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return '{"results": [' + ', '.join(_tokens(values, False)) + ']}'


def error_body(message: str) -> str:
    """A REST error body: `{"error": message}`."""
    return json.dumps({'error': message}, ensure_ascii=False)
