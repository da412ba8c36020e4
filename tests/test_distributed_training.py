"""The Trainer's run_fn under `mirrored` (2 logical CPU devices, split by
tests/conftest.py) and `multi_worker` (real worker processes on 127.0.0.1),
on a tiny real tf.Transform output of the convnet's preprocessing_fn, read
through a real TFX DataAccessor, as the Trainer does."""

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.python.autograph.core import config as autograph_config
from tensorflow.python.autograph.impl import conversion

from common import names
from common import signatures
from models import distribute
from models import entry_points
from models import features
from models import inputs
from models import schedule
from models import tracing
from models import training_report
from models import workers
from models.convnet import model as convnet
from tests import datasets
from tests import tiny_transform

# Heavy (tests/conftest.py): workers and parameter servers as processes,
# a dozen trainings; about 85 s of one test worker idle.
pytestmark = pytest.mark.heavy(85)

CLASSES, PARAMS, SIZE, TRAIN = (tiny_transform.CLASSES, tiny_transform.PARAMS,
                                tiny_transform.SIZE, tiny_transform.TRAIN)
_fn_args = tiny_transform.fn_args


@pytest.fixture(scope='module')
def transformed(tiny_transformed):
    """A tiny tf.Transform output (tests/tiny_transform.py), the run's."""
    return tiny_transformed


def _report(fn_args):
    with open(os.path.join(fn_args.model_run_dir, names.TRAINING_REPORT)) as f:
        return json.load(f)


def _accuracy(serving_model_dir):
    """The exported model's accuracy on fresh images, via serving_default."""
    model = tf.saved_model.load(serving_model_dir)
    images, labels = datasets.images_with_labels(60, CLASSES, 9, SIZE)
    scores = model.signatures[signatures.DEFAULT_SIGNATURE](inputs=tf.constant([
        features.image_example(datasets.png_bytes(i), int(label))
        for i, label in zip(images, labels)
    ]))
    predicted = scores[signatures.SCORES_OUTPUT].numpy().argmax(axis=1)
    return float((predicted == labels).mean())


@pytest.fixture(scope='module')
def mirrored_run(transformed, tmp_path_factory):
    out = tmp_path_factory.mktemp('mirrored')
    # With the Trainer's speed-ups asked for: XLA stays off (it cannot read
    # another logical CPU's variables), steps_per_execution applies.
    fn_args = _fn_args(transformed,
                       out,
                       strategy='mirrored',
                       jit_compile=True,
                       steps_per_execution=2)
    # TensorFlow's own AutoGraph rules while the run runs, not those
    # tests/conftest.py set for the whole test process: the run sets its own.
    rules = autograph_config.CONVERSION_RULES
    autograph_config.CONVERSION_RULES = tuple(
        rule for rule in rules if not tracing.skips_tf_keras(rule))
    try:
        entry_points.convnet_run_fn(fn_args)
        tf_keras_unconverted = conversion.is_allowlisted(
            tf.keras.Model.train_step)
    finally:
        autograph_config.CONVERSION_RULES = rules
    return fn_args, _report(fn_args), tf_keras_unconverted


def test_mirrored_run_fn_gives_each_replica_its_shard_and_scales_the_rate(
        mirrored_run):
    fn_args, report, _ = mirrored_run
    assert report['strategy'] == 'mirrored'
    assert report['replicas'] == 2 and report['workers'] == 1
    # Each replica is fed its own 16 (batch_size), so a step takes 32.
    assert report['per_replica_batch'] == 16
    assert report['global_batch'] == 32
    assert report['input_shards'] == [[0, 2], [1, 2]]
    # An epoch is the split once over the global batch, not once per replica.
    steps = math.ceil(TRAIN / 32)
    assert report['steps_per_epoch'] == steps
    assert report['steps'] == steps * PARAMS['epochs']
    assert report['learning_rate'] == pytest.approx(0.02)
    assert report['warmup_steps'] == steps
    assert len(report['epoch_seconds']) == PARAMS['epochs']
    assert not report['jit_compile'] and report['steps_per_execution'] == 2
    # The typed report reads back what it wrote.
    assert training_report.TrainingReport.from_json(report).as_json() == report
    # Trained: the exported model tells the classes apart (chance is 1/3).
    assert _accuracy(fn_args.serving_model_dir) > 0.8


