"""TensorProto <-> numpy conversion on the request path.

Inbound tensors follow tensorflow::Tensor::FromProto: `tensor_content` must
hold exactly the tensor's bytes; a typed `*_val` field may hold fewer values
than the shape has elements, in which case the last value repeats (no values
means zeros). Outbound tensors are written as TF Serving writes them
(Tensor::AsProtoField): values in the typed field, never `tensor_content`,
so clients reading `float_val` directly keep working.
"""

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2

from serving import errors

# A typed field shorter than its shape is expanded by repeating its last
# value; refuse to expand a few bytes of request into more than this.
_MAX_EXPANDED_BYTES = 1 << 30

# DataTypeString() names, used in error messages as TF Serving words them.
_DTYPE_NAMES = {
    types_pb2.DT_FLOAT: 'float', types_pb2.DT_DOUBLE: 'double',
    types_pb2.DT_INT32: 'int32', types_pb2.DT_UINT8: 'uint8',
    types_pb2.DT_INT16: 'int16', types_pb2.DT_INT8: 'int8',
    types_pb2.DT_STRING: 'string', types_pb2.DT_COMPLEX64: 'complex64',
    types_pb2.DT_INT64: 'int64', types_pb2.DT_BOOL: 'bool',
    types_pb2.DT_BFLOAT16: 'bfloat16', types_pb2.DT_UINT16: 'uint16',
    types_pb2.DT_COMPLEX128: 'complex128', types_pb2.DT_HALF: 'half',
    types_pb2.DT_UINT32: 'uint32', types_pb2.DT_UINT64: 'uint64',
}

# dtype enum -> (typed field, numpy dtype of that field's values).
_FIELDS = {
    types_pb2.DT_FLOAT: ('float_val', np.float32),
    types_pb2.DT_DOUBLE: ('double_val', np.float64),
    types_pb2.DT_INT32: ('int_val', np.int32),
    types_pb2.DT_UINT8: ('int_val', np.int32),
    types_pb2.DT_INT16: ('int_val', np.int32),
    types_pb2.DT_INT8: ('int_val', np.int32),
    types_pb2.DT_UINT16: ('int_val', np.int32),
    types_pb2.DT_INT64: ('int64_val', np.int64),
    types_pb2.DT_BOOL: ('bool_val', np.bool_),
    types_pb2.DT_UINT32: ('uint32_val', np.uint32),
    types_pb2.DT_UINT64: ('uint64_val', np.uint64),
    types_pb2.DT_HALF: ('half_val', np.uint16),
}

_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_STRING: np.dtype(object),
}


def dtype_name(dtype: int) -> str:
    """TF's DataTypeString(dtype), e.g. 'float' for DT_FLOAT."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = tf.dtypes.as_dtype(dtype).name
    return name


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype tensors of DataType `dtype` are held in."""
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        np_dtype = np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
    return np_dtype


def dtype_of(array: np.ndarray) -> int:
    """DataType enum of a numpy array (object arrays are strings)."""
    if array.dtype == object or array.dtype.kind in ('S', 'U'):
        return types_pb2.DT_STRING
    return tf.dtypes.as_dtype(array.dtype).as_datatype_enum


def _fill(values: np.ndarray, count: int) -> np.ndarray:
    """Tensor::FromProto's rule for typed fields shorter than the shape."""
    have = len(values)
    if have == count:
        return values
    if have == 0:
        return np.zeros(count, dtype=values.dtype)
    if have > count:
        return values[:count]
    return np.concatenate([values, np.full(count - have, values[-1],
                                           dtype=values.dtype)])


