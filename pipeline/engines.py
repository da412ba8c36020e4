"""Apache Flink and Apache Spark clusters for the pipeline's Beam steps.

    python -m pipeline engine start flink|spark [--state-dir DIR]
    python -m pipeline engine stop flink|spark [--state-dir DIR]
    python -m pipeline run --model rnn --beam-engine flink

`start` lays out a cluster on 127.0.0.1 from the artifacts `make engines`
fetched (ENGINES_DIR): a Flink JobManager and two TaskManagers, or a Spark
master and two workers; Beam's job server for that engine; and a Beam SDK
worker pool (EXTERNAL environment) running this project's Python. Their pids
and ports go to `<state-dir>/<engine>.json`; `stop` ends them all.
`--beam-engine` turns into the Beam flags that send every Beam step to the
job server (beam_args), and a run first checks that the job server and the
worker pool answer (check_reachable).

No job server jar of Beam's is served by the Maven registry reached here, so
`make engines` assembles one from Beam's runner modules (Beam 2.62, the
newest whose Flink and Spark runners resolve there with the job service),
whose Fn API the Python SDK (2.74) speaks; Flink 1.19 is the newest Flink
that runner supports.
"""

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, Iterator, List, Optional

from common import environment
from common import names

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
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STARTUP_SECONDS = 180.0
_WORKER_IDLE_MILLIS = 30000
# A Spark executor's heap: Beam's portable Spark runner holds each
# partition's output of a fused stage in it (apache/beam#23852 fixed only
# the classic runner), and Transform's stage at 280k images outgrew 1 GB.
SPARK_EXECUTOR_HEAP_MB = 3072
# What each Spark worker offers: one executor and Spark's overhead.
SPARK_WORKER_MB = SPARK_EXECUTOR_HEAP_MB + 512
# What a worker prints once Beam's SDK harness imported (see WorkerPool).
_WORKER_READY = 'beam-sdk-worker-ready'


class EngineError(Exception):
    """An engine that cannot be started, reached or used: one line."""


def flink_home() -> str:
    """Where the Flink distribution is unpacked."""
    return os.path.join(ENGINES_DIR, f'flink-{FLINK_VERSION}')


def spark_home() -> str:
    """Where the Spark distribution is unpacked."""
    return os.path.join(ENGINES_DIR, f'spark-{SPARK_VERSION}')


def spark_executor_classpath() -> str:
    """What Spark's executors put before Spark's own jars: a newer Guava.

    Spark's jars/ has guava-14, which comes first on its executors; Beam's
    GCS connector (in the job server's jars, registered in every task)
    calls Guava methods added since, and each attempt of a task failed
    with a NoSuchMethodError (every attempt, at 280k rows). The job
    server's own Guava, first, has them.
    """
    return ':'.join(
        sorted(
            glob.glob(
                os.path.join(ENGINES_DIR, 'spark-job-server', 'guava-*.jar'))))


def spark_driver_properties() -> Dict[str, str]:
    """The Spark settings Beam's job server, Spark's driver, is started with.

    Given as Java system properties, which its SparkConf reads; deploy/spark
    gives its job server the same (`JAVA_TOOL_OPTIONS`).
    """
    return {
        'spark.executor.extraClassPath': spark_executor_classpath(),
        'spark.executor.memory': f'{SPARK_EXECUTOR_HEAP_MB}m'
    }


def job_server_classpath(engine: str) -> str:
    """The job server's jars (`make engines`) and, for Spark, Spark's."""
    paths = [os.path.join(ENGINES_DIR, f'{engine}-job-server', '*')]
    if engine == 'spark':
        paths.append(os.path.join(spark_home(), 'jars', '*'))
    return ':'.join(paths)


def state_path(engine: str, state_dir: Optional[str] = None) -> str:
    """The state file of a started `engine`."""
    return os.path.join(state_dir or DEFAULT_STATE_DIR, f'{engine}.json')


def read_state(engine: str, state_dir: Optional[str] = None) -> dict:
    """The running cluster's pids and ports, as `start` wrote them."""
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


