"""`python -m serving serve`: a stand-in for tensorflow_model_server.

Startup follows TF Serving: flags and config files are checked first (a bad
command line or config fails fast, before TensorFlow is imported), then the
models are loaded, and only once every model's latest version is AVAILABLE
are the gRPC and REST ports opened. A model that fails to load at startup
fails the server ("Failed to start server. Error: ..."), exit status 255.

With --server_processes N > 1 this process checks the flags and config,
reserves the ports and supervises N serving processes
(`serving/server_processes.py`), each running `serve` on the shared ports.
"""

import dataclasses
import gc
import importlib.metadata
import logging
import os
import signal
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, List, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving import errors
from serving import flags as flags_lib
from serving import metrics as metrics_lib
from serving import server_processes

if TYPE_CHECKING:
    from serving import manager as manager_lib

_EXIT_FAILURE = 255
_LOG_FORMAT = ('%(asctime)s.%(msecs)03d: %(levelname).1s '
               'serving/%(module)s] {}%(message)s')


def _fail(message: str, role: Optional[server_processes.Role] = None) -> int:
    """Prints TF Serving's one line (a child tells its supervisor instead)."""
    if role is not None:
        role.failed(message)
    else:
        print(f'Failed to start server. Error: {message}',
              file=sys.stderr,
              flush=True)
    return _EXIT_FAILURE


def _read_model_config(flags) -> model_server_config_pb2.ModelServerConfig:
    if flags.model_config_file:
        return config_lib.read_model_server_config(flags.model_config_file)
    return config_lib.single_model_config(flags.model_name,
                                          flags.model_base_path)


def _check_startup_labels(config, allow_unavailable: bool) -> None:
    """No version is loaded at startup, so labels need the allow flag."""
    if allow_unavailable or config.WhichOneof('config') != 'model_config_list':
        return
    for model in config.model_config_list.config:
        for _, version in sorted(model.version_labels.items()):
            raise errors.failed_precondition(
                f'Request to assign label to version {version} of model '
                f'{model.name}, which is not currently available for '
                f'inference')


def _configure_tensorflow(flags) -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    intra = flags.tensorflow_intra_op_parallelism
    inter = flags.tensorflow_inter_op_parallelism
    if flags.tensorflow_session_parallelism and not (intra or inter):
        intra = inter = flags.tensorflow_session_parallelism
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def _make_loader(flags, inference, metrics: metrics_lib.Metrics):
    # pylint: disable=import-outside-toplevel
    from serving import servable as servable_lib
    from serving import warmup

    tags = tuple(
        t.strip() for t in flags.saved_model_tags.split(',') if t.strip())

    def load(name: str, version: int, path: str):
        start = time.perf_counter()
        try:
            servable = servable_lib.load(name, version, path, tags)
        except Exception:
            metrics.load_attempt(path, False, 0)
            raise
        try:
            params = os.path.join(path, 'batching_params.pbtxt')
            if (flags.enable_batching and
                    flags.enable_per_model_batching_parameters and
                    os.path.exists(params)):
                servable.batching_options = config_lib.read_batching_parameters(
                    params)
            if flags.enable_model_warmup:
                warmup.run_warmup(inference, servable,
                                  flags.num_request_iterations_for_warmup,
                                  metrics)
        except Exception:
            servable.close()
            metrics.load_attempt(path, False, 0)
            raise
        metrics.load_attempt(path, True, (time.perf_counter() - start) * 1e6)
        return servable

    return load


def _poll_config_file(flags, manager: 'manager_lib.ModelManager',
                      stop: threading.Event) -> None:
    """Re-applies --model_config_file whenever it differs from the config."""
    while not stop.wait(flags.model_config_file_poll_wait_seconds):
        try:
            config = config_lib.read_model_server_config(
                flags.model_config_file)
            if config != manager.current_config:
                logging.info('Reloading config from %s',
                             flags.model_config_file)
                manager.reload(config, alive=lambda: not stop.is_set())
        except Exception as e:  # pylint: disable=broad-except
            logging.error('Failed to reload config from %s: %s',
                          flags.model_config_file, e)


