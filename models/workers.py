"""The Trainer as many worker processes: MultiWorkerMirroredStrategy here.

    python -m models.workers SPEC.json     (one worker; TF_CONFIG says which)

On a cluster (a Kubeflow Training Operator TFJob, Vertex AI) every worker
is started with TF_CONFIG naming the cluster and its own task, and the
Trainer's run_fn in it joins that cluster (`in_cluster`). On one machine,
`--strategy multi_worker --set workers=N` has the Trainer start N workers
itself (`launch`): processes on 127.0.0.1, each with TF_CONFIG and a free
port, each running the same training (models/training.py `train`) on its
shard of the data. Worker 0 is the chief: it exports to the real serving
model directory, the others to temporary folders they remove. A worker that
fails fails the run, with the end of its log; on failure or timeout every
worker still running is killed, and a worker dies with the Trainer.

SPEC.json, written by `launch` (and kept in `<model run dir>/workers/`):
`fn_args` (the Trainer's FnArgs but its data accessor, rebuilt here from
`examples_uri`), `recipe` (`module:NAME` of the ModelRecipe) and `report`
(where a worker writes what it did; `{index}` is its task index).
"""

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
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
    """Kills every worker still running (its whole process group)."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait()


def _wait(processes: Sequence[subprocess.Popen], logs: Sequence[str],
          timeout: float) -> None:
    """Waits until every worker exits 0.

    Until every worker exits 0; raises WorkerError on the first failure or when
    `timeout` seconds (0: none) have passed.
    """
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        codes = [process.poll() for process in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                how = (f'was killed by signal {-code}'
                       if code < 0 else f'exited with code {code}')
                raise WorkerError(
                    f'worker {index} of {len(processes)} {how}; the end of '
                    f'its log {logs[index]}:\n{_log_tail(logs[index])}')
        if all(code == 0 for code in codes):
            return
        if deadline is not None and time.monotonic() > deadline:
            running = [i for i, code in enumerate(codes) if code is None]
            raise WorkerError(
                f'workers {running} still running after {timeout:g} s '
                f'(worker_timeout_seconds); stopped them. The end of '
                f'{logs[running[0]]}:\n{_log_tail(logs[running[0]])}')
        time.sleep(0.2)


def launch(fn_args: 'tfx.components.FnArgs', recipe: 'recipe_lib.ModelRecipe',
           params: Dict[str, Any]) -> training_report.TrainingReport:
    """Trains as `params['workers']` worker processes on 127.0.0.1.

    Returns:
        The chief's report (models/training.py `train`), with every
        worker's weight digest and export folder.

    Raises:
        WorkerError: if a worker fails or they overrun
            `worker_timeout_seconds`; no worker is left running.
    """
    count = int(settings.value(params, 'workers'))
    if count < 1:
        raise ValueError(f'workers must be at least 1, got {count}')
    timeout = float(settings.value(params, 'worker_timeout_seconds'))
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
    cluster = {'worker': [f'127.0.0.1:{port}' for port in free_ports(count)]}
    logs = [os.path.join(folder, f'worker-{i}.log') for i in range(count)]
    pythonpath = os.pathsep.join(
        p for p in (_PROJECT_ROOT, os.environ.get('PYTHONPATH')) if p)
    processes: List[subprocess.Popen] = []
    try:
        for index, log in enumerate(logs):
            env = {
                'PYTHONWARNINGS':
                    'ignore::FutureWarning',
                **os.environ, 'PYTHONPATH':
                    pythonpath,
                'TF_CONFIG':
                    json.dumps({
                        'cluster': cluster,
                        'task': {
                            'type': 'worker',
                            'index': index
                        }
                    })
            }
            with open(log, 'w', encoding='utf-8') as output:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, '-m', 'models.workers', spec_path],
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=_die_with_parent))
        _wait(processes, logs, timeout)
    finally:
        _stop(processes)
    reports = []
    for index in range(count):
        with open(spec['report'].format(index=index), encoding='utf-8') as f:
            reports.append(
                training_report.TrainingReport.from_json(json.load(f)))
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


def main(argv: Optional[List[str]] = None) -> int:
    """One worker: trains as TF_CONFIG's task; writes its report."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not in_cluster():
        print('usage: TF_CONFIG=... python -m models.workers SPEC.json',
              file=sys.stderr)
        return 2
    environment.use_legacy_keras()
    with open(argv[0], encoding='utf-8') as f:
        spec = json.load(f)
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from absl import logging
    from tfx.components.trainer import fn_args_utils

    from models import families
    from models import training
    logging.set_verbosity(logging.INFO)
    recipe = families.recipe(spec['family'])
    fn_args = fn_args_utils.FnArgs(**spec['fn_args'],
                                   data_accessor=data_accessor(
                                       spec['examples_uri']))
    report = training.train(fn_args, recipe, spec['params'])
    index = json.loads(os.environ['TF_CONFIG'])['task']['index']
    path = spec['report'].format(index=index)
    # Local or a bucket (gs://...) as on a cluster; whole or not at all.
    with tf.io.gfile.GFile(path + '.partial', 'w') as f:
        json.dump(report.as_json(), f)
    tf.io.gfile.rename(path + '.partial', path, overwrite=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
