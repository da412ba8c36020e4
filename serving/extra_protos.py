"""TF Serving config protos that the tensorflow-serving-api wheel leaves out.

The pip package ships the API and `model_server_config` protos but not
`session_bundle_config.proto` (BatchingParameters) or
`monitoring_config.proto` (MonitoringConfig), which `--batching_parameters_file`
and `--monitoring_config_file` are written in. This module declares the same
messages (same package, field names and numbers as TF Serving's .proto files)
in a private descriptor pool, so their text format parses exactly as the real
server parses it. No TensorFlow import.
"""

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import wrappers_pb2

_FieldProto = descriptor_pb2.FieldDescriptorProto

_INT64_VALUE = '.google.protobuf.Int64Value'
_STRING_VALUE = '.google.protobuf.StringValue'

# (name, number, type, label, type_name) per field.
_BATCHING_FIELDS = (
    ('max_batch_size', 1, _FieldProto.TYPE_MESSAGE, _FieldProto.LABEL_OPTIONAL,
     _INT64_VALUE),
    ('batch_timeout_micros', 2, _FieldProto.TYPE_MESSAGE,
     _FieldProto.LABEL_OPTIONAL, _INT64_VALUE),
    ('max_enqueued_batches', 3, _FieldProto.TYPE_MESSAGE,
     _FieldProto.LABEL_OPTIONAL, _INT64_VALUE),
    ('num_batch_threads', 4, _FieldProto.TYPE_MESSAGE,
     _FieldProto.LABEL_OPTIONAL, _INT64_VALUE),
    ('thread_pool_name', 5, _FieldProto.TYPE_MESSAGE,
     _FieldProto.LABEL_OPTIONAL, _STRING_VALUE),
    ('allowed_batch_sizes', 6, _FieldProto.TYPE_INT64,
     _FieldProto.LABEL_REPEATED, None),
    ('pad_variable_length_inputs', 7, _FieldProto.TYPE_BOOL,
     _FieldProto.LABEL_OPTIONAL, None),
)

_PROMETHEUS_FIELDS = (
    ('enable', 1, _FieldProto.TYPE_BOOL, _FieldProto.LABEL_OPTIONAL, None),
    ('path', 2, _FieldProto.TYPE_STRING, _FieldProto.LABEL_OPTIONAL, None),
)

_MONITORING_FIELDS = (('prometheus_config', 1, _FieldProto.TYPE_MESSAGE,
                       _FieldProto.LABEL_OPTIONAL,
                       '.tensorflow.serving.PrometheusConfig'),)


def _add_message(file_proto, name, fields):
    message = file_proto.message_type.add(name=name)
    for field_name, number, field_type, label, type_name in fields:
        field = message.field.add(name=field_name,
                                  number=number,
                                  type=field_type,
                                  label=label)
        if type_name:
            field.type_name = type_name


def _build():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    batching = descriptor_pb2.FileDescriptorProto(
        name=
        'tensorflow_serving/servables/tensorflow/session_bundle_config.proto',
        package='tensorflow.serving',
        syntax='proto3',
        dependency=['google/protobuf/wrappers.proto'])
    _add_message(batching, 'BatchingParameters', _BATCHING_FIELDS)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name='tensorflow_serving/config/monitoring_config.proto',
        package='tensorflow.serving',
        syntax='proto3')
    _add_message(monitoring, 'PrometheusConfig', _PROMETHEUS_FIELDS)
    _add_message(monitoring, 'MonitoringConfig', _MONITORING_FIELDS)
    pool.Add(monitoring)

    factory = message_factory.MessageFactory(pool)
    return (
        factory.GetPrototype(
            pool.FindMessageTypeByName(
                'tensorflow.serving.BatchingParameters')),
        factory.GetPrototype(
            pool.FindMessageTypeByName('tensorflow.serving.PrometheusConfig')),
        factory.GetPrototype(
            pool.FindMessageTypeByName('tensorflow.serving.MonitoringConfig')),
    )


BatchingParameters, PrometheusConfig, MonitoringConfig = _build()
