"""A local Apache Spark cluster for Beam's Spark runner: settings and start.

Beam's job server is Spark's driver here; deploy/spark/spark-cluster.yaml
gives a Kubernetes cluster's job server the same settings
(spark_driver_properties).
"""

import glob
import os
import time
from typing import Dict

from pipeline import cluster_processes
from pipeline import engines

# A Spark executor's heap: Beam's portable Spark runner holds each
# partition's output of a fused stage in it (apache/beam#23852 fixed only
# the classic runner), and Transform's stage at 280k images outgrew 1 GB.
SPARK_EXECUTOR_HEAP_MB = 3072
# What each Spark worker offers: one executor and Spark's overhead.
SPARK_WORKER_MB = SPARK_EXECUTOR_HEAP_MB + 512


def home() -> str:
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
                os.path.join(cluster_processes.job_server_dir('spark'),
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


def job_server_classpath() -> str:
    """Beam's Spark job server's jars (`make engines`), then Spark's."""
    return ':'.join((cluster_processes.job_server_jars('spark'),
                     os.path.join(home(), 'jars', '*')))


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


def start(cluster: cluster_processes.Cluster, python: str,
          workers: int) -> dict:
    """The master, `workers` workers, job server and worker pool.

    Returns:
        Their addresses (engine_clusters.start adds pids and parallelism).
    """
    spark = home()
    port, ui = engines.free_port(), engines.free_port()
    env = {
        **cluster_processes.java_env(),
        'SPARK_HOME': spark,
        'SPARK_LOCAL_IP': '127.0.0.1',
        'SPARK_LOG_DIR': os.path.join(cluster.dir, 'log'),
        'SPARK_WORKER_DIR': os.path.join(cluster.dir, 'work'),
        'SPARK_LOCAL_DIRS': os.path.join(cluster.dir, 'tmp'),
        'SPARK_NO_DAEMONIZE': '1',
    }
    spark_class = os.path.join(spark, 'bin', 'spark-class')
    deadline = time.monotonic() + cluster_processes.STARTUP_SECONDS
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
        f'{workers} Spark workers alive',
        lambda: cluster_processes.reports_at_least(
            f'http://127.0.0.1:{ui}/json/', 'aliveworkers', workers), deadline)
    job = cluster_processes.start_job_server(cluster, job_server_classpath(), [
        *_JAVA17_OPENS, *(f'-D{key}={value}'
                          for key, value in spark_driver_properties().items())
    ], [
        'org.apache.beam.runners.spark.SparkJobServerDriver',
        f'--spark-master-url={master}'
    ], deadline)
    pool = cluster_processes.start_worker_pool(cluster, python, deadline)
    return {
        'rest': f'127.0.0.1:{ui}',
        'master': master,
        'job_endpoint': job,
        'worker_pool': pool
    }