def _http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def flink_jobs(state: dict) -> List[dict]:
    """Flink's `/jobs/overview`, each job with its vertices' parallelism."""
    rest = f'http://{state["rest"]}'
    jobs = _http_json(f'{rest}/jobs/overview')['jobs']
    for job in jobs:
        detail = _http_json(f'{rest}/jobs/{job["jid"]}')
        job['max_parallelism'] = max(
            (v['parallelism'] for v in detail['vertices']), default=0)
    return jobs


def spark_applications(state: dict) -> dict:
    """The Spark master's `/json/`: its workers and (completed) apps."""
    return _http_json(f'http://{state["rest"]}/json/')


class EngineJobFailed(Exception):
    """A Beam job that failed on an engine: one line, naming the job."""


_TERMINAL_STATES = ('DONE', 'FAILED', 'CANCELLED', 'UPDATED', 'DRAINED')


class BeamJobs:
    """The Beam jobs this process sends to engines, to report and cancel.

    While `tracking()`, every job submitted through Beam's portable runner
    (PortableRunner, and FlinkRunner and SparkRunner, which are one) is
    kept: its job id, its end state and the SDK worker process ids its
    counters name (names.WORKER_PID_COUNTERS); a job that fails raises
    EngineJobFailed; `cancel_running()` cancels those not ended through the
    job server's Job API (a `run` interrupted while a job runs).
    """

    def __init__(self, flink_rest: Optional[str] = None):
        """Keeps no job yet.

        Args:
            flink_rest: The REST address of the Flink cluster the jobs run
                on, if known: Beam's Flink job server marks a job cancelled
                without cancelling it on a Flink cluster, so it is
                cancelled there too.
        """
        self.jobs: List[dict] = []
        self._results: list = []
        self._flink_rest = flink_rest

    @contextlib.contextmanager
    def tracking(self) -> Iterator['BeamJobs']:
        """Keeps the portable jobs submitted meanwhile."""
        # pylint: disable=import-outside-toplevel
        from apache_beam.runners.portability import portable_runner
        runner_class = portable_runner.PortableRunner
        result_class = portable_runner.PipelineResult
        run_pipeline = runner_class.run_pipeline
        wait_until_finish = result_class.wait_until_finish
        tracker = self

        def tracked_run(runner, pipeline, options):
            result = run_pipeline(runner, pipeline, options)
            if isinstance(result, result_class):
                tracker._results.append(result)  # pylint: disable=protected-access
                tracker.jobs.append({
                    'job_id': result._job_id,  # pylint: disable=protected-access
                    'state': 'RUNNING'
                })
            return result

        def tracked_wait(result, duration=None):
            job = tracker.job_of(result)
            try:
                state = wait_until_finish(result, duration)
            except Exception as error:  # pylint: disable=broad-except
                if job is None:
                    raise
                job['state'] = str(result._state or 'FAILED')  # pylint: disable=protected-access
                message = result._last_error_message()  # pylint: disable=protected-access
                if message == 'unknown error':
                    message = str(error)
                lines = message.strip().splitlines() or ['(no message)']
                raise EngineJobFailed(
                    f'Beam job {job["job_id"]} ended {job["state"]} on the '
                    f'engine: {lines[0][:300]}') from error
            if job is not None:
                job['state'] = str(state)
                job['sdk_worker_pids'] = _worker_pids_counted(result)
            return state

        runner_class.run_pipeline = tracked_run
        result_class.wait_until_finish = tracked_wait
        try:
            yield self
        finally:
            runner_class.run_pipeline = run_pipeline
            result_class.wait_until_finish = wait_until_finish

    def job_of(self, result) -> Optional[dict]:
        """The kept job of a PipelineResult, if it is one of ours."""
        for kept, job in zip(self._results, self.jobs):
            if kept is result:
                return job
        return None

    def cancel_running(self) -> List[str]:
        """Cancels every kept job not ended; their ids."""
        cancelled = []
        for result, job in zip(self._results, self.jobs):
            if job['state'] in _TERMINAL_STATES:
                continue
            try:
                if str(result.state) in _TERMINAL_STATES:
                    continue
                result.cancel()
                if self._flink_rest:
                    cancel_flink_job(self._flink_rest, job['job_id'])
            except Exception as error:  # pylint: disable=broad-except
                job['cancel_error'] = f'{type(error).__name__}: {error}'
                continue
            job['state'] = 'CANCELLED'
            cancelled.append(job['job_id'])
        return cancelled


