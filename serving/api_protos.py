"""TF Serving's API messages for clients, without importing TensorFlow.

The `tensorflow_serving.apis` modules import `tensorflow.core.framework`,
which runs `tensorflow/__init__.py` (15-20 s). The messages themselves are
plain protos: this module reads each generated `_pb2.py` file's serialized
FileDescriptorProto (without running the file), adds it with its
dependencies to a private descriptor pool, and makes the message classes
from there. Same names, fields and wire format as the real modules; the
classes are distinct from TensorFlow's, so build a request with one set and
send it with the same set (serialized bytes are interchangeable).
"""

import ast
import functools
import importlib
import importlib.util
import os
import sys
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

_POOL = descriptor_pool.DescriptorPool()
_FACTORY = message_factory.MessageFactory(_POOL)
_ADDED = set()


def _generated_file(proto: str) -> str:
    """The `_pb2.py` file generated for `proto` (a .proto path)."""
    module = proto[:-len('.proto')] + '_pb2.py'
    top, _, rest = module.partition('/')
    # TensorFlow's wheel carries the tsl/ and xla/ protos inside tensorflow/.
    for package, path in ((top, rest), ('tensorflow', module)):
        spec = importlib.util.find_spec(package)  # runs no package code
        if spec is not None and spec.submodule_search_locations:
            candidate = os.path.join(
                list(spec.submodule_search_locations)[0], path)
            if os.path.isfile(candidate):
                return candidate
    raise ImportError(f'no generated module for {proto}')


def _serialized_descriptor(proto: str) -> bytes:
    if proto.startswith('google/protobuf/'):
        # Protobuf's own files: importing them is cheap.
        module = importlib.import_module(
            proto[:-len('.proto')].replace('/', '.') + '_pb2')
        return module.DESCRIPTOR.serialized_pb
    path = _generated_file(proto)
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and
                getattr(node.func, 'attr', '') == 'AddSerializedFile'):
            return ast.literal_eval(node.args[0])
    raise ImportError(f'{path}: no serialized descriptor')


def _add(proto: str) -> None:
    if proto in _ADDED:
        return
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(
        _serialized_descriptor(proto))
    for dependency in file_proto.dependency:
        _add(dependency)
    _POOL.Add(file_proto)
    _ADDED.add(proto)


@functools.lru_cache(maxsize=None)
def message(proto: str, name: str) -> Any:
    """The message class `name` (full name) declared in file `proto`.

    Example: message('tensorflow_serving/apis/predict.proto',
    'tensorflow.serving.PredictRequest').
    """
    if 'tensorflow' in sys.modules:
        # TensorFlow is loaded anyway: its own classes, so that requests
        # built here pass isinstance checks of code written against them.
        module = importlib.import_module(
            proto[:-len('.proto')].replace('/', '.') + '_pb2')
        return getattr(module, name.rsplit('.', 1)[-1])
    _add(proto)
    return _FACTORY.GetPrototype(_POOL.FindMessageTypeByName(name))


def enum_name(message_class: Any, enum: str, number: int) -> str:
    """The name of value `number` of enum `enum` nested in `message_class`."""
    values = message_class.DESCRIPTOR.enum_types_by_name[enum].values_by_number
    return values[number].name if number in values else str(number)


def enum_values(proto: str, name: str) -> dict:
    """{value name: number} of the top-level enum `name` in file `proto`."""
    _add(proto)
    return {
        value.name: value.number
        for value in _POOL.FindEnumTypeByName(name).values
    }