def _bind(host: str, port: int) -> str:
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def _read_settings(flags):
    """(config, batching, prometheus path, gRPC channel arguments).

    Raises:
      OSError, text_format.ParseError, errors.ServingError,
      flags_lib.FlagError: a file or flag is bad.
    """
    config = _read_model_config(flags)
    config_lib.validate_model_server_config(config)
    _check_startup_labels(config,
                          flags.allow_version_labels_for_unavailable_models)
    batching = (config_lib.read_batching_parameters(
        flags.batching_parameters_file) if flags.enable_batching else None)
    prometheus_path = config_lib.read_monitoring_path(
        flags.monitoring_config_file)
    channel_args = flags_lib.grpc_channel_arguments(
        flags.grpc_channel_arguments)
    return config, batching, prometheus_path, channel_args


_SETTINGS_ERRORS = (OSError, text_format.ParseError, errors.ServingError,
                    flags_lib.FlagError)


def _reload_refused(*_, **__) -> None:
    raise errors.failed_precondition(
        'HandleReloadConfigRequest reaches one of --server_processes: '
        'reload with --model_config_file and '
        '--model_config_file_poll_wait_seconds instead')


def serve(flags, role: Optional[server_processes.Role] = None) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the exit status.

    `role`: this process is one of --server_processes, on shared ports.
    """
    try:
        config, batching, prometheus_path, channel_args = _read_settings(flags)
    except _SETTINGS_ERRORS as e:
        return _fail(str(e), role)
    if role is not None:
        channel_args.append(('grpc.so_reuseport', 1))

    _configure_tensorflow(flags)
    # pylint: disable=import-outside-toplevel
    from serving import batching as batching_lib
    from serving import event_loop
    from serving import grpc_server
    from serving import http_server
    from serving import inference as inference_lib
    from serving import manager as manager_lib
    from serving import rest_api
    from serving import served_versions

    metrics = metrics_lib.Metrics()
    if role is not None:
        metrics.share(role.metrics_dir, role.index)
    batcher = (batching_lib.BatchScheduler(batching, metrics)
               if batching else None)
    # Requests and warmup read the served versions; the manager, loading
    # with warmup, writes them.
    served = served_versions.ServedVersions(
        on_versions_changed=metrics.versions_available)
    inference = inference_lib.Inference(
        served, metrics, batcher, flags.enable_signature_method_name_check)
    manager = manager_lib.ModelManager(
        _make_loader(flags, inference, metrics), served,
        manager_lib.ManagerOptions(
            poll_seconds=flags.file_system_poll_wait_seconds,
            settle_seconds=flags.version_settle_seconds,
            max_load_retries=flags.max_num_load_retries,
            load_retry_interval=flags.load_retry_interval_micros / 1e6,
            allow_labels_for_unavailable=(
                flags.allow_version_labels_for_unavailable_models)))
    # TensorFlow, gRPC and aiohttp leave ~420,000 objects behind their
    # imports, all alive for good: a full collection walked them all, holding
    # the GIL for 0.2-1 s (one every ~40 s under load). Frozen, it walks only
    # what came after (models, requests): milliseconds. Before the models
    # load, so that an unloaded version's cycles are still collected.
    gc.freeze()
    try:
        manager.reload(config)
    except errors.ServingError as e:
        manager.stop()
        return _fail(str(e), role)

    stop = threading.Event()
    addresses = [_bind(flags.host, flags.port)]
    if flags.grpc_socket_path:
        addresses.append(f'unix:{flags.grpc_socket_path}')
    grpc_loop = event_loop.EventLoopThread('grpc-loop', libuv=True)
    try:
        grpc = grpc_loop.run(
            grpc_server.start(
                inference, manager.reload if role is None else _reload_refused,
                addresses, flags.grpc_max_threads, channel_args, metrics))
    except (OSError, RuntimeError) as e:
        grpc_loop.close()
        manager.stop()
        return _fail(f'failed to start gRPC server: {e}', role)
    # One of several processes: its supervisor logs TF Serving's lines.
    logging.info(
        'Running gRPC ModelServer at %s ...' if role is None else 'gRPC at %s',
        _bind(flags.host, grpc.ports[0]))
    http, rest_loop = None, None
    if flags.rest_api_port:
        rest_loop = event_loop.EventLoopThread('rest-loop')
        http = http_server.HttpServer(
            rest_api.RestApi(inference, metrics, prometheus_path),
            num_threads=flags.rest_api_num_threads,
            timeout_ms=flags.rest_api_timeout_in_ms,
            max_body_bytes=flags.rest_api_max_body_bytes)
        try:
            rest_port = rest_loop.run(
                http.start(flags.host, flags.rest_api_port, role is not None))
        except OSError as e:
            rest_loop.close()
            grpc_loop.run(grpc.stop(0))
            grpc_loop.close()
            manager.stop()
            return _fail(f'failed to start HTTP server: {e}', role)
        logging.info(
            'Exporting HTTP/REST API at:%s ...' if role is None else
            'HTTP/REST at %s', _bind(flags.host, rest_port))
    if (flags.model_config_file and
            flags.model_config_file_poll_wait_seconds > 0):
        threading.Thread(target=_poll_config_file,
                         args=(flags, manager, stop),
                         name='config-poll',
                         daemon=True).start()

    def on_signal(signum, _):
        logging.info('Received signal %d, shutting down', signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if role is not None:
        role.ready(grpc.ports[0], flags.rest_api_port)
    while not stop.wait(1.0):
        pass
    grpc_loop.run(grpc.stop(grace=2), timeout=10)
    if http is not None:
        rest_loop.run(http.stop(), timeout=10)
        rest_loop.close()
    grpc_loop.close()
    manager.stop()
    if batcher is not None:
        batcher.stop()
    metrics.close()
    return 0


def _configure_logging(name: str) -> None:
    """Logs to stderr, each line naming the process if `name` is given."""
    logging.basicConfig(level=logging.INFO,
                        format=_LOG_FORMAT.format(f'{name}: ' if name else ''),
                        datefmt='%Y-%m-%d %H:%M:%S',
                        stream=sys.stderr,
                        force=True)
    # Importing TensorFlow drags in google.api_core, which nags about Python
    # 3.10 on every start.
    warnings.filterwarnings('ignore', category=FutureWarning)


def run_child(flags, role: server_processes.Role) -> None:
    """A spawned serving process of --server_processes: `serve` on its ports."""
    _configure_logging(role.name)
    role.watch_supervisor()
    sys.exit(serve(flags, role))


def _supervise(flags, count: int) -> int:
    """Checks the settings, reserves the ports, runs `count` serving ones."""
    try:
        _read_settings(flags)
    except _SETTINGS_ERRORS as e:
        return _fail(str(e))
    holders = []
    try:
        for port, what in ((flags.port, 'gRPC'), (flags.rest_api_port, 'HTTP')):
            if port or what == 'gRPC':
                try:
                    holders.append(
                        server_processes.reserve_port(flags.host, port))
                except OSError as e:
                    return _fail(f'failed to start {what} server: Failed to '
                                 f'bind to {_bind(flags.host, port)}: {e}')
        ports = [h.getsockname()[1] for h in holders] + [0]
        grpc_port, rest_port = ports[0], ports[1]

        def on_serving(grpc_port: int, rest_port: int) -> None:
            logging.info('Running gRPC ModelServer at %s ...',
                         _bind(flags.host, grpc_port))
            if rest_port:
                logging.info('Exporting HTTP/REST API at:%s ...',
                             _bind(flags.host, rest_port))
            logging.info('%d server processes share these ports', count)

        supervisor = server_processes.Supervisor(
            count, run_child, (dataclasses.replace(
                flags, port=grpc_port, rest_api_port=rest_port),), _fail)
        return supervisor.run((grpc_port, rest_port), on_serving)
    finally:
        for holder in holders:
            holder.close()


def _version_text() -> str:
    try:
        tf_version = importlib.metadata.version('tensorflow')
    except importlib.metadata.PackageNotFoundError:
        tf_version = 'unknown'
    try:
        api_version = importlib.metadata.version('tensorflow-serving-api')
    except importlib.metadata.PackageNotFoundError:
        api_version = 'unknown'
    return (f'TensorFlow ModelServer: {api_version} (serving package, '
            f'Python)\nTensorFlow Library: {tf_version}')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: `argv` are the flags after `serve`."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ('-h', '--help', '-help') for a in argv):
        print(flags_lib.usage())
        return 0
    try:
        flags = flags_lib.parse(argv)
    except flags_lib.FlagError as e:
        print(f'{e}\n{flags_lib.usage()}', file=sys.stderr)
        return _EXIT_FAILURE
    if flags.version:
        print(_version_text())
        return 0
    if not flags.model_base_path and not flags.model_config_file:
        print(
            f'{flags_lib.usage()}\nBoth --model_base_path and '
            f'--model_config_file are empty!',
            file=sys.stderr)
        return _EXIT_FAILURE
    count = flags_lib.process_count(flags)
    if count > 1:
        _configure_logging(f'supervisor pid {os.getpid()}')
        return _supervise(flags, count)
    _configure_logging('')
    return serve(flags)