def cancel_flink_job(rest: str, beam_job_id: str) -> List[str]:
    """Cancels through Flink's REST API the Flink job of a Beam job.

    Beam's Flink job server names the Flink job after the Beam job's id
    (up to its `_`); its own Cancel only stops waiting for the job.

    Returns:
        The Flink job ids cancelled.
    """
    name = beam_job_id.split('_')[0]
    cancelled = []
    for job in _http_json(f'http://{rest}/jobs/overview')['jobs']:
        if job['name'] == name and job['state'] not in ('FINISHED', 'FAILED',
                                                        'CANCELED'):
            request = urllib.request.Request(
                f'http://{rest}/jobs/{job["jid"]}?mode=cancel', method='PATCH')
            with urllib.request.urlopen(request, timeout=10):
                cancelled.append(job['jid'])
    return cancelled


def flink_rest_of(flags: List[str], state_dir: Optional[str]) -> Optional[str]:
    """The REST address of the Flink cluster `flags` run on, if known.

    Beam's `--flink_master=HOST:PORT` (a remote cluster's REST API, which
    Beam's Flink job server then submits to), else the local cluster's if
    the flags point at its job server.
    """
    master = endpoint(flags, 'flink_master')
    if master and not master.startswith('['):  # Not [auto], [local].
        return master.split('://', 1)[-1].rstrip('/')
    try:
        state = read_state('flink', state_dir)
    except EngineError:
        return None
    if endpoint(flags, 'job_endpoint') != state.get('job_endpoint'):
        return None
    return state.get('rest')


def _worker_pids_counted(result) -> List[int]:
    """The SDK worker pids a finished job's counters name (may be none)."""
    # pylint: disable=import-outside-toplevel
    from apache_beam.metrics.metric import MetricsFilter
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(
            names.WORKER_PID_COUNTERS))['counters']
    except Exception:  # pylint: disable=broad-except
        return []  # A job server that keeps no metrics.
    return sorted({
        int(c.key.metric.name)
        for c in counters
        if (c.committed or c.attempted) and c.key.metric.name.isdigit()
    })


@dataclasses.dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: str


