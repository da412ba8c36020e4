"""Flags of `python -m serving serve`, named as tensorflow_model_server's.

Every TF Serving flag this server implements keeps its name, type, default
and meaning, and both `--flag=value` and `--flag value` are accepted (a bare
`--bool_flag` means true). Flags TF Serving has but that mean nothing here
(GPU, TPU, profiler knobs) are accepted and ignored so existing command lines
keep working; flags that would change behaviour we do not implement (TLS,
TFLite, platform configs) are rejected rather than silently ignored.

Additions that tensorflow_model_server does not have:
  --host                    address both ports bind to (default 127.0.0.1;
                            TF Serving binds 0.0.0.0, pass --host=0.0.0.0
                            for that).
  --version_settle_seconds  a new version directory is loaded only once none
                            of its files changed for this long (protects
                            against half-copied exports).
  --rest_api_max_body_bytes larger REST request bodies are answered 413
                            as soon as the headers say so, the rest read and
                            dropped (default 32 MiB, 0: no limit).
  --server_processes        serving processes sharing the gRPC and REST ports
                            (SO_REUSEPORT), each loading its own copy of the
                            models, under one supervising process (default
                            1; "auto": one a usable CPU). TF Serving serves
                            from one process and has no such flag.

Bounds TF Serving has a flag for keep its flag, but not always its default:
gRPC requests above 64 MiB are refused (RESOURCE_EXHAUSTED) unless
--grpc_channel_arguments=grpc.max_receive_message_length=N says otherwise;
--rest_api_num_threads threads run REST requests once their bodies are in
(connections, idle or slow, live on an event loop and hold none), and
--rest_api_timeout_in_ms closes idle connections and answers 408 to a
request body that does not arrive in time; --grpc_max_threads threads run
gRPC calls (received on an event loop of their own).
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

_CPUS = os.cpu_count() or 1

# name -> (type, default, help)
_FLAGS: Dict[str, Tuple[type, Any, str]] = {
    'port': (int, 8500, 'Port to listen on for gRPC API.'),
    'grpc_socket_path': (str, '', 'If non-empty, listen to a UNIX socket '
                         'for gRPC API on the given path.'),
    'rest_api_port': (int, 0, 'Port to listen on for HTTP/REST API. If set '
                      'to zero HTTP/REST API will not be exported.'),
    'rest_api_num_threads': (int, 4 * _CPUS, 'Number of threads for HTTP/REST '
                             'API processing.'),
    'rest_api_timeout_in_ms': (int, 30000, 'Timeout for HTTP/REST API calls.'),
    'enable_batching': (bool, False, 'enable batching'),
    'allow_version_labels_for_unavailable_models':
        (bool, False, 'If true, allows assigning unused version labels to '
         'models that are not available yet.'),
    'batching_parameters_file': (str, '', 'If non-empty, read an ascii '
                                 'BatchingParameters protobuf from the '
                                 'supplied file name.'),
    'enable_per_model_batching_parameters':
        (bool, False, 'Enables model specific batching params like batch '
         'sizes, timeouts, batching feature flags to be read from '
         '`batching_params.pbtxt` file inside model export dir.'),
    'model_config_file': (str, '', 'If non-empty, read an ascii '
                          'ModelServerConfig protobuf from the supplied file '
                          'name, and serve the models in that file.'),
    'model_config_file_poll_wait_seconds':
        (int, 0, 'Interval in seconds between each poll of the filesystem for '
         'model_config_file. If unset or set to zero, poll will be done '
         'exactly once and not periodically.'),
    'model_name': (str, 'default', 'name of model (ignored if '
                   '--model_config_file flag is set)'),
    'model_base_path': (str, '', 'path to export (ignored if '
                        '--model_config_file flag is set, otherwise '
                        'required)'),
    'num_load_threads': (int, 0, 'The number of threads in the thread-pool '
                         'used to load servables (loads run one at a time '
                         'here whatever the value).'),
    'num_unload_threads': (int, 0, 'The number of threads in the thread-pool '
                           'used to unload servables.'),
    'max_num_load_retries': (int, 5, 'maximum number of times it retries '
                             'loading a model after the first failure, '
                             'before giving up.'),
    'load_retry_interval_micros': (int, 60 * 1000 * 1000, 'The interval, in '
                                   'microseconds, between each servable load '
                                   'retry.'),
    'file_system_poll_wait_seconds':
        (int, 1, 'Interval in seconds between each poll of the filesystem for '
         'new model version. If set to zero poll will be exactly done once and '
         'not periodically. Setting this to negative value will disable '
         'polling entirely causing ModelServer to indefinitely wait for a new '
         'model at startup.'),
    'flush_filesystem_caches': (bool, True, 'Accepted for compatibility.'),
    'tensorflow_session_parallelism': (int, 0, 'Number of threads to use for '
                                       'running a Tensorflow session.'),
    'tensorflow_intra_op_parallelism': (int, 0, 'Number of threads to use to '
                                        'parallelize the execution of an '
                                        'individual op.'),
    'tensorflow_inter_op_parallelism': (int, 0, 'Controls the number of '
                                        'operators that can be executed '
                                        'simultaneously.'),
    'ssl_config_file': (str, '', 'Not supported by this server.'),
    'platform_config_file': (str, '', 'Not supported by this server.'),
    'per_process_gpu_memory_fraction': (float, 0.0, 'Accepted for '
                                        'compatibility (no GPU here).'),
    'saved_model_tags': (str, 'serve', 'Comma-separated set of tags '
                         'corresponding to the meta graph def to load from '
                         'SavedModel.'),
    'grpc_channel_arguments': (str, '', 'A comma separated list of arguments '
                               'to be passed to the grpc server. (e.g. '
                               'grpc.max_connection_age_ms=2000)'),
    'grpc_max_threads': (int, max(64, 4 * _CPUS), 'Max grpc server threads '
                         'to handle grpc messages.'),
    'enable_model_warmup': (bool, True, 'Enables model warmup, which triggers '
                            'lazy initializations (such as TF optimizations) '
                            'at load time, to reduce first request latency.'),
    'num_request_iterations_for_warmup': (int, 1, 'Number of times a warmup '
                                          'request is run.'),
    'version': (bool, False, 'Display version'),
    'monitoring_config_file': (str, '', 'If non-empty, read an ascii '
                               'MonitoringConfig protobuf from the supplied '
                               'file name'),
    'enable_signature_method_name_check':
        (bool, False, 'Enable method_name check for SignatureDef. Disable this '
         'if serving native TF2 regression/classification models.'),
    'xla_cpu_compilation_enabled': (bool, False, 'Accepted for '
                                    'compatibility.'),
    'enable_profiler': (bool, True, 'Accepted for compatibility.'),
    'remove_unused_fields_from_bundle_metagraph': (bool, True, 'Accepted for '
                                                   'compatibility.'),
    'use_tflite_model': (bool, False, 'Not supported by this server.'),
    'skip_initialize_tpu': (bool, True, 'Accepted for compatibility.'),
    'host': (str, '127.0.0.1', 'Address the gRPC and REST ports bind to '
             '(not a TF Serving flag; TF Serving binds 0.0.0.0).'),
    'version_settle_seconds': (float, 1.0, 'Load a new version directory '
                               'only once it has not changed for this long '
                               '(not a TF Serving flag).'),
    'rest_api_max_body_bytes': (int, 32 * 1024 * 1024, 'Larger HTTP/REST '
                                'request bodies are answered 413 (the rest '
                                'is dropped); 0 for no limit (not a TF '
                                'Serving flag).'),
    'server_processes': (str, '1', 'Serving processes that share the gRPC '
                         'and REST ports (SO_REUSEPORT; the kernel spreads '
                         'connections over them), each with its own copy of '
                         'the models, under a parent that restarts any that '
                         'dies; "auto": one a usable CPU (not a TF Serving '
                         'flag: TF Serving has no such flag).'),
}

_UNSUPPORTED = {
    'ssl_config_file': 'TLS is not supported; terminate TLS in front of the '
                       'server.',
    'platform_config_file': 'platform configs are not supported; use '
                            '--enable_batching/--batching_parameters_file.',
    'use_tflite_model': 'TFLite models are not supported.',
}

ServerFlags = dataclasses.make_dataclass(
    'ServerFlags', [(name, spec[0], dataclasses.field(default=spec[1]))
                    for name, spec in _FLAGS.items()])
ServerFlags.__module__ = __name__  # Picklable: spawned processes get flags.
ServerFlags.__doc__ = 'Parsed tensorflow_model_server flags.'


class FlagError(ValueError):
    """A command line that tensorflow_model_server would reject."""


def usage() -> str:
    """Returns the flag listing printed by --help and on errors."""
    lines = ['usage: python -m serving serve [--flag=value ...]', '', 'Flags:']
    for name, (kind, default, text) in _FLAGS.items():
        shown = str(default).lower() if kind is bool else repr(default)
        lines.append(f'\t--{name}={shown}\t{kind.__name__}\t{text}')
    return '\n'.join(lines)


def _convert(name: str, kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.lower()
        if lowered in ('true', '1'):
            return True
        if lowered in ('false', '0'):
            return False
        raise FlagError(f'Illegal value for flag --{name}: {raw!r}')
    try:
        return kind(raw)
    except ValueError:
        raise FlagError(f'Illegal value for flag --{name}: {raw!r}') from None


def parse(argv: Sequence[str]) -> Any:
    """Parses TF Serving style flags into a ServerFlags.

    Raises:
      FlagError: unknown flag, bad value, missing value or a rejected flag.
    """
    values: Dict[str, Any] = {}
    args: List[str] = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith('-') or arg in ('-', '--'):
            raise FlagError(f'unknown argument: {arg}')
        body = arg.lstrip('-')
        name, has_value, raw = body.partition('=')
        if name not in _FLAGS:
            raise FlagError(f'unknown argument: {arg}')
        kind = _FLAGS[name][0]
        if not has_value:
            if kind is bool:
                raw = 'true'
            elif i < len(args):
                raw = args[i]
                i += 1
            else:
                raise FlagError(f'Missing value for flag --{name}')
        values[name] = _convert(name, kind, raw)
    flags = ServerFlags(**values)
    for name, reason in _UNSUPPORTED.items():
        if getattr(flags, name):
            raise FlagError(f'--{name}: {reason}')
    if process_count(flags) > 1 and flags.grpc_socket_path:
        raise FlagError('--grpc_socket_path: a UNIX socket cannot be shared '
                        'by --server_processes; serve it from one process')
    return flags


def process_count(flags) -> int:
    """--server_processes as a number ("auto": the CPUs usable here).

    Raises:
      FlagError: neither a positive integer nor "auto".
    """
    raw = flags.server_processes.strip().lower()
    if raw == 'auto':
        return len(os.sched_getaffinity(0)) or 1
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise FlagError(f'Illegal value for flag --server_processes: '
                        f'{flags.server_processes!r} (a positive integer or '
                        f'"auto")')
    return count


def grpc_channel_arguments(spec: str) -> List[Tuple[str, Any]]:
    """Parses --grpc_channel_arguments ("k=v,k2=v2") into gRPC options."""
    options: List[Tuple[str, Any]] = []
    for item in filter(None, (part.strip() for part in spec.split(','))):
        key, sep, value = item.partition('=')
        if not sep:
            raise FlagError(f'Bad --grpc_channel_arguments entry: {item!r}')
        parsed: Optional[Any]
        try:
            parsed = int(value)
        except ValueError:
            parsed = value
        options.append((key.strip(), parsed))
    return options
