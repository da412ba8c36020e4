"""The Trainer as many processes: a cluster of workers (and parameter servers).

    python -m models.workers SPEC.json     (one task; TF_CONFIG says which)

On a cluster (a Kubeflow Training Operator TFJob, Vertex AI) every task
is started with TF_CONFIG naming the cluster and its own task, and the
Trainer's run_fn in it joins that cluster (`in_cluster`). On one machine,
`--strategy multi_worker|parameter_server --set workers=N` has the Trainer
start the cluster itself (`launch`; its shape: `cluster_shape`): processes
on 127.0.0.1, each with TF_CONFIG and a free port.

`multi_worker` (MultiWorkerMirroredStrategy): N workers, each running the
same training (models/training.py `train`) on its shard of the data. Worker
0 is the chief: it exports to the real serving model directory, the others
to temporary folders they remove. A worker that fails fails the run, with
the end of its log.

`parameter_server` (ParameterServerStrategy, asynchronous SGD): M parameter
servers and N workers that only serve (`serve`: a TensorFlow server, until
killed), then a chief that trains as the cluster coordinator and exports. A
worker that dies is not fatal: the coordinator sends its steps to the
others and the chief's report names it (`workers_lost`); a parameter
server or the chief that dies fails the run, and so do all workers dying.

Either way, on failure or timeout every task still running is killed, and
a task dies with the Trainer.

SPEC.json, written by `launch` (and kept in `<model run dir>/workers/`):
`fn_args` (the Trainer's FnArgs but its data accessor, rebuilt here from
`examples_uri`), `recipe` (`module:NAME` of the ModelRecipe) and `report`
(where a task that trains writes what it did; `{index}` is its task index,
or `chief`).
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from common import environment
from common import settings
from models import training_report

if TYPE_CHECKING:  # Neither TFX nor training is imported to start workers.
    from tfx import v1 as tfx

    from models import recipe as recipe_lib

SPEC_FILE = 'spec.json'
# Lines of a failed worker's log shown in the error.
LOG_TAIL_LINES = 30
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerError(RuntimeError):
    """A worker process failed or did not finish in time."""


def in_cluster() -> bool:
    """Whether this process is a task of a cluster (TF_CONFIG is set)."""
    config = json.loads(os.environ.get('TF_CONFIG') or '{}')
    return bool(config.get('cluster'))


def free_ports(count: int) -> List[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(('127.0.0.1', 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child.
    """Linux: the worker gets SIGKILL when the process that started it dies."""
    if sys.platform.startswith('linux'):
        import ctypes  # pylint: disable=import-outside-toplevel
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)


def _log_tail(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return ''.join(f.readlines()[-LOG_TAIL_LINES:])
    except OSError:
        return '(no log)'


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """Kills every task still running (its whole process group)."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait()


@dataclasses.dataclass
class _Task:
    """One process of the cluster `launch` started."""
    type: str
    index: int
    process: subprocess.Popen
    log: str

    @property
    def name(self) -> str:
        return f'{self.type} {self.index}'


def _how(code: int) -> str:
    return (f'was killed by signal {-code}'
            if code < 0 else f'exited with code {code}')


def _failure(task: _Task, of: int) -> WorkerError:
    """The error of a task that ended with a non-zero code, with its log."""
    return WorkerError(
        f'{task.name} of {of} {_how(task.process.returncode)}; the end of '
        f'its log {task.log}:\n{_log_tail(task.log)}')


def _overrun(tasks: Sequence[_Task], timeout: float) -> WorkerError:
    running = [t for t in tasks if t.process.poll() is None]
    which = (f'workers {[t.index for t in running]}' if all(
        t.type == 'worker' for t in running) else ', '.join(
            t.name for t in running))
    return WorkerError(f'{which} still running after {timeout:g} s '
                       f'(worker_timeout_seconds); stopped them. The end of '
                       f'{running[0].log}:\n{_log_tail(running[0].log)}')


def _wait(tasks: Sequence[_Task], deadline: Optional[float],
          timeout: float) -> None:
    """Waits until every worker exits 0 (multi_worker).

    Raises WorkerError on the first failure or after the deadline.
    """
    while True:
        for task in tasks:
            if task.process.poll() not in (None, 0):
                raise _failure(task, len(tasks))
        if all(task.process.poll() == 0 for task in tasks):
            return
        if deadline is not None and time.monotonic() > deadline:
            raise _overrun(tasks, timeout)
        time.sleep(0.2)


# How long a chief waits for its cluster's servers to answer (liveness
# only: they start as it does, and a pod may be scheduled late).
CLUSTER_WAIT_SECONDS = 600


