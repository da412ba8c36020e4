"""The processes of a local engine cluster: started, waited for, ended.

An engine's start (pipeline/flink_cluster.py, pipeline/spark_cluster.py)
spawns its processes on a `Cluster` and waits until each answers; Beam's job
server and the SDK worker pool (pipeline/sdk_worker_pool.py) start here, the
same for both engines. If any process fails to start, `Cluster.kill` ends
those already started (pipeline/engine_clusters.py).
"""

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from typing import Dict, List, Optional

from common import environment
from pipeline import engines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTUP_SECONDS = 180.0


def job_server_dir(engine: str) -> str:
    """Where `make engines` put the jars of Beam's job server for `engine`."""
    return os.path.join(engines.ENGINES_DIR, f'{engine}-job-server')


def job_server_jars(engine: str) -> str:
    """The classpath of Beam's job server for `engine`."""
    return os.path.join(job_server_dir(engine), '*')


@dataclasses.dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: str


class Cluster:
    """Processes started for one engine; any left are killed on failure."""

    def __init__(self, engine: str, state_dir: str):
        self.engine = engine
        self.dir = os.path.join(state_dir, engine)
        os.makedirs(os.path.join(self.dir, 'log'), exist_ok=True)
        self.processes: List[_Process] = []

    def spawn(self,
              name: str,
              command: List[str],
              env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        log = os.path.join(self.dir, 'log', f'{name}.log')
        with open(log, 'ab') as out:
            popen = subprocess.Popen(command,
                                     stdout=out,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={
                                         **os.environ,
                                         **(env or {})
                                     },
                                     cwd=self.dir,
                                     start_new_session=True)
        self.processes.append(_Process(name, popen, log))
        return popen

    def wait_for(self, what: str, ready, deadline: float) -> None:
        """Polls `ready()` until true.

        Raises:
            engines.EngineError: if a process died or the deadline passed.
        """
        while not ready():
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise engines.EngineError(
                        f'{process.log}: {self.engine} {process.name} exited '
                        f'({process.popen.returncode}) before {what}: '
                        f'{_last_line(process.log)}')
            if time.monotonic() > deadline:
                raise engines.EngineError(f'{self.engine}: no {what} after '
                                          f'{STARTUP_SECONDS:.0f} s (logs in '
                                          f'{self.dir}/log)')
            time.sleep(0.5)

    def kill(self) -> None:
        for process in reversed(self.processes):
            kill_group(process.popen.pid)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=30)


def _last_line(path: str) -> str:
    with contextlib.suppress(OSError):
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:300] if lines else '(no output)'
    return '(no log)'


def kill_group(pid: int) -> None:
    """SIGTERM then SIGKILL to the process group `pid` leads."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.1)


def reports_at_least(url: str, key: str, count: int) -> bool:
    """Whether the REST API at `url` answers with `key` at least `count`."""
    try:
        return engines.http_json(url).get(key, 0) >= count
    except (OSError, ValueError):
        return False


def java_env() -> Dict[str, str]:
    """JAVA_HOME for the engines' scripts: as set, else the `java` on PATH's."""
    java_home = os.environ.get('JAVA_HOME')
    if not java_home:
        java = os.path.realpath(
            subprocess.run(['sh', '-c', 'command -v java'],
                           capture_output=True,
                           text=True,
                           check=False).stdout.strip() or '/usr/bin/java')
        java_home = os.path.dirname(os.path.dirname(java))
    return {'JAVA_HOME': java_home}


def start_job_server(cluster: Cluster, classpath: str, jvm_options: List[str],
                     main: List[str], deadline: float) -> str:
    """Beam's job server (`main`: its class and flags); its HOST:PORT.

    `classpath`: job_server_jars(engine) and whatever else the engine's
    runner needs.
    """
    job, artifact, expansion = engines.free_port(), engines.free_port(
    ), engines.free_port()
    cluster.spawn('job-server', [
        'java', '-Xmx1g', *jvm_options, '-Djava.io.tmpdir=' +
        os.path.join(cluster.dir, 'tmp'), '-cp', classpath, main[0], *main[1:],
        '--job-host=127.0.0.1', f'--job-port={job}',
        f'--artifact-port={artifact}', f'--expansion-port={expansion}',
        '--artifacts-dir=' + os.path.join(cluster.dir, 'artifacts')
    ], java_env())
    address = f'127.0.0.1:{job}'
    cluster.wait_for('Beam job server', lambda: engines.port_answers(address),
                     deadline)
    return address


def check_worker_python(python: str) -> None:
    """Checks that `python` imports Beam's SDK worker and this project.

    A pool whose workers cannot start would fail every job.

    Raises:
        engines.EngineError: naming the interpreter and the import that failed.
    """
    try:
        check = subprocess.run([
            python, '-c', 'import apache_beam, tfx, components, models; '
            'from apache_beam.runners.worker import sdk_worker'
        ],
                               capture_output=True,
                               text=True,
                               cwd=REPO,
                               env={
                                   **os.environ,
                                   **_worker_env(python)
                               },
                               check=False,
                               timeout=300)
    except OSError as error:
        raise engines.EngineError(f'{python}: cannot run Beam SDK workers: '
                                  f'{error.strerror}') from error
    if check.returncode:
        lines = (check.stderr or check.stdout).strip().splitlines()
        raise engines.EngineError(f'{python}: cannot run Beam SDK workers: '
                                  f'{lines[-1] if lines else check.returncode}')


def start_worker_pool(cluster: Cluster, python: str, deadline: float) -> str:
    """The Beam SDK worker pool of `python`; its HOST:PORT."""
    port = engines.free_port()
    cluster.spawn(
        'worker-pool',
        [python, '-m', 'pipeline.sdk_worker_pool', '--worker-pool',
         str(port)], _worker_env(python))
    address = f'127.0.0.1:{port}'
    cluster.wait_for('SDK worker pool', lambda: engines.port_answers(address),
                     deadline)
    return address


def _worker_env(python: str) -> Dict[str, str]:
    """The workers' environment.

    `python`'s folder first on PATH (Beam's pool starts `python`), this project
    importable, TensorFlow quiet.
    """
    return {
        'PATH': os.path.dirname(python) + os.pathsep + os.environ['PATH'],
        'PYTHONPATH': REPO,
        **environment.LEGACY_KERAS_ENV,
        'TF_CPP_MIN_LOG_LEVEL': '2',
        'PYTHONWARNINGS': 'ignore::FutureWarning',
    }
