"""Local Apache Flink and Apache Spark clusters for the pipeline's Beam steps.

    python -m pipeline engine start flink|spark [--state-dir DIR]
    python -m pipeline engine stop flink|spark [--state-dir DIR]

`start` lays out a cluster on 127.0.0.1 from the artifacts `make engines`
fetched (engines.ENGINES_DIR): a Flink JobManager and two TaskManagers, or
a Spark master and two workers; Beam's job server for that engine; and a
Beam SDK worker pool (pipeline/sdk_worker_pool.py, an EXTERNAL environment)
running this project's Python. Their pids and ports go to
`<state-dir>/<engine>.json` (engines.read_state); `stop` ends them all.

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
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional

from common import environment
from pipeline import engines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STARTUP_SECONDS = 180.0
# A Spark executor's heap: Beam's portable Spark runner holds each
# partition's output of a fused stage in it (apache/beam#23852 fixed only
# the classic runner), and Transform's stage at 280k images outgrew 1 GB.
SPARK_EXECUTOR_HEAP_MB = 3072
# What each Spark worker offers: one executor and Spark's overhead.
SPARK_WORKER_MB = SPARK_EXECUTOR_HEAP_MB + 512


def flink_home() -> str:
    """Where the Flink distribution is unpacked."""
    return os.path.join(engines.ENGINES_DIR, f'flink-{engines.FLINK_VERSION}')


def spark_home() -> str:
    """Where the Spark distribution is unpacked."""
    return os.path.join(engines.ENGINES_DIR, f'spark-{engines.SPARK_VERSION}')


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
                os.path.join(engines.ENGINES_DIR, 'spark-job-server',
                             'guava-*.jar'))))


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
    paths = [os.path.join(engines.ENGINES_DIR, f'{engine}-job-server', '*')]
    if engine == 'spark':
        paths.append(os.path.join(spark_home(), 'jars', '*'))
    return ':'.join(paths)


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


def _reports_at_least(url: str, key: str, count: int) -> bool:
    """Whether the REST API at `url` answers with `key` at least `count`."""
    try:
        return engines.http_json(url).get(key, 0) >= count
    except (OSError, ValueError):
        return False


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
    for path in (home, os.path.join(engines.ENGINES_DIR,
                                    f'{engine}-job-server')):
        if not os.path.isdir(path):
            raise engines.EngineError(
                f'{path}: missing; `make engines` fetches it')


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
# output until the bundle is done (sdk_worker_pool.run_sdk_worker); with
# 344m (what a 1.4 GB TaskManager leaves) Transform's job at 70k rows ran
# out ("Java heap space" parsing BeamFnApi.Elements in a gRPC thread), with
# 1 GB at 280k rows.
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
    rpc, rest = engines.free_port(), engines.free_port()
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

    cluster.wait_for(
        f'{workers} TaskManagers registered', lambda: _reports_at_least(
            f'http://127.0.0.1:{rest}/overview', 'taskmanagers', workers),
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
    port, ui = engines.free_port(), engines.free_port()
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
            str(engines.free_port()), '--webui-port',
            str(engines.free_port()), '--cores', '1', '--memory',
            f'{SPARK_WORKER_MB}m', master
        ], env)

    cluster.wait_for(
        f'{workers} Spark workers alive', lambda: _reports_at_least(
            f'http://127.0.0.1:{ui}/json/', 'aliveworkers', workers), deadline)
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
    job, artifact, expansion = engines.free_port(), engines.free_port(
    ), engines.free_port()
    cluster.spawn('job-server', [
        'java', '-Xmx1g', *jvm_options,
        '-Djava.io.tmpdir=' + os.path.join(cluster.dir, 'tmp'), '-cp',
        job_server_classpath(cluster.engine), main[0], *main[1:],
        '--job-host=127.0.0.1', f'--job-port={job}',
        f'--artifact-port={artifact}', f'--expansion-port={expansion}',
        '--artifacts-dir=' + os.path.join(cluster.dir, 'artifacts')
    ], _java_env())
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


def _start_worker_pool(cluster: _Cluster, python: str, deadline: float) -> str:
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
    path = engines.state_path(engine, state_dir)
    state = engines.read_state(engine, state_dir)
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