class _Cluster:
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
            EngineError: if a process died or the deadline passed.
        """
        while not ready():
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise EngineError(
                        f'{process.log}: {self.engine} {process.name} exited '
                        f'({process.popen.returncode}) before {what}: '
                        f'{_last_line(process.log)}')
            if time.monotonic() > deadline:
                raise EngineError(f'{self.engine}: no {what} after '
                                  f'{_STARTUP_SECONDS:.0f} s (logs in '
                                  f'{self.dir}/log)')
            time.sleep(0.5)

    def kill(self) -> None:
        for process in reversed(self.processes):
            _kill_group(process.popen.pid)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=30)


def _last_line(path: str) -> str:
    with contextlib.suppress(OSError):
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:300] if lines else '(no output)'
    return '(no log)'


def _kill_group(pid: int) -> None:
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


def _java_env() -> Dict[str, str]:
    java_home = os.environ.get('JAVA_HOME')
    if not java_home:
        java = os.path.realpath(
            subprocess.run(['sh', '-c', 'command -v java'],
                           capture_output=True,
                           text=True,
                           check=False).stdout.strip() or '/usr/bin/java')
        java_home = os.path.dirname(os.path.dirname(java))
    return {'JAVA_HOME': java_home}


def _check_artifacts(engine: str) -> None:
    home = flink_home() if engine == 'flink' else spark_home()
    for path in (home, os.path.join(ENGINES_DIR, f'{engine}-job-server')):
        if not os.path.isdir(path):
            raise EngineError(f'{path}: missing; `make engines` fetches it')


# Flink's managed memory, which its batch operators sort in. Beam's Flink
# runner turns each GroupByKey into a GroupCombine (chained to the stage
# before it) and a GroupReduce, each sorting in its own share of a slot's
# managed memory: Flink's optimizer gives every memory consumer of a job the
# same fraction (PlanFinalizer: weight / all consumers' weights), whether
# or not they run at once. The chained combiner (SynchronousChainedCombine-
# Driver) fails on a record larger than its share ("Cannot write record to
# fresh sort buffer. Record too large."); the GroupReduce's sorter too ("The
# record exceeds the maximum size of a sort buffer").
FLINK_PAGE_BYTES = 32 * 1024  # taskmanager.memory.segment-size, Flink's.
# Consumers of the largest job: StatisticsGen's of three splits has 60
# (30 GroupCombine, 30 GroupReduce in Flink's `/jobs/<id>/plan`).
FLINK_MEMORY_CONSUMERS = 64
# The largest record one GroupByKey element may be: TFDV's top-k of a
# bytes feature keeps its 1000 most frequent values (the rank histogram),
# so for the convnet's 784-byte images a bundle's TopCombineFn accumulator
# is 791 kB; room for images of 2.5 times that.
FLINK_SORT_RECORD_BYTES = 2 * 1024 * 1024
# Pages a sorter keeps beside its records: the sort index's, the spilling
# sorter's write buffers (2), one spare.
FLINK_SORTER_PAGES = 4
FLINK_MANAGED_MB = -(
    -FLINK_MEMORY_CONSUMERS *
    (FLINK_SORT_RECORD_BYTES + FLINK_SORTER_PAGES * FLINK_PAGE_BYTES) // 2**20)
# Direct memory for the code a task runs besides Flink's: Beam's Fn API
# servers (gRPC over netty) to the SDK workers. Flink caps a TaskManager's
# direct memory at its network memory (taken whole at start) + framework
# off-heap (128m) + this (default 0): in Transform's job at 70k rows the
# TaskManagers' direct memory reached 438 MB of that 448 MB cap.
FLINK_TASK_OFF_HEAP_MB = 256
# The heap of the tasks: Beam's Fn API data plane receives the SDK workers'
# outputs on it, holding up to 100 messages of up to ~20 MB of a bundle's
# output until the bundle is done (`run_sdk_worker`); with 344m (what a
# 1.4 GB TaskManager leaves) Transform's job at 70k rows ran out ("Java
# heap space" parsing BeamFnApi.Elements in a gRPC thread), with 1 GB at
# 280k rows.
FLINK_TASK_HEAP_MB = 3072
# A TaskManager whose heap runs out ends its JVM, so the job fails and the
# run ends with one line. Without it Transform's job at 280k rows hung: the
# OutOfMemoryError killed the gRPC thread of Beam's data plane, and the
# job's tasks waited for its data, running, for as long as they were let.
FLINK_TASKMANAGER_JAVA_OPTIONS = '-XX:+ExitOnOutOfMemoryError'


def flink_settings(cluster_dir: str,
                   rpc_port: int,
                   rest_port: int,
                   workers: int,
                   java_options: str = '') -> Dict[str, object]:
    """The Flink configuration (config.yaml) of a local cluster.

    Args:
        cluster_dir: The cluster's folder (its temporary files go there).
        rpc_port: The JobManager's RPC port.
        rest_port: The REST API's port.
        workers: TaskManagers: the jobs' default parallelism.
        java_options: The distribution's own JVM options (flink_java_options).
    """
    java_options = f'{java_options} -XX:+IgnoreUnrecognizedVMOptions'.strip()
    return {
        'jobmanager.rpc.address': '127.0.0.1',
        'jobmanager.rpc.port': rpc_port,
        'jobmanager.bind-host': '127.0.0.1',
        'jobmanager.memory.process.size': '1000m',
        'rest.address': '127.0.0.1',
        'rest.bind-address': '127.0.0.1',
        'rest.port': rest_port,
        'taskmanager.host': '127.0.0.1',
        'taskmanager.bind-host': '127.0.0.1',
        'taskmanager.numberOfTaskSlots': 1,
        # The TaskManager's size follows from these (Flink adds its
        # framework's heap and off-heap, metaspace and JVM overhead).
        'taskmanager.memory.task.heap.size': f'{FLINK_TASK_HEAP_MB}m',
        # A Beam job's many shuffles need more buffers than the default
        # fraction of a small TaskManager gives ("Insufficient number of
        # network buffers").
        'taskmanager.memory.network.min': '320m',
        'taskmanager.memory.network.max': '320m',
        # Beam's GroupByKeys sort in it: each its share (see above).
        'taskmanager.memory.managed.size': f'{FLINK_MANAGED_MB}m',
        'taskmanager.memory.segment-size': f'{FLINK_PAGE_BYTES // 1024}kb',
        'taskmanager.memory.task.off-heap.size': f'{FLINK_TASK_OFF_HEAP_MB}m',
        # Each sort-merge shuffle partition takes 512 buffers by default;
        # TFDV's and tf.Transform's jobs open dozens at once.
        'taskmanager.network.sort-shuffle.min-buffers': 64,
        'parallelism.default': workers,
        'io.tmp.dirs': os.path.join(cluster_dir, 'tmp'),
        'web.tmpdir': os.path.join(cluster_dir, 'tmp'),
        'env.java.opts.all': java_options,
        'env.java.opts.taskmanager': FLINK_TASKMANAGER_JAVA_OPTIONS,
    }


def flink_java_options(home: str) -> str:
    """`env.java.opts.all` of the Flink distribution's own config.yaml.

    Flink's `--add-opens` for Java 17: without them Flink fails where it
    reflects into the JDK (e.g. while reporting a task's OutOfMemoryError,
    which then shuts the TaskManager down).
    """
    import yaml  # pylint: disable=import-outside-toplevel
    with open(os.path.join(home, 'conf', 'config.yaml'), encoding='utf-8') as f:
        config = yaml.safe_load(f) or {}
    try:
        return str(config['env']['java']['opts']['all'])
    except (KeyError, TypeError):
        return str(config.get('env.java.opts.all', ''))


def _start_flink(cluster: _Cluster, python: str, workers: int) -> dict:
    home = flink_home()
    conf = os.path.join(cluster.dir, 'conf')
    os.makedirs(conf, exist_ok=True)
    rpc, rest = free_port(), free_port()
    settings = flink_settings(cluster.dir, rpc, rest, workers,
                              flink_java_options(home))
    with open(os.path.join(conf, 'config.yaml'), 'w', encoding='utf-8') as f:
        for key, value in settings.items():
            f.write(f'{key}: {json.dumps(value)}\n')
    for name in ('log4j-console.properties', 'log4j.properties'):
        with open(os.path.join(home, 'conf', name),
                  'rb') as src, open(os.path.join(conf, name), 'wb') as dst:
            dst.write(src.read())
    env = {
        **_java_env(), 'FLINK_CONF_DIR': conf,
        'FLINK_LOG_DIR': os.path.join(cluster.dir, 'log'),
        'FLINK_PID_DIR': cluster.dir,
        'FLINK_HOME': home
    }
    deadline = time.monotonic() + _STARTUP_SECONDS
    cluster.spawn(
        'jobmanager',
        [os.path.join(home, 'bin', 'jobmanager.sh'), 'start-foreground'], env)
    for index in range(workers):
        cluster.spawn(
            f'taskmanager-{index}',
            [os.path.join(home, 'bin', 'taskmanager.sh'), 'start-foreground'],
            env)

    def all_taskmanagers() -> bool:
        try:
            overview = _http_json(f'http://127.0.0.1:{rest}/overview')
        except (OSError, ValueError):
            return False
        return overview.get('taskmanagers', 0) >= workers

    cluster.wait_for(f'{workers} TaskManagers registered', all_taskmanagers,
                     deadline)
    job = _start_job_server(cluster, [], [
        'org.apache.beam.runners.flink.FlinkJobServerDriver',
        f'--flink-master=127.0.0.1:{rest}', f'--flink-conf-dir={conf}'
    ], deadline)
    pool = _start_worker_pool(cluster, python, deadline)
    return {
        'rest': f'127.0.0.1:{rest}',
        'job_endpoint': job,
        'worker_pool': pool,
        'parallelism': workers
    }


# Spark 3.5 on Java 17 needs these opened (Spark's own launcher adds them to
# its JVMs, not to the job server, which is Spark's driver here).
_JAVA17_OPENS = [
    f'--add-opens=java.base/{package}=ALL-UNNAMED'
    for package in ('java.lang', 'java.lang.invoke', 'java.lang.reflect',
                    'java.io', 'java.net', 'java.nio', 'java.util',
                    'java.util.concurrent', 'java.util.concurrent.atomic',
                    'sun.nio.ch', 'sun.nio.cs', 'sun.security.action',
                    'sun.util.calendar')
]


def _start_spark(cluster: _Cluster, python: str, workers: int) -> dict:
    home = spark_home()
    port, ui = free_port(), free_port()
    env = {
        **_java_env(),
        'SPARK_HOME': home,
        'SPARK_LOCAL_IP': '127.0.0.1',
        'SPARK_LOG_DIR': os.path.join(cluster.dir, 'log'),
        'SPARK_WORKER_DIR': os.path.join(cluster.dir, 'work'),
        'SPARK_LOCAL_DIRS': os.path.join(cluster.dir, 'tmp'),
        'SPARK_NO_DAEMONIZE': '1',
    }
    spark_class = os.path.join(home, 'bin', 'spark-class')
    deadline = time.monotonic() + _STARTUP_SECONDS
    cluster.spawn('master', [
        spark_class, 'org.apache.spark.deploy.master.Master', '--host',
        '127.0.0.1', '--port',
        str(port), '--webui-port',
        str(ui)
    ], env)
    master = f'spark://127.0.0.1:{port}'
    for index in range(workers):
        cluster.spawn(f'worker-{index}', [
            spark_class, 'org.apache.spark.deploy.worker.Worker', '--host',
            '127.0.0.1', '--port',
            str(free_port()), '--webui-port',
            str(free_port()), '--cores', '1', '--memory', f'{SPARK_WORKER_MB}m',
            master
        ], env)

    def all_workers() -> bool:
        try:
            status = _http_json(f'http://127.0.0.1:{ui}/json/')
        except (OSError, ValueError):
            return False
        return status.get('aliveworkers', 0) >= workers

    cluster.wait_for(f'{workers} Spark workers alive', all_workers, deadline)
    job = _start_job_server(cluster, [
        *_JAVA17_OPENS, *(f'-D{key}={value}'
                          for key, value in spark_driver_properties().items())
    ], [
        'org.apache.beam.runners.spark.SparkJobServerDriver',
        f'--spark-master-url={master}'
    ], deadline)
    pool = _start_worker_pool(cluster, python, deadline)
    return {
        'rest': f'127.0.0.1:{ui}',
        'master': master,
        'job_endpoint': job,
        'worker_pool': pool,
        'parallelism': workers
    }


def _start_job_server(cluster: _Cluster, jvm_options: List[str],
                      main: List[str], deadline: float) -> str:
    """Beam's job server (`main`: its class and flags); its HOST:PORT."""
    job, artifact, expansion = free_port(), free_port(), free_port()
    cluster.spawn('job-server', [
        'java', '-Xmx1g', *jvm_options,
        '-Djava.io.tmpdir=' + os.path.join(cluster.dir, 'tmp'), '-cp',
        job_server_classpath(cluster.engine), main[0], *main[1:],
        '--job-host=127.0.0.1', f'--job-port={job}',
        f'--artifact-port={artifact}', f'--expansion-port={expansion}',
        '--artifacts-dir=' + os.path.join(cluster.dir, 'artifacts')
    ], _java_env())
    address = f'127.0.0.1:{job}'
    cluster.wait_for('Beam job server', lambda: port_answers(address), deadline)
    return address


