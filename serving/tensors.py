"""TensorProto <-> numpy conversion on the request path.

Inbound tensors follow tensorflow::Tensor::FromProto: `tensor_content` must
hold exactly the tensor's bytes; a typed `*_val` field may hold fewer values
than the shape has elements, in which case the last value repeats (no values
means zeros). Outbound tensors are written as TF Serving writes them
(Tensor::AsProtoField): values in the typed field, never `tensor_content`,
so clients reading `float_val` directly keep working.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

from serving import api_protos
from serving import errors

# TensorFlow is imported only for the DataTypes this module does not encode
# itself: the client decodes and encodes tensors without it.
_DataType = api_protos.enum_values('tensorflow/core/framework/types.proto',
                                   'tensorflow.DataType')

# A typed field shorter than its shape is expanded by repeating its last
# value; refuse to expand a few bytes of request into more than this.
_MAX_EXPANDED_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class _Encoding:
    """How tensors of one DataType are named, held and written in a proto.

    Attributes:
        name: DataTypeString(), as TF Serving's messages word it.
        numpy: The numpy dtype such tensors are held in.
        field: The TensorProto field that holds their values.
        field_numpy: The numpy dtype of that field's values.
    """

    name: str
    numpy: np.dtype
    field: str
    field_numpy: np.dtype


def _encoding(name, numpy, field, field_numpy=None) -> _Encoding:
    return _Encoding(name, np.dtype(numpy), field, np.dtype(field_numpy or
                                                            numpy))


# The DataTypes TF Serving's requests carry; others (complex, bfloat16) go
# through TensorFlow's own, slower codec.
_ENCODINGS = {
    _DataType['DT_FLOAT']:
        _encoding('float', np.float32, 'float_val'),
    _DataType['DT_DOUBLE']:
        _encoding('double', np.float64, 'double_val'),
    _DataType['DT_INT32']:
        _encoding('int32', np.int32, 'int_val'),
    _DataType['DT_UINT8']:
        _encoding('uint8', np.uint8, 'int_val', np.int32),
    _DataType['DT_INT16']:
        _encoding('int16', np.int16, 'int_val', np.int32),
    _DataType['DT_INT8']:
        _encoding('int8', np.int8, 'int_val', np.int32),
    _DataType['DT_UINT16']:
        _encoding('uint16', np.uint16, 'int_val', np.int32),
    _DataType['DT_INT64']:
        _encoding('int64', np.int64, 'int64_val'),
    _DataType['DT_BOOL']:
        _encoding('bool', np.bool_, 'bool_val'),
    _DataType['DT_UINT32']:
        _encoding('uint32', np.uint32, 'uint32_val'),
    _DataType['DT_UINT64']:
        _encoding('uint64', np.uint64, 'uint64_val'),
    # half_val holds each float16's bits as an integer.
    _DataType['DT_HALF']:
        _encoding('half', np.float16, 'half_val', np.uint16),
    _DataType['DT_STRING']:
        _encoding('string', object, 'string_val'),
}


def _tf() -> Any:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf


def dtype_name(dtype: int) -> str:
    """TF's DataTypeString(dtype), e.g. 'float' for DT_FLOAT."""
    encoding = _ENCODINGS.get(dtype)
    return encoding.name if encoding else _tf().dtypes.as_dtype(dtype).name


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype tensors of DataType `dtype` are held in."""
    encoding = _ENCODINGS.get(dtype)
    if encoding is None:
        return np.dtype(_tf().dtypes.as_dtype(dtype).as_numpy_dtype)
    return encoding.numpy


def dtype_of(array: np.ndarray) -> int:
    """DataType enum of a numpy array (object arrays are strings)."""
    if array.dtype == object or array.dtype.kind in ('S', 'U'):
        return _DataType['DT_STRING']
    for dtype, encoding in _ENCODINGS.items():
        if encoding.numpy == array.dtype:
            return dtype
    return _tf().dtypes.as_dtype(array.dtype).as_datatype_enum


def _fill(values: np.ndarray, count: int) -> np.ndarray:
    """Tensor::FromProto's rule for typed fields shorter than the shape."""
    have = len(values)
    if have == count:
        return values
    if have == 0:
        return np.zeros(count, dtype=values.dtype)
    if have > count:
        return values[:count]
    return np.concatenate(
        [values, np.full(count - have, values[-1], dtype=values.dtype)])