def test_training_leaves_tf_keras_unconverted_by_autograph(mirrored_run):
    # models/tracing.py: tracing the steps rewrote tf_keras's own code, a
    # minute of the convnet's first step on a loaded machine. The run began
    # under TensorFlow's own rules (the fixture), so the rule is the run's.
    assert mirrored_run[2]
    keras = tf.keras
    assert conversion.is_allowlisted(keras.layers.Conv2D(1, 1).call)
    # Our own code is still converted.
    assert not conversion.is_allowlisted(convnet.build_model)


def test_a_set_fitted_in_a_few_epochs_stops_soon_after_and_says_why(
        transformed, tmp_path):
    """The real training loop on a set the convnet fits in a few epochs:
    training stops once the training accuracy has been 1.0 for
    fitted_steps (two epochs) at a median loss under fitted_loss, not at
    the 40 epochs of the schedule, and the training report says so."""
    steps = math.ceil(TRAIN / PARAMS['batch_size'])
    fn_args = _fn_args(transformed,
                       tmp_path,
                       strategy='auto',
                       epochs=40,
                       fitted_loss=0.05,
                       fitted_steps=2 * steps)
    entry_points.convnet_run_fn(fn_args)
    report = _report(fn_args)
    history = report['history']
    loss, accuracy = history['loss'], history['accuracy']
    fitted = next(
        e for e in range(1, len(loss))
        if accuracy[e - 1] == accuracy[e] == 1.0 and (loss[e - 1] + loss[e]) /
        2 < 0.05)
    assert len(report['epoch_seconds']) == fitted + 1 < 40, history
    assert report['stop_reason'] == schedule.STOP_FITTED
    assert report['fitted_patience'] == 2
    # One process, no Tuner, no transfer, one network: every field but
    # those, in order.
    assert list(report) == [
        field.name
        for field in dataclasses.fields(training_report.TrainingReport)
        if field.name not in ('family', 'input_shards', 'transfer',
                              'worker_weights_sha256', 'worker_export_dirs',
                              'parameter_servers', 'workers_lost', 'ensemble')
    ]


def test_linear_warmup_climbs_from_one_replicas_rate_to_the_scaled_one():
    warmup = schedule.LinearWarmup(0.01, 0.02, warmup_steps=10)
    assert float(warmup(0)) == pytest.approx(0.01)
    assert float(warmup(5)) == pytest.approx(0.015)
    assert float(warmup(10)) == pytest.approx(0.02)
    assert float(warmup(50)) == pytest.approx(0.02)


def test_each_replica_reads_its_own_shard_once_per_epoch(transformed):
    strategy = distribute.make_strategy('mirrored')
    examples = str(transformed / 'examples')
    schema = tft.TFTransformOutput(str(
        transformed / 'transform_graph')).transformed_metadata.schema
    pipelines = []
    dataset = inputs.distributed_dataset(
        strategy, 32, pipelines,
        lambda **shard: inputs.make_dataset([f'{examples}/Split-train/*'],
                                            workers.data_accessor(examples),
                                            schema,
                                            lambda model_inputs: model_inputs,
                                            shuffle=True,
                                            seed=1,
                                            cache=True,
                                            repeat=True,
                                            **shard))
    assert pipelines == [{
        'batch': 16,
        'shard': 0,
        'shards': 2
    }, {
        'batch': 16,
        'shard': 1,
        'shards': 2
    }]
    iterator = iter(dataset)
    seen = [[], []]
    for _ in range(math.ceil(TRAIN / 32)):
        batch, _ = next(iterator)
        for replica, images in enumerate(
                strategy.experimental_local_results(batch[names.IMAGE_KEY])):
            assert images.shape[0] <= 16
            seen[replica].extend(image.tobytes() for image in images.numpy())
    # Disjoint shards that together are the split, each example once.
    assert not set(seen[0]) & set(seen[1])
    assert (len(set(seen[0]) | set(seen[1])) == len(seen[0]) + len(seen[1]) ==
            TRAIN)