def check_worker_python(python: str) -> None:
    """Checks that `python` imports Beam's SDK worker and this project.

    A pool whose workers cannot start would fail every job.

    Raises:
        EngineError: naming the interpreter and the import that failed.
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
        raise EngineError(f'{python}: cannot run Beam SDK workers: '
                          f'{error.strerror}') from error
    if check.returncode:
        lines = (check.stderr or check.stdout).strip().splitlines()
        raise EngineError(f'{python}: cannot run Beam SDK workers: '
                          f'{lines[-1] if lines else check.returncode}')


def _start_worker_pool(cluster: _Cluster, python: str, deadline: float) -> str:
    """The Beam SDK worker pool of `python`; its HOST:PORT."""
    port = free_port()
    cluster.spawn(
        'worker-pool',
        [python, '-m', 'pipeline.engines', '--worker-pool',
         str(port)], _worker_env(python))
    address = f'127.0.0.1:{port}'
    cluster.wait_for('SDK worker pool', lambda: port_answers(address), deadline)
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


def start(engine: str,
          state_dir: Optional[str] = None,
          python: Optional[str] = None,
          workers: int = WORKERS) -> dict:
    """Starts a local `engine` cluster, job server and worker pool.

    Its `workers` TaskManagers or Spark workers have one slot or core each:
    the parallelism of its jobs.

    Returns:
        Its state (pids, ports, endpoints), also written to state_path().

    Raises:
        EngineError: artifacts missing, a process that did not start, or a
            cluster already running in `state_dir`.
    """
    _check_artifacts(engine)
    state_dir = os.path.abspath(state_dir or DEFAULT_STATE_DIR)
    path = state_path(engine, state_dir)
    if os.path.exists(path):
        state = read_state(engine, state_dir)
        if any(_alive(pid) for pid in state['pids'].values()):
            raise EngineError(f'{path}: a {engine} cluster is running '
                              f'(python -m pipeline engine stop {engine})')
    python = python or sys.executable
    check_worker_python(python)
    cluster = _Cluster(engine, state_dir)
    try:
        starter = _start_flink if engine == 'flink' else _start_spark
        state = starter(cluster, python, workers)
    except BaseException:
        cluster.kill()
        raise
    state.update(engine=engine,
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
    path = state_path(engine, state_dir)
    state = read_state(engine, state_dir)
    ended = []
    for pid in state['pids'].values():
        if _alive(pid):
            _kill_group(pid)
            ended.append(pid)
    os.remove(path)
    return ended


@contextlib.contextmanager
def running(engine: str,
            state_dir: str,
            workers: int = WORKERS) -> Iterator[dict]:
    """A started cluster, stopped on leaving."""
    state = start(engine, state_dir, workers=workers)
    try:
        yield state
    finally:
        stop(engine, state_dir)


class WorkerPool:
    """Beam's SDK worker pool on 127.0.0.1, running this Python.

    Beam's SDK worker pool (worker_pool_main), on 127.0.0.1, whose workers run
    this Python and report a worker that cannot start.

    Beam's own pool starts `python -c ...` from PATH and answers at once; a
    worker that then fails to import leaves the job waiting for it until a
    gRPC deadline, minutes later. Here each worker prints a line once Beam's
    SDK harness has imported, and StartWorker answers only then, or with the
    worker's last output line as the error, which fails the job at once.
    """

    def __init__(self, python: str = sys.executable):
        self.python = python
        self.workers: List[subprocess.Popen] = []

    def start_worker(self, control: str, worker_id: str) -> str:
        """Starts one SDK worker; '' or what went wrong."""
        code = ('from pipeline.engines import run_sdk_worker; '
                f'run_sdk_worker({control!r}, {worker_id!r})')
        process = subprocess.Popen(
            [self.python, '-X', 'faulthandler', '-u', '-c', code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True)
        self.workers.append(process)
        print(f'worker {worker_id} pid {process.pid}', flush=True)
        output = []
        for line in process.stdout:
            if line.strip() == _WORKER_READY:
                threading.Thread(target=_drain,
                                 args=(process, worker_id),
                                 daemon=True).start()
                return ''
            output.append(line.rstrip())
        process.wait()
        return (f'Beam SDK worker ({self.python}) exited '
                f'{process.returncode} before starting: '
                f'{output[-1] if output else "(no output)"}')

    def stop_worker(self, worker_id: str) -> None:
        """Lets the worker end by itself.

        Each TaskManager or executor numbers its workers from "1-1", so two
        of them ask this pool for (and later stop) workers of the same id:
        killing by id would kill another's live worker mid-bundle. A worker
        ends when its runner closes its control channel; the pool kills any
        left when it stops.
        """
        del worker_id

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
        for process in self.workers:
            process.wait()


def run_sdk_worker(control: str, worker_id: str) -> None:
    """Runs one Beam SDK worker (a WorkerPool's process) until it is stopped.

    Its output to the runner is queued without bound. Beam 2.74's SDK waits
    once 100 MB of a worker's output is queued (apache/beam#38407), while our
    2.62 job servers' runners read a bundle's output past their first 100
    messages only after the SDK reports the bundle done
    (`SdkHarnessClient.ActiveBundle.close`): a bundle whose output outgrows
    both waits on the runner, which waits on it. Flink and Spark run a
    stage's whole partition as one bundle, so Transform's stage at 280k
    images stopped for good on both engines. Unbounded, the SDK finishes
    the bundle and the runner then reads the rest.
    """
    from apache_beam.runners.worker import sdk_worker  # pylint: disable=import-outside-toplevel
    queue_output_without_bound()
    print(_WORKER_READY, flush=True)
    sdk_worker.SdkHarness(control, worker_id=worker_id).run()


def queue_output_without_bound() -> None:
    """This process's Beam data channels queue their output without bound."""
    from apache_beam.runners.worker import data_plane  # pylint: disable=import-outside-toplevel
    from apache_beam.utils import byte_limited_queue  # pylint: disable=import-outside-toplevel
    channel_class = data_plane._GrpcDataChannel  # pylint: disable=protected-access
    bounded_init = channel_class.__init__

    def unbounded_init(channel, *args, **kwargs):
        bounded_init(channel, *args, **kwargs)
        channel._to_send = byte_limited_queue.ByteLimitedQueue()  # pylint: disable=protected-access

    channel_class.__init__ = unbounded_init


def _drain(process: subprocess.Popen, worker_id: str) -> None:
    """Copies a worker's output to the pool's, then its exit status."""
    for line in process.stdout:
        sys.stdout.write(line)
    sys.stdout.flush()
    print(f'worker {worker_id} pid {process.pid} exited {process.wait()}',
          flush=True)


def serve_worker_pool(port: int) -> None:
    """Serves WorkerPool's gRPC service on 127.0.0.1:`port` until killed."""
    # pylint: disable=import-outside-toplevel
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    pool = WorkerPool()

    class Servicer(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):

        def StartWorker(self, request, context):  # noqa: N802 (gRPC's name)
            del context
            return beam_fn_api_pb2.StartWorkerResponse(error=pool.start_worker(
                request.control_endpoint.url, request.worker_id))

        def StopWorker(self, request, context):  # noqa: N802
            del context
            pool.stop_worker(request.worker_id)
            return beam_fn_api_pb2.StopWorkerResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        Servicer(), server)
    server.add_insecure_port(f'127.0.0.1:{port}')
    server.start()

    def terminate(signum, frame):
        del signum, frame
        pool.stop_all()
        server.stop(0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, terminate)
    print(f'worker pool at 127.0.0.1:{port}', flush=True)
    server.wait_for_termination()


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
                        choices=CLUSTER_ENGINES,
                        help='the engine whose local cluster to act on')
    engine.add_argument('--state-dir',
                        default=DEFAULT_STATE_DIR,
                        help='where the pids and ports are kept (default '
                        f'{DEFAULT_STATE_DIR})')
    engine.add_argument('--python',
                        help='the Python of the SDK workers (default: this '
                        'one)')
    engine.add_argument('--workers',
                        type=int,
                        default=WORKERS,
                        help='TaskManagers or Spark workers, one slot or '
                        f'core each: the jobs\' parallelism (default '
                        f'{WORKERS})')


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
    state = read_state(args.engine, args.state_dir)
    return {
        **state, 'alive': {
            name: _alive(pid) for name, pid in state['pids'].items()
        }
    }


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


if __name__ == '__main__':
    _parser = argparse.ArgumentParser()
    _parser.add_argument('--worker-pool', type=int, required=True)
    serve_worker_pool(_parser.parse_args().worker_pool)
