"""Reading and checking the server's text-proto config files (no TensorFlow).

`--model_config_file` holds a ModelServerConfig, `--batching_parameters_file`
a BatchingParameters and `--monitoring_config_file` a MonitoringConfig, all in
protobuf text format, as tensorflow_model_server reads them.
"""

import dataclasses
import logging
import os
from typing import List, Optional, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving import extra_protos

PLATFORM = 'tensorflow'
DEFAULT_PROMETHEUS_PATH = '/monitoring/prometheus/metrics'


def read_model_server_config(
        path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ModelServerConfig text proto file."""
    config = model_server_config_pb2.ModelServerConfig()
    with open(path, encoding='utf-8') as f:
        text_format.Parse(f.read(), config)
    return config


def single_model_config(
        name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config --model_name/--model_base_path stand for."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = PLATFORM
    return config


def validate_model_server_config(
        config: model_server_config_pb2.ModelServerConfig) -> None:
    """Checks a config the way ServerCore::ReloadConfig does.

    Raises:
      errors.ServingError: with TF Serving's code and message.
    """
    kind = config.WhichOneof('config')
    if kind is None:
        return
    if kind != 'model_config_list':
        raise errors.invalid_argument(
            'ServerModelConfig type not supported by HandleReloadConfigRequest.'
            ' Only ModelConfigList is currently supported')
    seen = set()
    for model in config.model_config_list.config:
        if model.name in seen:
            raise errors.invalid_argument(
                f'Illegal to list model {model.name} multiple times in config '
                f'list')
        seen.add(model.name)
        if not os.path.isabs(model.base_path) and '://' not in model.base_path:
            raise errors.invalid_argument(
                f'Expected model {model.name} to have an absolute path or URI; '
                f'got base_path()={model.base_path}')
        if '://' in model.base_path:
            raise errors.invalid_argument(
                f'Model {model.name}: only local file system base paths are '
                f'supported by this server, got {model.base_path}')
        if model.model_type:
            if model.model_platform:
                raise errors.failed_precondition(
                    'Illegal setting both ModelServerConfig::model_type '
                    '(deprecated) and ModelServerConfig::model_platform.')
            continue
        if not model.model_platform:
            raise errors.failed_precondition(
                'Illegal setting neither ModelServerConfig::model_type '
                '(deprecated) nor ModelServerConfig::model_platform.')
        if model.model_platform != PLATFORM:
            raise errors.failed_precondition(
                f'Model {model.name} requested unsupported platform '
                f'{model.model_platform}; only "{PLATFORM}" is served')


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults filled in."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: Tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False


def parse_batching_parameters(text: str,
                              source: str = '<text>') -> BatchingOptions:
    """Parses a BatchingParameters text proto and checks it.

    Unknown fields (newer TF Serving releases add some) are ignored with a
    warning rather than failing the server.
    """
    params = extra_protos.BatchingParameters()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as e:
        params = extra_protos.BatchingParameters()
        try:
            text_format.Parse(text, params, allow_unknown_field=True)
        except text_format.ParseError:
            raise errors.invalid_argument(
                f'Invalid BatchingParameters in {source}: {e}') from None
        logging.warning(
            'Ignoring unsupported BatchingParameters fields in '
            '%s: %s', source, e)
    defaults = BatchingOptions()

    def get(field: str, default: int) -> int:
        return (getattr(params, field).value
                if params.HasField(field) else default)

    options = BatchingOptions(
        max_batch_size=get('max_batch_size', defaults.max_batch_size),
        batch_timeout_micros=get('batch_timeout_micros',
                                 defaults.batch_timeout_micros),
        max_enqueued_batches=get('max_enqueued_batches',
                                 defaults.max_enqueued_batches),
        num_batch_threads=get('num_batch_threads', defaults.num_batch_threads),
        allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        pad_variable_length_inputs=params.pad_variable_length_inputs)
    _check_batching(options)
    return options


def _check_batching(options: BatchingOptions) -> None:
    if options.max_batch_size <= 0:
        raise errors.invalid_argument('max_batch_size must be positive')
    if options.num_batch_threads <= 0:
        raise errors.invalid_argument('num_batch_threads must be positive')
    if options.max_enqueued_batches <= 0:
        raise errors.invalid_argument('max_enqueued_batches must be positive')
    if options.batch_timeout_micros < 0:
        raise errors.invalid_argument('batch_timeout_micros must be >= 0')
    sizes: List[int] = list(options.allowed_batch_sizes)
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] <= 0:
            raise errors.invalid_argument(
                'allowed_batch_sizes entries must be monotonically increasing')
        if sizes[-1] != options.max_batch_size:
            raise errors.invalid_argument(
                'Last entry in allowed_batch_sizes must match max_batch_size; '
                f'last entry was {sizes[-1]}; expected '
                f'{options.max_batch_size}')


def read_batching_parameters(path: Optional[str]) -> BatchingOptions:
    """Reads --batching_parameters_file; no file means TF Serving's defaults."""
    if not path:
        return BatchingOptions()
    with open(path, encoding='utf-8') as f:
        return parse_batching_parameters(f.read(), path)


def read_monitoring_path(path: Optional[str]) -> Optional[str]:
    """The Prometheus path enabled by --monitoring_config_file, if any."""
    if not path:
        return None
    config = extra_protos.MonitoringConfig()
    with open(path, encoding='utf-8') as f:
        text_format.Parse(f.read(), config)
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_PROMETHEUS_PATH