@pytest.fixture(scope='module')
def worker_runs(transformed, tmp_path_factory):
    """The convnet's run_fn under multi_worker with 1 and with 2 workers."""
    runs = {}
    for count in (1, 2):
        out = tmp_path_factory.mktemp(f'workers{count}')
        fn_args = _fn_args(transformed,
                           out,
                           strategy='multi_worker',
                           workers=count,
                           worker_timeout_seconds=900,
                           jit_compile=True,
                           steps_per_execution=2)
        entry_points.convnet_run_fn(fn_args)
        runs[count] = fn_args, _report(fn_args)
    return runs


def _worker_processes():
    return [
        p for p in psutil.Process().children(recursive=True)
        if 'models.workers' in ' '.join(p.cmdline())
    ]


def test_two_workers_train_one_model_that_only_the_chief_exports(worker_runs):
    fn_args, report = worker_runs[2]
    assert report['strategy'] == 'multi_worker'
    assert report['workers'] == 2 and report['replicas'] == 2
    assert report['per_replica_batch'] == 16 and report['global_batch'] == 32
    assert report['learning_rate'] == pytest.approx(0.02)
    # Worker i reads shard i of 2; an epoch is the split once, over both.
    assert report['input_shards'] == [[0, 2]]
    assert report['steps'] == math.ceil(TRAIN / 32) * PARAMS['epochs']
    assert not report['jit_compile'] and report['steps_per_execution'] == 2
    # The workers agree on every weight.
    first, second = report['worker_weights_sha256']
    assert first == second
    # The chief exported to the real place; worker 1 to a folder it removed.
    chief_dir, other_dir = report['worker_export_dirs']
    assert chief_dir == fn_args.serving_model_dir
    assert tf.saved_model.contains_saved_model(chief_dir)
    assert other_dir != chief_dir and not os.path.exists(other_dir)
    assert not _worker_processes()


def test_two_workers_learn_as_well_as_one(worker_runs):
    one, two = (_accuracy(worker_runs[n][0].serving_model_dir) for n in (1, 2))
    print(f'accuracy: 1 worker {one:.3f}, 2 workers {two:.3f}')
    assert worker_runs[1][1]['workers'] == 1
    assert two > 0.8 and abs(one - two) <= 0.15, (one, two)


def test_a_worker_that_dies_fails_the_run_with_its_log(transformed, tmp_path):
    fn_args = _fn_args(transformed,
                       tmp_path,
                       strategy='multi_worker',
                       workers=2,
                       epochs=200,
                       worker_timeout_seconds=900)
    log = os.path.join(fn_args.model_run_dir, 'workers', 'worker-1.log')
    killed = []
    temporary = []

    def kill_worker_1_once_training():
        while not killed:
            if os.path.exists(log) and 'Training with' in open(log).read():
                for process in _worker_processes():
                    environ = process.environ()
                    if '"index": 1' in environ.get('TF_CONFIG', ''):
                        folder = environ.get('TMPDIR', '')
                        temporary.append((folder, os.listdir(folder)
                                          if os.path.isdir(folder) else []))
                        process.kill()
                        killed.append(process.pid)
            time.sleep(0.5)

    killer = threading.Thread(target=kill_worker_1_once_training, daemon=True)
    killer.start()
    with pytest.raises(workers.WorkerError) as failure:
        entry_points.convnet_run_fn(fn_args)
    assert killed
    message = str(failure.value)
    assert message.startswith('worker 1 of 2 was killed by signal 9'), message
    assert log in message and 'Training with' in message
    # Worker 0, waiting on its peer, was stopped; nothing was exported.
    assert not _worker_processes()
    assert not os.path.exists(fn_args.serving_model_dir)
    # The killed workers' temporary files (AutoGraph's, of the functions
    # they had converted, which they would have deleted at exit) went with
    # the folder they were given, not left in the machine's /tmp.
    [(folder, files_when_killed)] = temporary
    assert os.path.basename(folder).startswith('workers-'), folder
    assert files_when_killed
    assert not os.path.exists(folder)


