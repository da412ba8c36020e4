"""Local Apache Flink and Apache Spark clusters for the pipeline's Beam steps.

    python -m pipeline engine start flink|spark [--state-dir DIR]
    python -m pipeline engine stop flink|spark [--state-dir DIR]

`start` lays out a cluster on 127.0.0.1 from the artifacts `make engines`
fetched (engines.ENGINES_DIR): a Flink JobManager and two TaskManagers, or
a Spark master and two workers; Beam's job server for that engine; and a
Beam SDK worker pool (pipeline/sdk_worker_pool.py, an EXTERNAL environment)
running this project's Python. Their pids and ports go to
`<state-dir>/<engine>.json` (engines.read_state); `stop` ends them all.
Each engine's settings and start are in its own module
(pipeline/flink_cluster.py, pipeline/spark_cluster.py); what both do with
their processes is in pipeline/cluster_processes.py.

No job server jar of Beam's is served by the Maven registry reached here, so
`make engines` assembles one from Beam's runner modules (Beam 2.62, the
newest whose Flink and Spark runners resolve there with the job service),
whose Fn API the Python SDK (2.74) speaks; Flink 1.19 is the newest Flink
that runner supports.
"""

import argparse
import contextlib
import json
import os
import sys
from typing import Iterator, List, Optional

from pipeline import cluster_processes
from pipeline import engines
from pipeline import flink_cluster
from pipeline import spark_cluster

# Each engine's module: its start(cluster, python, workers) and home().
_ENGINES = {'flink': flink_cluster, 'spark': spark_cluster}


def _check_artifacts(engine: str) -> None:
    for path in (_ENGINES[engine].home(),
                 cluster_processes.job_server_dir(engine)):
        if not os.path.isdir(path):
            raise engines.EngineError(
                f'{path}: missing; `make engines` fetches it')


def start(engine: str,
          state_dir: Optional[str] = None,
          python: Optional[str] = None,
          workers: int = engines.WORKERS) -> dict:
    """Starts a local `engine` cluster, job server and worker pool.

    Its `workers` TaskManagers or Spark workers have one slot or core each:
    the parallelism of its jobs.

    Returns:
        Its state (pids, ports, endpoints), also written to
        engines.state_path().

    Raises:
        engines.EngineError: artifacts missing, a process that did not start,
            or a cluster already running in `state_dir`.
    """
    _check_artifacts(engine)
    state_dir = os.path.abspath(state_dir or engines.DEFAULT_STATE_DIR)
    path = engines.state_path(engine, state_dir)
    if os.path.exists(path):
        state = engines.read_state(engine, state_dir)
        if any(_alive(pid) for pid in state['pids'].values()):
            raise engines.EngineError(
                f'{path}: a {engine} cluster is running '
                f'(python -m pipeline engine stop {engine})')
    python = python or sys.executable
    cluster_processes.check_worker_python(python)
    cluster = cluster_processes.Cluster(engine, state_dir)
    try:
        state = _ENGINES[engine].start(cluster, python, workers)
    except BaseException:
        cluster.kill()
        raise
    state.update(engine=engine,
                 parallelism=workers,
                 pids={p.name: p.popen.pid for p in cluster.processes},
                 logs=os.path.join(cluster.dir, 'log'))
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(state, f, indent=1)
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(engine: str, state_dir: Optional[str] = None) -> List[int]:
    """Kills every process of the local `engine` cluster; the pids ended."""
    path = engines.state_path(engine, state_dir)
    state = engines.read_state(engine, state_dir)
    ended = []
    for pid in state['pids'].values():
        if _alive(pid):
            cluster_processes.kill_group(pid)
            ended.append(pid)
    os.remove(path)
    return ended


@contextlib.contextmanager
def running(engine: str,
            state_dir: str,
            workers: int = engines.WORKERS) -> Iterator[dict]:
    """A started cluster, stopped on leaving."""
    state = start(engine, state_dir, workers=workers)
    try:
        yield state
    finally:
        stop(engine, state_dir)


def add_engine_command(commands) -> None:
    """`engine start|stop ENGINE`, on the command line's subparsers."""
    engine = commands.add_parser(
        'engine',
        help='start or stop a local Flink or Spark cluster with Beam\'s job '
        'server and SDK worker pool')
    engine.add_argument('action',
                        choices=('start', 'stop', 'status'),
                        help='start the cluster, stop every process it '
                        'started, or print its state (pids and ports)')
    engine.add_argument('engine',
                        choices=engines.CLUSTER_ENGINES,
                        help='the engine whose local cluster to act on')
    engine.add_argument('--state-dir',
                        default=engines.DEFAULT_STATE_DIR,
                        help='where the pids and ports are kept (default '
                        f'{engines.DEFAULT_STATE_DIR})')
    engine.add_argument('--python',
                        help='the Python of the SDK workers (default: this '
                        'one)')
    engine.add_argument('--workers',
                        type=int,
                        default=engines.WORKERS,
                        help='TaskManagers or Spark workers, one slot or '
                        f'core each: the jobs\' parallelism (default '
                        f'{engines.WORKERS})')


def engine_command(args: argparse.Namespace) -> dict:
    """Runs `engine start|stop|status`; its JSON result."""
    if args.action == 'start':
        state = start(args.engine, args.state_dir, args.python, args.workers)
        return {
            **state, 'beam_engine_flags': [
                f'--beam-engine={args.engine}',
                f'--engine-address={state["job_endpoint"]}',
                f'--worker-pool={state["worker_pool"]}'
            ]
        }
    if args.action == 'stop':
        return {
            'engine': args.engine,
            'stopped': stop(args.engine, args.state_dir)
        }
    state = engines.read_state(args.engine, args.state_dir)
    return {
        **state, 'alive': {
            name: _alive(pid) for name, pid in state['pids'].items()
        }
    }
