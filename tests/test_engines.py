"""The Beam steps on real engines (docs/engines.md): a local Flink cluster
(JobManager, two TaskManagers) and a Spark standalone cluster (master, two
workers), each with Beam's job server and an SDK worker pool of this venv,
started and stopped here; the rnn pipeline on Flink and the convnet pipeline
on Spark, through the command line, each to a pushed model, compared with the
same pipeline run in process.

The cluster runs need `make engines`; without its artifacts they skip.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import beam_runners
from pipeline import cli
from pipeline import engine_clusters
from pipeline import engine_jobs
from pipeline import engines
from pipeline import flink_cluster
from pipeline import sdk_worker_pool
from pipeline import spark_cluster
from serving import client as client_lib
from tests import datasets
from tests.serving import server_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _epochs(count):
    """`--set`s that train `count` epochs, however few steps they are."""
    return ('--set', 'min_train_steps=0', '--set', f'epochs={count}')


# Tiny budgets: the Beam steps are checked, not the accuracy.
TINY = _epochs(1)
# Epochs after which two trainings of a family on the test's data answer
# alike whatever the order of their examples (an engine writes them in its
# own order). Measured over seeds 0-3: after one epoch the convnet's served
# answers agreed on 0.62-0.88 of 60 test examples, after 5 on all of them;
# the rnn's on 0.0-0.67 of 30 after one epoch, 0.73-0.83 after 5 and
# 0.93-1.0 after 20, for the same Trainer time (about 15 s).
CONVERGED_EPOCHS = {'convnet': 5, 'rnn': 20}


def _cli(*args, timeout=1800):
    return subprocess.run([sys.executable, '-m', 'pipeline', *args],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          check=False)


def _summary(process):
    lines = [
        line for line in process.stdout.splitlines() if line.startswith('{')
    ]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    return json.loads(lines[-1])


def _errors(process):
    return [
        line for line in process.stderr.splitlines()
        if line.startswith('error:')
    ]


# Without a cluster -------------------------------------------------------


def test_beam_engine_expands_to_the_portable_runner_and_the_pool():
    flags = engines.beam_args('flink', '10.0.0.5:8099')
    assert flags[:4] == [
        '--runner=PortableRunner', '--job_endpoint=10.0.0.5:8099',
        '--environment_type=EXTERNAL',
        f'--environment_config={engines.REMOTE_WORKER_POOL}'
    ]
    assert '--parallelism=2' in flags
    assert engines.beam_args('local') == []
    assert beam_runners.beam_args_problem(flags) is None
    # The pool's workers run this project: TFX ships no sdist of itself.
    assert beam_runners.beam_runs_locally(flags)
    # Each run `schedule` starts is given the switch, not its expansion.
    args = cli.build_parser().parse_args([
        'schedule', '--model', 'rnn', '--cron', '0 * * * *', '--beam-engine',
        'spark', '--engine-address', '10.0.0.5:8099'
    ])
    run_flags = cli._run_flags(args)  # pylint: disable=protected-access
    assert '--beam-engine=spark' in run_flags
    assert '--engine-address=10.0.0.5:8099' in run_flags


def test_a_remote_flink_is_cancelled_at_its_flink_master(tmp_path):
    # `--engine-address` alone says nothing of the Flink cluster behind the
    # job server: no REST address to cancel a job at.
    remote = engines.beam_args('flink', '10.0.0.5:8099')
    assert engine_jobs.flink_rest_of(remote, str(tmp_path)) is None
    assert engine_jobs.flink_rest_of(
        remote + ['--flink_master=http://10.0.0.6:8081/'],
        str(tmp_path)) == '10.0.0.6:8081'
    assert engine_jobs.flink_rest_of(remote + ['--flink_master=[auto]'],
                                     str(tmp_path)) is None


def test_an_engine_not_running_is_one_line_before_any_component(tmp_path):
    port = engines.free_port()  # Nothing listens there.
    home = tmp_path / 'home'
    process = _cli('run', '--model', 'rnn', '--home', str(home),
                   '--beam-engine', 'flink', '--engine-address',
                   f'127.0.0.1:{port}')
    assert process.returncode == 2, process.stderr
    assert _errors(process) == [
        f'error: 127.0.0.1:{port}: no Beam job server answers (is the engine '
        'running? python -m pipeline engine start ...)'
    ]
    assert not home.exists()  # No component ran.
    process = _cli('run', '--model', 'rnn', '--home',
                   str(home), '--beam-engine', 'spark', '--engine-state-dir',
                   str(tmp_path))
    assert process.returncode == 2
    assert _errors(process) == [
        f'error: {tmp_path}/spark.json: no spark cluster started here '
        '(python -m pipeline engine start spark)'
    ]


def test_workers_that_cannot_start_are_one_line_not_a_hang():
    # The interpreter Beam's own pool would have used: no Beam there.
    pool = sdk_worker_pool.WorkerPool(python='/usr/bin/python3')
    error = pool.start_worker('127.0.0.1:1', 'worker-1')
    assert error.startswith('Beam SDK worker (/usr/bin/python3) exited 1 '
                            'before starting: ModuleNotFoundError')
    process = _cli('engine', 'start', 'flink', '--python', '/usr/bin/python3',
                   '--state-dir', '/nonexistent/engines')
    assert process.returncode == 2
    assert _errors(process) == [
        'error: /usr/bin/python3: cannot run Beam SDK workers: '
        "ModuleNotFoundError: No module named 'apache_beam'"
    ] or 'missing; `make engines` fetches it' in process.stderr


def test_engine_jobs_are_kept_with_their_worker_pids_and_fail_in_one_line():
    """Through Beam's own Python job service (a real Job API server)."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    from components.example_gen import reading  # pylint: disable=import-outside-toplevel
    port = engines.free_port()
    service = subprocess.Popen([
        sys.executable, '-m',
        'apache_beam.runners.portability.local_job_service_main', '--port',
        str(port)
    ],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        _wait_for(lambda: engines.port_answers(f'127.0.0.1:{port}'),
                  'job service', service, 120)
        options = beam.options.pipeline_options.PipelineOptions([
            '--runner=PortableRunner', f'--job_endpoint=127.0.0.1:{port}',
            '--environment_type=LOOPBACK'
        ])
        jobs = engine_jobs.BeamJobs()
        with jobs.tracking():
            with beam.Pipeline(options=options) as pipeline:
                reading.read_items(pipeline, ['a', 'b'],
                                   lambda item: [item.encode()])
            with pytest.raises(engine_jobs.EngineJobFailed) as failed:
                with beam.Pipeline(options=options) as pipeline:
                    _ = (pipeline | beam.Create([0]) |
                         beam.Map(lambda x: 1 // x))
        [done, failing] = jobs.jobs
        assert done['state'] == 'DONE'
        assert done['sdk_worker_pids'] == [os.getpid()]  # LOOPBACK: here.
        assert failing['state'] == 'FAILED'
        message = str(failed.value)
        assert message.startswith(f'Beam job {failing["job_id"]} ended '
                                  'FAILED on the engine: ')
        assert '\n' not in message
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()


def test_cache_plan_streams_a_split_over_the_budget():
    from models import training  # pylint: disable=import-outside-toplevel
    sizes = {'train': 600 * 2**10, 'eval': 300 * 2**10}
    plan = training.cache_plan({'cache_memory_mb': 1}, sizes)
    # Parsed at twice the bytes: 1.2 MiB of training examples do not fit.
    assert plan['cached_splits'] == {'train': False, 'eval': True}
    plan = training.cache_plan({'cache_memory_mb': 3}, sizes)
    assert plan['cached_splits'] == {'train': True, 'eval': True}
    plan = training.cache_plan({
        'cache_memory_mb': 3,
        'cache_examples': False
    }, sizes)
    assert plan['cached_splits'] == {'train': False, 'eval': False}
    assert training.cache_plan({}, sizes)['cache_budget_bytes'] > 0


def _mebibytes(size: str) -> int:
    """Flink's `1504m` / `32kb` as bytes."""
    number, unit = re.fullmatch(r'(\d+)(m|kb)', size).groups()
    return int(number) * (2**20 if unit == 'm' else 2**10)


def test_flinks_sort_buffers_hold_tfdvs_largest_record_of_an_image():
    # pylint: disable=import-outside-toplevel
    from apache_beam.transforms import combiners
    from tensorflow_data_validation import StatsOptions
    settings = flink_cluster.flink_settings('/tmp/cluster', 1, 2, 2)
    # What Flink gives one sorter: the slot's managed memory over the job's
    # memory consumers, in whole pages, less the pages it keeps aside.
    page = _mebibytes(settings['taskmanager.memory.segment-size'])
    slot_pages = (_mebibytes(settings['taskmanager.memory.managed.size']) //
                  settings['taskmanager.numberOfTaskSlots'] // page)
    record_room = (slot_pages // flink_cluster.FLINK_MEMORY_CONSUMERS -
                   flink_cluster.FLINK_SORTER_PAGES) * page
    # The record that failed the convnet's StatisticsGen on Flink: a
    # bundle's top-k accumulator of the 28x28 images (TFDV's rank histogram
    # keeps its 1000 most frequent values), as Beam encodes it.
    top = combiners.TopCombineFn(StatsOptions().num_rank_histogram_buckets)
    accumulator = top.create_accumulator()
    for image in range(2000):
        accumulator = top.add_input(accumulator,
                                    (1, image.to_bytes(784, 'big')))
    record = len(top.get_accumulator_coder().encode(top.compact(accumulator)))
    assert record > 700_000
    assert record_room >= record, (record_room, record)


# An SDK worker's Beam data channel whose output nothing takes (as Beam
# 2.62's runners take none past their first 100 messages until the bundle
# is done), written 160 MB.
_WRITE_TO_A_RUNNER_NOT_READING = """
import sys
from apache_beam.runners.worker import data_plane
from pipeline import sdk_worker_pool

if sys.argv[1] == 'unbounded':
    sdk_worker_pool.queue_output_without_bound()
channel = data_plane._GrpcDataChannel()
stream = channel.output_stream('bundle-1', 'transform-1')
for _ in range(16):
    stream.write(b'x' * (10 << 20))
stream.close()
print('bundle output queued', flush=True)
"""


def test_an_sdk_workers_output_is_queued_for_a_runner_that_reads_it_late():
    """Our SDK workers queue a bundle's output past Beam 2.74's 100 MB bound
    (`run_sdk_worker`): our job servers' runners read it only after the
    bundle is done, and Transform at 280k images waited forever on both
    engines. 160 MB written towards a runner that reads none of it."""
    worker = subprocess.Popen(
        [sys.executable, '-c', _WRITE_TO_A_RUNNER_NOT_READING, 'unbounded'],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True)
    try:
        # A liveness deadline only: the writes take about a second.
        output, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert 'bundle output queued' in output, output[-2000:]


def test_deployments_of_the_engines_are_valid_yaml_naming_the_image():
    with open(os.path.join(REPO, 'deploy', 'trainer-tfjob.yaml'),
              encoding='utf-8') as f:
        trainer = f.read()
    for name, kinds in (('flink-cluster.yaml', {'Deployment', 'Service'}),
                        ('spark-cluster.yaml', {'Deployment', 'Service'})):
        path = os.path.join(REPO, 'deploy', name.split('-')[0], name)
        with open(path, encoding='utf-8') as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        assert {d['kind'] for d in documents} >= kinds, name
        images = {
            c['image'] for d in documents if d['kind'] == 'Deployment'
            for c in d['spec']['template']['spec']['containers']
        }
        project = [i for i in images if i.split(':')[0] in trainer]
        assert project, (name, images)  # The worker pool runs our image.
        pools = [
            c for d in documents if d['kind'] == 'Deployment'
            for c in d['spec']['template']['spec']['containers']
            if 'pipeline.sdk_worker_pool' in ' '.join(c.get('args', []))
        ]
        assert pools, name


def test_the_flink_deployments_taskmanagers_have_the_local_clusters_memory():
    """deploy/flink's TaskManagers carry the memory settings the local
    clusters run the pipelines' Beam jobs with
    (flink_cluster.flink_settings): a size alone
    (`taskmanager.memory.process.size`) left 350 MB of task heap, short of
    what Transform's job needs at 70k rows; and their JVM options (exit
    when the heap runs out: a job that fails, not one that hangs)."""
    path = os.path.join(REPO, 'deploy', 'flink', 'flink-cluster.yaml')
    with open(path, encoding='utf-8') as f:
        [taskmanager] = [
            d for d in yaml.safe_load_all(f)
            if d and d['kind'] == 'Deployment' and
            d['metadata']['name'] == 'flink-taskmanager'
        ]
    [container] = [
        c for c in taskmanager['spec']['template']['spec']['containers']
        if c['name'] == 'taskmanager'
    ]
    [properties] = [
        e['value'] for e in container['env'] if e['name'] == 'FLINK_PROPERTIES'
    ]
    deployed = yaml.safe_load(properties)
    local = flink_cluster.flink_settings('/cluster', 6123, 8081, workers=2)
    memory = {
        key: value
        for key, value in local.items()
        if key.startswith(('taskmanager.memory.', 'taskmanager.network.',
                           'env.java.opts.taskmanager'))
    }
    assert len(memory) == 8, sorted(memory)
    assert {key: deployed.get(key) for key in memory} == memory
    assert 'taskmanager.memory.process.size' not in deployed


# The job servers' jars, which `make engines` (in `make setup`) fetches.
needs_job_servers = pytest.mark.skipif(
    not os.path.isdir(os.path.join(engines.ENGINES_DIR, 'spark-job-server')),
    reason='`make engines` has not fetched the job servers')


@needs_job_servers
def test_the_spark_deployment_gives_its_executors_the_local_clusters_settings():
    """deploy/spark's job server (Spark's driver) has the Spark settings
    the local cluster's runs with, the Guava jar by the same name, put there
    by its workers' init container, and its workers offer what an executor
    takes (at 1 GB, Transform's executors ran out of heap at 280k rows)."""
    path = os.path.join(REPO, 'deploy', 'spark', 'spark-cluster.yaml')
    with open(path, encoding='utf-8') as f:
        deployments = {
            d['metadata']['name']: d['spec']['template']['spec']
            for d in yaml.safe_load_all(f)
            if d and d['kind'] == 'Deployment'
        }
    [job_server] = deployments['beam-spark-job-server']['containers']
    [options] = [
        e['value']
        for e in job_server['env']
        if e['name'] == 'JAVA_TOOL_OPTIONS'
    ]
    deployed = dict(
        option[len('-D'):].split('=', 1) for option in options.split())
    local = spark_cluster.spark_driver_properties()
    assert deployed.keys() == local.keys()
    assert deployed['spark.executor.memory'] == local['spark.executor.memory']
    [jar] = deployed['spark.executor.extraClassPath'].split(':')
    assert [os.path.basename(jar)] == [
        os.path.basename(path)
        for path in local['spark.executor.extraClassPath'].split(':')
    ]
    worker = deployments['spark-worker']
    [fetch] = worker['initContainers']
    copied = dict(arg.split('=', 1) for arg in fetch['command'] if '=' in arg)
    name, version = copied['-Dartifact'].split(':')[1:]
    assert os.path.join(copied['-DoutputDirectory'],
                        f'{name}-{version}.jar') == jar
    [spark] = [c for c in worker['containers'] if c['name'] == 'worker']
    offered = spark['args'][spark['args'].index('--memory') + 1]
    assert offered == f'{spark_cluster.SPARK_WORKER_MB}m'
    assert any(
        m['mountPath'] == os.path.dirname(jar) for m in spark['volumeMounts'])


@needs_job_servers
def test_sparks_executors_put_a_guava_with_what_beams_gcs_connector_calls_first(
):
    """Spark's executors load its guava-14 before the job server's jars, and
    Beam's GCS connector, registered in every task, calls a Guava method
    added since: at 280k rows every attempt of a task failed
    (NoSuchMethodError). The executors' class path starts with the job
    server's Guava, which has it."""
    jars = spark_cluster.spark_executor_classpath().split(':')
    assert jars and all(os.path.isfile(jar) for jar in jars), jars
    signatures = subprocess.run([
        'javap', '-cp', ':'.join(jars), 'com.google.common.base.Preconditions'
    ],
                                capture_output=True,
                                text=True,
                                check=True).stdout
    assert 'checkState(boolean, java.lang.String, long)' in signatures


# On the clusters ---------------------------------------------------------

# A pipeline on a local cluster takes several minutes on two cores, so the
# cluster runs are `make engine-test` (ENGINE_TEST=1), not `make test`.
needs_engines = pytest.mark.skipif(
    not os.environ.get('ENGINE_TEST') or not all(
        os.path.isdir(p) for p in (flink_cluster.home(), spark_cluster.home())),
    reason='runs pipelines on Flink and Spark clusters: `make engine-test` '
    '(ENGINE_TEST=1, after make engines)')


@pytest.fixture(scope='session')
def clusters(tmp_path_factory):
    """`start(engine)`: the engine's cluster, started on first use, and every
    one started stopped at the session's end, whatever happens."""
    state_dir = str(tmp_path_factory.mktemp('engines'))
    started = {}

    def start(engine):
        if engine not in started:
            process = _cli('engine',
                           'start',
                           engine,
                           '--state-dir',
                           state_dir,
                           timeout=600)
            started[engine] = _summary(process)
        return state_dir, started[engine]

    try:
        yield start
    finally:
        for engine in started:
            _cli('engine', 'stop', engine, '--state-dir', state_dir)
        for state in started.values():
            for pid in state['pids'].values():
                assert not engine_clusters._alive(pid)  # pylint: disable=protected-access


def _pipeline_root(home, model):
    return os.path.join(home, 'pipelines', f'{model}-pipeline')


def _statistics(root):
    stats = {}
    for path in glob.glob(
            os.path.join(root, 'StatisticsGen', 'statistics', '*', 'Split-*',
                         'FeatureStats.pb')):
        proto = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, 'rb') as f:
            proto.ParseFromString(f.read())
        [dataset] = proto.datasets
        stats[os.path.basename(os.path.dirname(path))] = dataset
    return stats


def _transformed(root, split):
    """Every transformed example of a split, as sorted tuples."""
    files = glob.glob(
        os.path.join(root, 'Transform', 'transformed_examples', '*',
                     f'Split-{split}', '*'))
    rows = []
    for record in tf.data.TFRecordDataset(files, 'GZIP'):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append(
            tuple((key,
                   tuple(
                       np.round(
                           list(feature[key].float_list.value or
                                feature[key].int64_list.value), 4)))
                  for key in sorted(feature)))
    return sorted(rows)


def _metrics(root):
    """TFMA's overall example count and the metric names of the Evaluator."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    [path] = glob.glob(os.path.join(root, 'Evaluator', 'evaluation', '*'))
    result = tfma.load_eval_result(path)
    overall = [m for key, m in result.slicing_metrics if not key][0]
    return {
        name: value.get('doubleValue')
        for name, value in overall[''][''].items()
    }


def _assert_same_beam_outputs(engine_home, local_home, model):
    engine_root = _pipeline_root(engine_home, model)
    local_root = _pipeline_root(local_home, model)
    want, got = _statistics(local_root), _statistics(engine_root)
    assert sorted(got) == sorted(want) == [
        'Split-eval', 'Split-test', 'Split-train'
    ]
    for split, expected in want.items():
        actual = got[split]
        assert actual.num_examples == expected.num_examples > 0, split
        for mine, theirs in zip(sorted(actual.features, key=str),
                                sorted(expected.features, key=str)):
            assert mine.path == theirs.path
            assert (mine.num_stats.common_stats.num_non_missing ==
                    theirs.num_stats.common_stats.num_non_missing)
            assert (mine.num_stats.common_stats.tot_num_values ==
                    theirs.num_stats.common_stats.tot_num_values)
            for field in ('mean', 'std_dev', 'min', 'max'):
                assert getattr(mine.num_stats, field) == pytest.approx(getattr(
                    theirs.num_stats, field),
                                                                       rel=1e-5,
                                                                       abs=1e-6)
    # tf.Transform's analyzers (means, variances, vocabularies) computed on
    # the engine give every example the same transformed values.
    for split in ('train', 'eval'):
        actual, expected = (
            _transformed(root, split) for root in (engine_root, local_root))
        assert len(actual) == len(expected) > 0
        for row, want_row in zip(actual, expected):
            assert [k for k, _ in row] == [k for k, _ in want_row]
            np.testing.assert_allclose(np.concatenate([v for _, v in row]),
                                       np.concatenate([v for _, v in want_row]),
                                       atol=2e-4)
    engine_metrics, local_metrics = (
        _metrics(root) for root in (engine_root, local_root))
    assert sorted(engine_metrics) == sorted(local_metrics)
    assert engine_metrics['example_count'] == local_metrics['example_count']


def _worker_pids(state):
    """Pids of the SDK workers the pool started, from its log."""
    with open(os.path.join(state['logs'], 'worker-pool.log'),
              encoding='utf-8') as f:
        return {
            int(line.split()[3]) for line in f if line.startswith('worker ') and
            ' pid ' in line and 'exited' not in line
        }


def _wait_for(condition, what, process=None, deadline_seconds=1200.0):
    """Polls `condition()` until it gives something true (liveness only),
    while `process` (if given) runs."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        assert process is None or process.poll() is None, (
            f'the run ended before {what}: {_output(process)[1][-3000:]}')
        assert time.monotonic() < deadline, f'no {what}'
        time.sleep(0.5)


def _start_run(command, folder):
    """`python -m pipeline COMMAND` started, its output to files in
    `folder` (a pipe nobody reads would stop it once full)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / 'stdout', 'w',
              encoding='utf-8') as out, open(folder / 'stderr',
                                             'w',
                                             encoding='utf-8') as err:
        process = subprocess.Popen([sys.executable, '-m', 'pipeline', *command],
                                   cwd=REPO,
                                   stdout=out,
                                   stderr=err,
                                   text=True)
    process.folder = folder
    return process


def _output(process):
    return tuple((process.folder / name).read_text(encoding='utf-8')
                 for name in ('stdout', 'stderr'))


def _finished(process, timeout=1800):
    """The started run's CompletedProcess once it ends."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode,
                                       *_output(process))


def _flink_job_states(state):
    return {
        job['jid']: job['state'] for job in engines.http_json(  # pylint: disable=protected-access
            f'http://{state["rest"]}/jobs/overview')['jobs']
    }


def _spark_app_states(state):
    """The Spark master's applications (one a Beam job), by id."""
    master = engine_jobs.spark_applications(state)
    return {
        app['id']: app['state']
        for app in master['activeapps'] + master['completedapps']
    }


_JOB_STATES = {'flink': _flink_job_states, 'spark': _spark_app_states}


def _alive_worker_pids(state):
    return {
        pid for pid in _worker_pids(state) if engine_clusters._alive(pid)  # pylint: disable=protected-access
    }


_TASK_FAILED = re.compile(
    r'ERROR Executor: Exception in task (\d+)\.(\d+) in stage (\S+) ')
_TASK_FINISHED = re.compile(
    r'INFO Executor: Finished task (\d+)\.(\d+) in stage (\S+) ')


def _spark_tasks_retried_after_a_kill(state, apps):
    """(application, stage, task) of the tasks that failed on a killed SDK
    worker and of which a later attempt finished, from the executors'
    logs of the Spark applications `apps`."""
    failed, finished = set(), set()
    for app in apps:
        for path in glob.glob(
                os.path.join(os.path.dirname(state['logs']), 'work', app, '*',
                             'stderr')):
            with open(path, encoding='utf-8', errors='replace') as f:
                lines = f.read().splitlines()
            for line, following in zip(lines, lines[1:] + ['']):
                match = _TASK_FAILED.search(line)
                if match and ' exited -9 ' in following:
                    failed.add((app, match[3], match[1], int(match[2])))
                match = _TASK_FINISHED.search(line)
                if match:
                    finished.add((app, match[3], match[1], int(match[2])))
    return {(app, stage, task)
            for app, stage, task, attempt in failed
            for done in finished
            if done[:3] == (app, stage, task) and done[3] > attempt}


def _run_with_a_worker_killed(command, engine, state, folder):
    """Runs `command` on the engine, SIGKILLs the SDK workers of its second
    Beam job (Flink job, Spark application) mid-job; the finished process
    and the pids killed."""
    job_states = _JOB_STATES[engine]
    seen = set(job_states(state))
    process = _start_run(command, folder)
    try:
        # The first job (ExampleGen's) ended and a second runs: its workers
        # are the ones started since.
        first_workers = set()

        def second_job_running():
            jobs = {
                jid: s
                for jid, s in job_states(state).items()
                if jid not in seen
            }
            if len(jobs) < 2:  # Before the second job's workers start.
                first_workers.update(_worker_pids(state))
                return False
            return any(s == 'RUNNING' for s in jobs.values())

        _wait_for(second_job_running, f'second Beam job running on {engine}',
                  process)
        new = _wait_for(lambda: _alive_worker_pids(state) - first_workers,
                        'SDK worker of the second job', process)
        for pid in new:
            os.kill(pid, signal.SIGKILL)
    finally:
        result = _finished(process)
    return result, new


def _served_top_classes(tmp_path, pushed_models, examples):
    """Each pushed model's top class for every example, from one server."""
    entries = ''.join(f"""
      config {{
        name: "{name}"
        base_path: "{os.path.dirname(path)}"
        model_platform: "tensorflow"
        model_version_policy {{
          specific {{ versions: {os.path.basename(path)} }}
        }}
      }}""" for name, path in pushed_models.items())
    config = tmp_path / 'models.config'
    config.write_text('model_config_list {%s\n}\n' % entries)
    server = server_utils.start_model_server(tmp_path,
                                             [f'--model_config_file={config}'],
                                             timeout=600)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            answers = {}
            for name in pushed_models:
                client.wait_until_available(name, timeout=600)
                answers[name] = [
                    p.top_class for p in client.send_classify(
                        client_lib.build_classification_request(name, examples))
                ]
    finally:
        server.stop()
    return answers


def _raw_test_examples(root):
    files = glob.glob(
        os.path.join(root, '*ExampleGen', 'examples', '*', 'Split-test', '*'))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, 'GZIP')]