def _wait_for_cluster(cluster: Dict[str, List[str]]) -> None:
    """Waits until every worker and parameter server takes connections.

    Raises:
        WorkerError: one does not within CLUSTER_WAIT_SECONDS.
    """
    deadline = time.monotonic() + CLUSTER_WAIT_SECONDS
    waiting = [(t, i, a)
               for t in ('ps', 'worker')
               for i, a in enumerate(cluster.get(t, []))]
    while waiting:
        still = []
        for task_type, index, address in waiting:
            host, port = address.rsplit(':', 1)
            with socket.socket() as sock:
                if sock.connect_ex((host, int(port))) != 0:
                    still.append((task_type, index, address))
        waiting = still
        if waiting and time.monotonic() > deadline:
            task_type, index, address = waiting[0]
            raise WorkerError(
                f'TF_CONFIG: {task_type} {index} at {address} did not answer '
                f'in {CLUSTER_WAIT_SECONDS} s')
        if waiting:
            time.sleep(0.2)


def _wait_for_chief(chief: _Task, servers: Sequence[_Task],
                    deadline: Optional[float], timeout: float) -> List[int]:
    """Waits until the chief exits 0 (parameter_server).

    Returns:
        The indices of the workers that died meanwhile.

    Raises:
        WorkerError: the chief or a parameter server failed, every worker
            died, or the deadline passed.
    """
    workers = [t for t in servers if t.type == 'worker']
    lost: List[int] = []
    while True:
        code = chief.process.poll()
        if code == 0:
            return lost
        if code is not None:
            raise _failure(chief, 1)
        for task in servers:
            if task.process.poll() is None:
                continue
            if task.type != 'worker':
                raise _failure(task, len(servers) - len(workers))
            if task.index not in lost:
                lost.append(task.index)
                logging.warning(
                    'worker %d of %d %s; the coordinator sends its steps to '
                    'the others', task.index, len(workers),
                    _how(task.process.returncode))
        if len(lost) == len(workers):
            raise WorkerError(f'every worker died ({len(workers)}); the last, '
                              f'{_failure(workers[lost[-1]], len(workers))}')
        if deadline is not None and time.monotonic() > deadline:
            raise _overrun([chief], timeout)
        time.sleep(0.2)


def cluster_shape(params: Dict[str, Any]) -> Dict[str, int]:
    """Task type (TF_CONFIG's names) -> tasks of the cluster `launch` starts.

    For the configured strategy; the TFJobs under deploy/ have as many
    replicas at the settings' defaults.
    """
    workers = int(settings.value(params, 'workers'))
    if settings.value(params, 'strategy') == 'parameter_server':
        return {
            'ps': int(settings.value(params, 'parameter_servers')),
            'worker': workers,
            'chief': 1
        }
    return {'worker': workers}


def _start(spec_path: str, cluster: Dict[str, List[str]], task_type: str,
           index: int, log: str, temporary: str) -> subprocess.Popen:
    """`python -m models.workers SPEC` as one task of `cluster`.

    Its temporary files go to `temporary` (TMPDIR).
    """
    pythonpath = os.pathsep.join(
        p for p in (_PROJECT_ROOT, os.environ.get('PYTHONPATH')) if p)
    env = {
        'PYTHONWARNINGS':
            'ignore::FutureWarning',
        **os.environ, 'PYTHONPATH':
            pythonpath,
        'TMPDIR':
            temporary,
        'TF_CONFIG':
            json.dumps({
                'cluster': cluster,
                'task': {
                    'type': task_type,
                    'index': index
                }
            })
    }
    with open(log, 'w', encoding='utf-8') as output:
        return subprocess.Popen(
            [sys.executable, '-m', 'models.workers', spec_path],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent)


