"""A local Apache Flink cluster for Beam's Flink runner: settings and start.

Each memory setting below is one the pipeline's jobs needed, with the reason
(docs/engines.md); deploy/flink/flink-cluster.yaml gives a Kubernetes
cluster the same (flink_settings).
"""

import json
import os
import time
from typing import Dict

from pipeline import cluster_processes
from pipeline import engines


def home() -> str:
    """Where the Flink distribution is unpacked."""
    return os.path.join(engines.ENGINES_DIR, f'flink-{engines.FLINK_VERSION}')


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


def start(cluster: cluster_processes.Cluster, python: str,
          workers: int) -> dict:
    """The JobManager, `workers` TaskManagers, job server and worker pool.

    Returns:
        Their addresses (engine_clusters.start adds pids and parallelism).
    """
    flink = home()
    conf = os.path.join(cluster.dir, 'conf')
    os.makedirs(conf, exist_ok=True)
    rpc, rest = engines.free_port(), engines.free_port()
    settings = flink_settings(cluster.dir, rpc, rest, workers,
                              flink_java_options(flink))
    with open(os.path.join(conf, 'config.yaml'), 'w', encoding='utf-8') as f:
        for key, value in settings.items():
            f.write(f'{key}: {json.dumps(value)}\n')
    for name in ('log4j-console.properties', 'log4j.properties'):
        with open(os.path.join(flink, 'conf', name),
                  'rb') as src, open(os.path.join(conf, name), 'wb') as dst:
            dst.write(src.read())
    env = {
        **cluster_processes.java_env(), 'FLINK_CONF_DIR': conf,
        'FLINK_LOG_DIR': os.path.join(cluster.dir, 'log'),
        'FLINK_PID_DIR': cluster.dir,
        'FLINK_HOME': flink
    }
    deadline = time.monotonic() + cluster_processes.STARTUP_SECONDS
    cluster.spawn(
        'jobmanager',
        [os.path.join(flink, 'bin', 'jobmanager.sh'), 'start-foreground'], env)
    for index in range(workers):
        cluster.spawn(
            f'taskmanager-{index}',
            [os.path.join(flink, 'bin', 'taskmanager.sh'), 'start-foreground'],
            env)

    cluster.wait_for(
        f'{workers} TaskManagers registered',
        lambda: cluster_processes.reports_at_least(
            f'http://127.0.0.1:{rest}/overview', 'taskmanagers', workers),
        deadline)
    job = cluster_processes.start_job_server(
        cluster, cluster_processes.job_server_jars('flink'), [], [
            'org.apache.beam.runners.flink.FlinkJobServerDriver',
            f'--flink-master=127.0.0.1:{rest}', f'--flink-conf-dir={conf}'
        ], deadline)
    pool = cluster_processes.start_worker_pool(cluster, python, deadline)
    return {
        'rest': f'127.0.0.1:{rest}',
        'job_endpoint': job,
        'worker_pool': pool
    }