@needs_engines
@pytest.mark.parametrize('engine,model', [('flink', 'rnn'),
                                          ('spark', 'convnet')])
def test_pipeline_beam_steps_on_an_engine_equal_the_in_process_run(
        clusters, tmp_path, engine, model):
    state_dir, state = clusters(engine)
    if model == 'rnn':
        data = datasets.write_ts_dataset(str(tmp_path / 'data'),
                                         train=60,
                                         test=30)
    else:
        data = datasets.write_idx_dataset(str(tmp_path / 'data'),
                                          train=200,
                                          test=60)
    common = ('run', '--model', model, '--data', data,
              *_epochs(CONVERGED_EPOCHS[model]))
    local = _summary(_cli(*common, '--home', str(tmp_path / 'local')))
    # A memory budget below the training split: it is streamed.
    engine_run = (*common, '--home', str(tmp_path / 'engine'), '--beam-engine',
                  engine, '--engine-state-dir', state_dir, '--set',
                  'cache_memory_mb=0.01')
    # A worker killed mid-job. Flink restarts nothing: the run fails with
    # one line, pushes nothing, and the next run resumes from the cache.
    # Spark retries the task whose SDK worker died (spark.task.maxFailures,
    # 4 on a cluster), on a new worker: the run goes on.
    jobs_before = set(_JOB_STATES[engine](state))
    killed_run, killed = _run_with_a_worker_killed(engine_run, engine, state,
                                                   tmp_path / 'killed')
    if engine == 'flink':
        assert killed_run.returncode == 1, killed_run.stderr[-3000:]
        [error] = _errors(killed_run)
        assert error.startswith('error: Beam job ') and ' ended FAILED on the '
        'engine: ' in error, (error, killed)
        assert not os.path.exists(tmp_path / 'engine' / 'serving')
        resumed = _cli(*engine_run)
        assert ' done in ' in resumed.stderr
        cached = [
            line for line in resumed.stderr.splitlines()
            if line.endswith('(cached)')
        ]
        assert any('ExampleGen' in line for line in cached), resumed.stderr
        on_engine = _summary(resumed)
    else:
        on_engine = _summary(killed_run)
        retried = _spark_tasks_retried_after_a_kill(
            state,
            set(_JOB_STATES[engine](state)) - jobs_before)
        print(f'spark: SDK workers {sorted(killed)} killed; tasks retried '
              f'and finished (application, stage, task): {sorted(retried)}')
        assert retried, killed
    print(f'{engine} {model} seconds: in process '
          f'{local["component_seconds"]}, on {engine} '
          f'{on_engine["component_seconds"]}')
    assert on_engine['pushed_model'] and os.path.isdir(
        on_engine['pushed_model'])
    assert local['pushed_model']
    engine_root = _pipeline_root(str(tmp_path / 'engine'), model)
    _assert_same_beam_outputs(str(tmp_path / 'engine'), str(tmp_path / 'local'),
                              model)
    [report] = glob.glob(
        os.path.join(engine_root, 'Trainer', 'model_run', '*', 'training.json'))
    with open(report, encoding='utf-8') as f:
        training = json.load(f)
    assert training['cached_splits']['train'] is False
    assert (training['split_bytes_in_memory']['train']
            > training['cache_budget_bytes'])
    # The engine run's pushed model, served, answers as the in-process one
    # (both trained until the order of their examples no longer shows).
    examples = _raw_test_examples(engine_root)
    answers = _served_top_classes(tmp_path, {
        'engine': on_engine['pushed_model'],
        'local': local['pushed_model']
    }, examples)
    agree = np.mean(np.equal(answers['engine'], answers['local']))
    print(f'{engine} {model}: served answers agree on {agree:.3f} of '
          f'{len(examples)} test examples')
    assert len(answers['engine']) == len(examples) > 0
    assert agree >= 0.8
    # Distribution, as the engines report it.
    jobs = on_engine['engine_jobs']
    assert jobs and all(j['state'] == 'DONE' for j in jobs), jobs
    pool_pids = _worker_pids(state)
    assert len(pool_pids) >= 2
    counted = {p for j in jobs for p in j.get('sdk_worker_pids', [])}
    print(f'{engine}: SDK worker pids counted {sorted(counted)}; pool '
          f'started {len(pool_pids)}')
    assert counted <= pool_pids
    if model == 'convnet':  # Its reader's 32 items (the rnn's: 2 files).
        assert len(counted) >= 2
    if engine == 'flink':
        jobs = engine_jobs.flink_jobs(state)
        assert jobs and all(
            j['state'] in ('FINISHED', 'FAILED', 'CANCELED') for j in jobs)
        finished = [j for j in jobs if j['state'] == 'FINISHED']
        assert finished and max(j['max_parallelism'] for j in finished) >= 2
    else:
        master = engine_jobs.spark_applications(state)
        finished = [
            a for a in master['completedapps'] if a['state'] == 'FINISHED'
        ]
        assert finished and max(a['cores'] for a in finished) >= 2
        assert master['aliveworkers'] >= 2