def to_ndarray(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
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
        if dtype == types_pb2.DT_STRING:
            if proto.tensor_content:
                raise ValueError('string tensors have no tensor_content')
            values = np.empty(len(proto.string_val), dtype=object)
            values[:] = list(proto.string_val)
            if len(values) != count:
                values = _fill(values, count) if len(values) else np.full(
                    count, b'', dtype=object)
            return values.reshape(shape)
        np_dtype = _NUMPY_DTYPES.get(dtype)
        if np_dtype is None:
            return _to_ndarray_slow(proto, shape)
        if proto.tensor_content:
            content = proto.tensor_content
            if len(content) != count * np_dtype.itemsize:
                raise ValueError('tensor_content size mismatch')
            return np.frombuffer(content, dtype=np_dtype).reshape(shape)
        field, field_dtype = _FIELDS[dtype]
        values = _fill(np.array(getattr(proto, field), dtype=field_dtype),
                       count)
        if dtype == types_pb2.DT_HALF:
            return values.astype(np.uint16).view(np.float16).reshape(shape)
        return values.astype(np_dtype, copy=False).reshape(shape)
    except errors.ServingError:
        raise
    except Exception:  # pylint: disable=broad-except
        raise errors.invalid_argument(
            f'tensor parsing error: {alias}') from None


def _value_count(proto: tensor_pb2.TensorProto) -> int:
    """How many values a TensorProto actually carries (a lower bound)."""
    if proto.tensor_content:
        return len(proto.tensor_content)
    return max((len(getattr(proto, f)) for f, _ in _FIELDS.values()),
               default=0) + len(proto.string_val)


def _to_ndarray_slow(proto: tensor_pb2.TensorProto,
                     shape: Tuple[int, ...]) -> np.ndarray:
    if proto.dtype in (types_pb2.DT_INVALID, types_pb2.DT_RESOURCE,
                       types_pb2.DT_VARIANT):
        raise ValueError('unsupported dtype')
    return tf.make_ndarray(proto).reshape(shape)


def _write_strings(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    proto.string_val.extend(array.ravel().tolist())


def _writer(field: str, cast: Optional[type] = None
            ) -> Callable[[np.ndarray, tensor_pb2.TensorProto], None]:
    def write(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
        flat = array.ravel()
        if cast is not None:
            flat = flat.astype(cast)
        getattr(proto, field).extend(flat.tolist())
    return write


def _write_half(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    proto.half_val.extend(
        array.astype(np.float16).ravel().view(np.uint16).tolist())


_WRITERS = {
    types_pb2.DT_FLOAT: _writer('float_val'),
    types_pb2.DT_DOUBLE: _writer('double_val'),
    types_pb2.DT_INT32: _writer('int_val'),
    types_pb2.DT_UINT8: _writer('int_val', np.int32),
    types_pb2.DT_INT16: _writer('int_val', np.int32),
    types_pb2.DT_INT8: _writer('int_val', np.int32),
    types_pb2.DT_UINT16: _writer('int_val', np.int32),
    types_pb2.DT_INT64: _writer('int64_val'),
    types_pb2.DT_BOOL: _writer('bool_val'),
    types_pb2.DT_UINT32: _writer('uint32_val'),
    types_pb2.DT_UINT64: _writer('uint64_val'),
    types_pb2.DT_HALF: _write_half,
    types_pb2.DT_STRING: _write_strings,
}


def fill_proto(array: np.ndarray, proto: tensor_pb2.TensorProto,
               dtype: Optional[int] = None) -> None:
    """Writes `array` into `proto` as Tensor::AsProtoField does."""
    if dtype is None:
        dtype = dtype_of(array)
    writer = _WRITERS.get(dtype)
    if writer is None:
        # Exotic dtypes (complex, bfloat16): TF's own encoder is good enough.
        proto.CopyFrom(tf.make_tensor_proto(
            array, dtype=tf.dtypes.as_dtype(dtype)))
        return
    proto.dtype = dtype
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    writer(array, proto)


def to_proto(array: np.ndarray, dtype: Optional[int] = None
             ) -> tensor_pb2.TensorProto:
    """Returns `array` as a TensorProto in TF Serving's response encoding."""
    proto = tensor_pb2.TensorProto()
    fill_proto(array, proto, dtype)
    return proto


def shape_tuple(shape_proto) -> Optional[Tuple[int, ...]]:
    """A TensorShapeProto as a tuple (-1 for unknown dims), None if unknown rank."""
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


def arrays_from_protos(protos: Dict[str, tensor_pb2.TensorProto]
                       ) -> Dict[str, np.ndarray]:
    """Decodes a map of request TensorProtos."""
    return {alias: to_ndarray(proto, alias) for alias, proto in protos.items()}