def to_ndarray(proto: Any, alias: str) -> np.ndarray:
    """Decodes a request TensorProto.

    Raises:
      errors.ServingError: INVALID_ARGUMENT "tensor parsing error: <alias>"
        when the proto does not describe a valid tensor, as TF Serving does.
    """
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise errors.invalid_argument(f'tensor parsing error: {alias}')
    shape = tuple(d.size for d in shape_proto.dim)
    if any(d < 0 for d in shape):
        raise errors.invalid_argument(f'tensor parsing error: {alias}')
    count = 1
    for size in shape:
        count *= size
    if count * 8 > _MAX_EXPANDED_BYTES and count > _value_count(proto):
        raise errors.invalid_argument(f'tensor parsing error: {alias}')
    dtype = proto.dtype
    try:
        if dtype == _DataType['DT_STRING']:
            if proto.tensor_content:
                raise ValueError('string tensors have no tensor_content')
            values = np.empty(len(proto.string_val), dtype=object)
            values[:] = list(proto.string_val)
            if len(values) != count:
                values = _fill(values, count) if len(values) else np.full(
                    count, b'', dtype=object)
            return values.reshape(shape)
        encoding = _ENCODINGS.get(dtype)
        if encoding is None:
            return _to_ndarray_slow(proto, shape)
        if proto.tensor_content:
            content = proto.tensor_content
            if len(content) != count * encoding.numpy.itemsize:
                raise ValueError('tensor_content size mismatch')
            return np.frombuffer(content, dtype=encoding.numpy).reshape(shape)
        values = _fill(
            np.array(getattr(proto, encoding.field),
                     dtype=encoding.field_numpy), count)
        if dtype == _DataType['DT_HALF']:
            return values.view(np.float16).reshape(shape)
        return values.astype(encoding.numpy, copy=False).reshape(shape)
    except errors.ServingError:
        raise
    except Exception:  # pylint: disable=broad-except
        raise errors.invalid_argument(
            f'tensor parsing error: {alias}') from None


def _value_count(proto: Any) -> int:
    """How many values a TensorProto actually carries (a lower bound)."""
    if proto.tensor_content:
        return len(proto.tensor_content)
    return max(
        len(getattr(proto, encoding.field)) for encoding in _ENCODINGS.values())


def _to_ndarray_slow(proto: Any, shape: Tuple[int, ...]) -> np.ndarray:
    if proto.dtype in (_DataType['DT_INVALID'], _DataType['DT_RESOURCE'],
                       _DataType['DT_VARIANT']):
        raise ValueError('unsupported dtype')
    return _tf().make_ndarray(proto).reshape(shape)


def fill_proto(array: np.ndarray,
               proto: Any,
               dtype: Optional[int] = None) -> None:
    """Writes `array` into `proto` as Tensor::AsProtoField does."""
    if dtype is None:
        dtype = dtype_of(array)
    encoding = _ENCODINGS.get(dtype)
    if encoding is None:
        tf = _tf()
        # Through bytes: `proto` may be TensorFlow's class or api_protos'.
        proto.ParseFromString(
            tf.make_tensor_proto(
                array, dtype=tf.dtypes.as_dtype(dtype)).SerializeToString())
        return
    proto.dtype = dtype
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    flat = array.ravel()
    if dtype == _DataType['DT_HALF']:
        flat = flat.astype(np.float16, copy=False).view(np.uint16)
    else:
        flat = flat.astype(encoding.field_numpy, copy=False)
    getattr(proto, encoding.field).extend(flat.tolist())


def to_proto(array: np.ndarray, dtype: Optional[int] = None) -> Any:
    """Returns `array` as a TensorProto in TF Serving's response encoding."""
    proto = api_protos.message('tensorflow/core/framework/tensor.proto',
                               'tensorflow.TensorProto')()
    fill_proto(array, proto, dtype)
    return proto


def shape_tuple(shape_proto) -> Optional[Tuple[int, ...]]:
    """A TensorShapeProto as a tuple (-1: unknown dim), None if unknown rank."""
    if shape_proto.unknown_rank:
        return None
    return tuple(d.size for d in shape_proto.dim)


def shape_string(shape: Optional[Tuple[int, ...]]) -> str:
    """Formats a shape like TensorShape::DebugString ('[?,4]')."""
    if shape is None:
        return '<unknown>'
    return '[' + ','.join('?' if d < 0 else str(d) for d in shape) + ']'


def shapes_compatible(expected: Optional[Tuple[int, ...]],
                      actual: Tuple[int, ...]) -> bool:
    """Whether a concrete shape fits a signature shape with unknown dims."""
    if expected is None:
        return True
    if len(expected) != len(actual):
        return False
    return all(e < 0 or e == a for e, a in zip(expected, actual))


def arrays_from_protos(protos: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Decodes a map of request TensorProtos."""
    return {alias: to_ndarray(proto, alias) for alias, proto in protos.items()}
