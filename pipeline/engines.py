"""Where the pipeline's Beam steps run, and the flags that send them there.

    python -m pipeline run --model rnn --beam-engine flink|spark
        [--engine-address HOST:PORT] [--worker-pool HOST:PORT]

`--beam-engine` turns into the Beam flags that send every Beam step to an
engine's Beam job server (beam_args), its SDK workers from a worker pool
(pipeline/sdk_worker_pool.py); a run first checks that the job server and
the worker pool answer (check_reachable). Without `--engine-address` they
are the local cluster's that `python -m pipeline engine start` started
(pipeline/engine_clusters.py), read from its state file (read_state).
The jobs a run sends are tracked in pipeline/engine_jobs.py.
"""

import argparse
import json
import os
import socket
import urllib.request
from typing import List, Optional

ENGINES = ('local', 'flink', 'spark')
CLUSTER_ENGINES = ('flink', 'spark')
ENGINE_HELP = (
    'where the Beam steps run: local (this process, Beam\'s FnApiRunner: '
    'the default), flink or spark (Beam\'s portable runner through the '
    'job server `python -m pipeline engine start ENGINE` started, or the '
    'one --engine-address names; SDK workers from its worker pool)')
ADDRESS_HELP = ('HOST:PORT of a remote engine\'s Beam job server (default: '
                'the local cluster `engine start` started)')
# On a cluster, a worker pool beside each TaskManager or executor (deploy/).
REMOTE_WORKER_POOL = 'localhost:50000'
WORKER_POOL_HELP = ('HOST:PORT of the Beam SDK worker pool the engine\'s '
                    'workers reach (default: the local cluster\'s; with '
                    f'--engine-address, {REMOTE_WORKER_POOL})')

FLINK_VERSION = '1.19.0'
SPARK_VERSION = '3.5.5'
BEAM_JOB_SERVER_VERSION = '2.62.0'
ENGINES_DIR = os.path.abspath(
    os.path.expanduser(os.environ.get('TFX_ENGINES_DIR',
                                      '~/.cache/tfx-engines')))
DEFAULT_STATE_DIR = os.path.join(ENGINES_DIR, 'clusters')
WORKERS = 2  # TaskManagers or Spark workers, one slot or core each.
_WORKER_IDLE_MILLIS = 30000


class EngineError(Exception):
    """An engine that cannot be started, reached or used: one line."""


def state_path(engine: str, state_dir: Optional[str] = None) -> str:
    """The state file of a started `engine`."""
    return os.path.join(state_dir or DEFAULT_STATE_DIR, f'{engine}.json')


def read_state(engine: str, state_dir: Optional[str] = None) -> dict:
    """The running cluster's pids and ports, as engine_clusters.start wrote."""
    path = state_path(engine, state_dir)
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError as error:
        raise EngineError(
            f'{path}: no {engine} cluster started here (python -m pipeline '
            f'engine start {engine})') from error


def beam_args(engine: str,
              address: Optional[str] = None,
              worker_pool: Optional[str] = None,
              state_dir: Optional[str] = None) -> List[str]:
    """The Beam flags that run every Beam step on `engine`.

    Args:
        engine: One of ENGINES; `local` gives no flags (the default ones).
        address: The job server's HOST:PORT; default: the local cluster's.
        worker_pool: The SDK worker pool's HOST:PORT as the engine's workers
            reach it; default: the local cluster's, or REMOTE_WORKER_POOL
            with `address`.
        state_dir: Where `engine start` wrote the local cluster's state.
    """
    if engine == 'local':
        return []
    parallelism = WORKERS
    if not address:
        state = read_state(engine, state_dir)
        address = state['job_endpoint']
        worker_pool = worker_pool or state['worker_pool']
        parallelism = state['parallelism']
    flags = [
        '--runner=PortableRunner',
        f'--job_endpoint={address}',
        '--environment_type=EXTERNAL',
        f'--environment_config={worker_pool or REMOTE_WORKER_POOL}',
        f'--parallelism={parallelism}',
        '--job_server_timeout=60',
        # An SDK worker imports Beam, TFX and TensorFlow (~5-20 s); kept for
        # the next stage instead of one per stage (Spark starts a stage's
        # environment anew otherwise). The runner stops it after this long
        # idle; `engine stop` kills any left.
        f'--environment_cache_millis={_WORKER_IDLE_MILLIS}'
    ]
    return flags


def endpoint(flags: List[str], name: str) -> Optional[str]:
    """The value of `--name=` in Beam flags, the last one."""
    values = [f.split('=', 1)[1] for f in flags if f.startswith(f'--{name}=')]
    return values[-1] if values else None


def port_answers(address: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to HOST:PORT is accepted."""
    host, _, port = address.rpartition(':')
    try:
        with socket.create_connection((host or '127.0.0.1', int(port)),
                                      timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def grpc_answers(address: str, timeout: float = 10.0) -> bool:
    """Whether a gRPC server answers at HOST:PORT (its channel gets ready)."""
    import grpc  # pylint: disable=import-outside-toplevel
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def check_reachable(flags: List[str]) -> None:
    """Checks that the job server and worker pool in `flags` answer.

    Raises:
        EngineError: naming the endpoint that does not answer.
    """
    job = endpoint(flags, 'job_endpoint')
    if job and not (port_answers(job) and grpc_answers(job)):
        raise EngineError(f'{job}: no Beam job server answers (is the engine '
                          'running? python -m pipeline engine start ...)')
    pool = endpoint(flags, 'environment_config')
    if (endpoint(flags, 'environment_type') == 'EXTERNAL' and pool and
            pool != REMOTE_WORKER_POOL and
            not (port_answers(pool) and grpc_answers(pool))):
        raise EngineError(f'{pool}: no Beam SDK worker pool answers')


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def http_json(url: str, timeout: float = 5.0):
    """The JSON an engine's REST API answers at `url`."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """`--beam-engine`, `--engine-address`, `--worker-pool`."""
    parser.add_argument('--beam-engine',
                        choices=ENGINES,
                        default='local',
                        help=ENGINE_HELP)
    parser.add_argument('--engine-address',
                        metavar='HOST:PORT',
                        help=ADDRESS_HELP)
    parser.add_argument('--worker-pool',
                        metavar='HOST:PORT',
                        help=WORKER_POOL_HELP)
    parser.add_argument('--engine-state-dir',
                        default=DEFAULT_STATE_DIR,
                        help=argparse.SUPPRESS)


def engine_flags_of(args: argparse.Namespace) -> List[str]:
    """The `--beam-engine` flags of parsed arguments, as given.

    For a command line made from them, e.g. `schedule`'s runs.
    """
    if getattr(args, 'beam_engine', 'local') == 'local':
        return []
    flags = [f'--beam-engine={args.beam_engine}']
    for name in ('engine_address', 'worker_pool', 'engine_state_dir'):
        if getattr(args, name, None):
            flags.append(f'--{name.replace("_", "-")}={getattr(args, name)}')
    return flags


def beam_args_of(args: argparse.Namespace) -> List[str]:
    """The Beam flags `--beam-engine` and its options stand for."""
    return beam_args(getattr(args, 'beam_engine', 'local'),
                     getattr(args, 'engine_address', None),
                     getattr(args, 'worker_pool', None),
                     getattr(args, 'engine_state_dir', None))