def launch(fn_args: 'tfx.components.FnArgs', recipe: 'recipe_lib.ModelRecipe',
           params: Dict[str, Any]) -> training_report.TrainingReport:
    """Trains as a cluster of processes on 127.0.0.1 (`cluster_shape`).

    Returns:
        The chief's report (models/training.py `train`); multi_worker: with
        every worker's weight digest and export folder; parameter_server:
        with the workers that died.

    Raises:
        WorkerError: if a task fails (but a parameter-server cluster's
            worker) or they overrun `worker_timeout_seconds`; no task is
            left running.
    """
    shape = cluster_shape(params)
    if min(shape.values()) < 1:
        raise ValueError(f'every task type needs one task at least: {shape}')
    timeout = float(settings.value(params, 'worker_timeout_seconds'))
    deadline = time.monotonic() + timeout if timeout else None
    folder = os.path.join(fn_args.model_run_dir, 'workers')
    os.makedirs(folder, exist_ok=True)
    args = {k: v for k, v in vars(fn_args).items() if k != 'data_accessor'}
    spec = {
        'fn_args':
            args,
        # <examples>/Split-<name>/*: the Examples artifact holding the files.
        'examples_uri':
            os.path.dirname(os.path.dirname(fn_args.train_files[0])),
        # The family, found by name in the worker (models/families.py).
        'family':
            recipe.name,
        # The run's hyper-parameters, a Tuner's best values included.
        'params':
            params,
        'report':
            os.path.join(folder, 'report-{index}.json'),
    }
    spec_path = os.path.join(folder, SPEC_FILE)
    with open(spec_path, 'w', encoding='utf-8') as f:
        json.dump(spec, f, indent=1)
    ports = iter(free_ports(sum(shape.values())))
    cluster = {
        task_type: [f'127.0.0.1:{next(ports)}' for _ in range(count)]
        for task_type, count in shape.items()
    }
    tasks: List[_Task] = []
    # The tasks' temporary files, removed after them: AutoGraph writes one
    # per function it converts and deletes it at exit, which a killed task
    # (a lost worker, the timeout, the parameter servers at the end) never
    # reaches.
    temporary = tempfile.mkdtemp(prefix='workers-')

    def start(task_type: str, index: int) -> _Task:
        log = os.path.join(folder, f'{task_type}-{index}.log')
        tasks.append(
            _Task(task_type, index,
                  _start(spec_path, cluster, task_type, index, log, temporary),
                  log))
        return tasks[-1]

    lost = None
    try:
        if 'chief' not in shape:
            _wait([start('worker', i) for i in range(shape['worker'])],
                  deadline, timeout)
        else:
            # All at once: the chief imports TensorFlow while the servers
            # start, then waits for them to answer (`main`).
            servers = [
                start(task_type, index)
                for task_type in ('ps', 'worker')
                for index in range(shape[task_type])
            ]
            lost = _wait_for_chief(start('chief', 0), servers, deadline,
                                   timeout)
    finally:
        _stop([task.process for task in tasks])
        shutil.rmtree(temporary, ignore_errors=True)
    trained = ['chief'] if lost is not None else range(shape['worker'])
    reports = []
    for index in trained:
        with open(spec['report'].format(index=index), encoding='utf-8') as f:
            reports.append(
                training_report.TrainingReport.from_json(json.load(f)))
    if lost is not None:
        return dataclasses.replace(reports[0], workers_lost=lost)
    return dataclasses.replace(
        reports[0],
        worker_weights_sha256=[r.weights_sha256 for r in reports],
        worker_export_dirs=[r.export_dir for r in reports])


def data_accessor(examples_uri: str) -> 'tfx.components.DataAccessor':
    """A Trainer DataAccessor over the Examples artifact at `examples_uri`."""
    # pylint: disable=import-outside-toplevel
    from tfx.components.trainer import fn_args_utils
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts
    examples = standard_artifacts.Examples()
    examples.uri = examples_uri
    examples.split_names = '["train", "eval"]'
    return fn_args_utils.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
            [examples], ['Trainer']),
        record_batch_factory=None,
        data_view_decode_fn=None)


def serve() -> None:  # pragma: no cover - runs until killed.
    """A parameter-server cluster's worker or parameter server.

    A TensorFlow server that runs what the coordinator sends, until killed.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(),
                                  job_name=resolver.task_type,
                                  task_index=resolver.task_id,
                                  protocol='grpc',
                                  start=True)
    print(
        f'{resolver.task_type} {resolver.task_id} serving at '
        f'{server.target}',
        flush=True)
    server.join()


def main(argv: Optional[List[str]] = None) -> int:
    """One task: trains (or serves) as TF_CONFIG's task; writes its report."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not in_cluster():
        print('usage: TF_CONFIG=... python -m models.workers SPEC.json',
              file=sys.stderr)
        return 2
    environment.use_legacy_keras()
    config = json.loads(os.environ['TF_CONFIG'])
    task = config['task']
    if 'ps' in config['cluster'] and task['type'] in ('ps', 'worker'):
        serve()
        return 0
    with open(argv[0], encoding='utf-8') as f:
        spec = json.load(f)
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from absl import logging as absl_logging
    from tfx.components.trainer import fn_args_utils

    from models import families
    from models import training
    absl_logging.set_verbosity(absl_logging.INFO)
    if 'ps' in config['cluster']:  # A parameter-server cluster's chief.
        _wait_for_cluster(config['cluster'])
    recipe = families.recipe(spec['family'])
    fn_args = fn_args_utils.FnArgs(**spec['fn_args'],
                                   data_accessor=data_accessor(
                                       spec['examples_uri']))
    report = training.train(fn_args, recipe, spec['params'])
    index = 'chief' if task['type'] == 'chief' else task['index']
    path = spec['report'].format(index=index)
    # Local or a bucket (gs://...) as on a cluster; whole or not at all.
    with tf.io.gfile.GFile(path + '.partial', 'w') as f:
        json.dump(report.as_json(), f)
    tf.io.gfile.rename(path + '.partial', path, overwrite=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