@needs_engines
def test_an_interrupted_run_cancels_its_job_on_the_engine(clusters, tmp_path):
    state_dir, state = clusters('flink')
    seen = set(_flink_job_states(state))
    data = datasets.write_ts_dataset(str(tmp_path / 'data'), train=60, test=30)
    process = _start_run([
        'run', '--model', 'rnn', '--data', data, '--home',
        str(tmp_path / 'home'), *TINY, '--beam-engine', 'flink',
        '--engine-state-dir', state_dir
    ], tmp_path / 'run')
    try:
        [job] = _wait_for(
            lambda: [
                jid for jid, s in _flink_job_states(state).items()
                if jid not in seen and s == 'RUNNING'
            ], 'Beam job running on Flink', process)
        process.send_signal(signal.SIGTERM)
    finally:
        finished = _finished(process, timeout=600)
    stderr = finished.stderr
    assert finished.returncode == cli.EXIT_INTERRUPTED, stderr[-3000:]
    [error] = _errors(finished)
    assert error.startswith('error: run interrupted by SIGTERM; cancelled '
                            'Beam job '), error
    _wait_for(lambda: _flink_job_states(state)[job] == 'CANCELED',
              'job cancelled on Flink',
              deadline_seconds=300)
    assert not os.path.exists(tmp_path / 'home' / 'serving')


def test_a_kubeflow_job_carries_the_engines_flags(tmp_path):
    from tests import kubeflow_jobs  # pylint: disable=import-outside-toplevel
    job = kubeflow_jobs.compiled_job(
        'rnn', 'gs://bucket/data/JapaneseVowels',
        ('--beam-engine', 'flink', '--engine-address',
         'beam-flink-job-server:8099'))
    with open(job.path, encoding='utf-8') as f:
        text = f.read()
    for flag in engines.beam_args('flink', 'beam-flink-job-server:8099'):
        assert flag in text, flag
    process = kubeflow_jobs.compile_command(str(tmp_path), '--model', 'rnn',
                                            '--target', 'kubeflow', '--output',
                                            str(tmp_path / 'job.json'),
                                            '--image', kubeflow_jobs.IMAGE,
                                            '--pipeline-root',
                                            kubeflow_jobs.PIPELINE_ROOT,
                                            '--beam-engine', 'spark')
    assert process.returncode == 2
    assert _errors(process) == [
        'error: --beam-engine=spark --target kubeflow needs --engine-address: '
        'the job server as the pods reach it'
    ]