def test_workers_past_worker_timeout_seconds_are_stopped(transformed, tmp_path):
    """`worker_timeout_seconds`: workers still running after it (here a
    millisecond: none can have trained) are killed and the run fails
    naming the setting; nothing is exported, no worker is left."""
    fn_args = _fn_args(transformed,
                       tmp_path,
                       strategy='multi_worker',
                       workers=2,
                       worker_timeout_seconds=0.001)
    with pytest.raises(workers.WorkerError) as failure:
        entry_points.convnet_run_fn(fn_args)
    message = str(failure.value)
    assert message.startswith('workers [0, 1] still running after 0.001 s '
                              '(worker_timeout_seconds); stopped them'), message
    assert not _worker_processes()
    assert not os.path.exists(fn_args.serving_model_dir)


# A Trainer of its own: run_fn over tests/tiny_transform.py's output
# (argv[1]) with two worker processes, writing under argv[2].
TRAINER = r"""
import pathlib, sys
from models import entry_points
from tests import tiny_transform
entry_points.convnet_run_fn(tiny_transform.fn_args(
    pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]),
    strategy='multi_worker', workers=2, epochs=200))
"""


def test_workers_die_with_the_trainer(transformed, tmp_path):
    """The Trainer's process killed (SIGKILL: nothing of it runs after)
    while its two workers train: the workers die with it."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trainer = subprocess.Popen(
        [sys.executable, '-c', TRAINER,
         str(transformed),
         str(tmp_path)],
        cwd=repo,
        # Killed, it cannot remove its workers' temporary folder: it stays
        # in tmp_path.
        env={
            **os.environ, 'PYTHONPATH': repo,
            'TMPDIR': str(tmp_path)
        })
    logs = [
        tmp_path / 'model_run' / 'workers' / f'worker-{i}.log' for i in (0, 1)
    ]
    found = []
    try:
        deadline = time.monotonic() + 900  # Bounds a hang only.
        while not all(log.exists() and 'Training with' in log.read_text()
                      for log in logs):
            assert trainer.poll() is None, trainer.returncode
            assert time.monotonic() < deadline, 'the workers never trained'
            time.sleep(0.5)
        found = [
            p for p in psutil.Process(trainer.pid).children(recursive=True)
            if 'models.workers' in ' '.join(p.cmdline())
        ]
        assert len(found) == 2
        trainer.kill()
        trainer.wait()
        _, alive = psutil.wait_procs(found, timeout=120)
        assert not alive, alive
    finally:
        trainer.kill()
        trainer.wait()
        for process in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_run_fn_transfers_the_filter_banks_frozen_then_fine_tuned(
        mirrored_run, transformed, tmp_path):
    """The Trainer's run_fn under `mirrored`, started from the exported
    model of `mirrored_run` (models/transfer.py)."""
    source = mirrored_run[0].serving_model_dir
    fn_args = _fn_args(transformed,
                       tmp_path,
                       strategy='mirrored',
                       epochs=2,
                       transfer_from=source,
                       transfer_frozen_fraction=0.5)
    entry_points.convnet_run_fn(fn_args)
    report = _report(fn_args)['transfer']
    assert report['transfer_from'] == source
    assert report['layers'] == [
        'block0_conv0', 'block0_conv0_bn', 'block0_conv1', 'block0_conv1_bn'
    ]
    assert report['new_layers'] == ['dense', 'dense_bn', 'classifier']
    assert report['frozen_epochs'] == 1
    assert _accuracy(fn_args.serving_model_dir) > 0.8
