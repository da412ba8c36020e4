"""`--strategy parameter_server` through the Trainer's run_fn: a chief, two
workers and a parameter server, real processes on 127.0.0.1 (models/
workers.py), on the tiny real tf.Transform output (tests/tiny_transform.py).
Worker 1 is killed once training has started: the coordinator sends its
steps to worker 0, the fit ends and the chief exports a model our server
serves."""

import contextlib
import json
import os
import shutil
import threading

import psutil
import pytest
import tensorflow as tf

from common import names
from common import signatures
from models import entry_points
from models import features
from serving import client as client_lib
from tests import datasets
from tests import tiny_transform
from tests.serving import server_utils

pytestmark = pytest.mark.heavy(45)  # Idle seconds: the run of seed 1245933834.

EPOCHS = 6
# The epoch whose start tells the killer that training runs: the first
# (tracing the step, filling the cache) has ended; EPOCHS - 1 remain.
KILL_AT = 'Epoch 2/'


def _task(process: psutil.Process):
    """(type, index) of a cluster task started by models/workers.py."""
    with contextlib.suppress(psutil.Error, ValueError, KeyError):
        if 'models.workers' in ' '.join(process.cmdline()):
            task = json.loads(process.environ()['TF_CONFIG'])['task']
            return task['type'], task['index']
    return None


def _tasks():
    return {
        _task(p): p
        for p in psutil.Process().children(recursive=True)
        if _task(p)
    }


@pytest.fixture(scope='module')
def ps_run(tiny_transformed, tmp_path_factory):
    """The convnet's run_fn under parameter_server (1 PS, 2 workers), worker
    1 killed by pid when the chief's log shows the second epoch start."""
    out = tmp_path_factory.mktemp('parameter_server')
    fn_args = tiny_transform.fn_args(tiny_transformed,
                                     out,
                                     strategy='parameter_server',
                                     workers=2,
                                     parameter_servers=1,
                                     epochs=EPOCHS,
                                     worker_timeout_seconds=900)
    chief_log = os.path.join(fn_args.model_run_dir, 'workers', 'chief-0.log')
    killed = []
    done = threading.Event()

    def kill_worker_1_once_training():
        while not done.is_set():
            if (os.path.exists(chief_log) and
                    KILL_AT in open(chief_log, encoding='utf-8').read()):
                worker = _tasks()[('worker', 1)]
                worker.kill()
                killed.append(worker.pid)
                return
            done.wait(0.1)

    killer = threading.Thread(target=kill_worker_1_once_training, daemon=True)
    killer.start()
    try:
        entry_points.convnet_run_fn(fn_args)
    finally:
        done.set()
        killer.join()
    with open(os.path.join(fn_args.model_run_dir, names.TRAINING_REPORT),
              encoding='utf-8') as f:
        report = json.load(f)
    with open(chief_log, encoding='utf-8') as f:
        log = f.read()
    return fn_args, report, killed, log


def test_a_killed_worker_leaves_the_fit_to_the_others(ps_run):
    fn_args, report, killed, log = ps_run
    assert killed, 'worker 1 was never killed'
    assert report['strategy'] == 'parameter_server'
    assert report['workers'] == 2 and report['parameter_servers'] == 1
    # The launcher saw worker 1 die; the coordinator saw a step fail on it
    # (the kill landed while training ran) and went on without it.
    assert report['workers_lost'] == [1]
    assert 'Worker /job:worker/replica:0/task:1 failed' in log, log[-3000:]
    # Every epoch ran, every step of each: none was lost with the worker.
    # At least once, not exactly: the step the dead worker had running (the
    # coordinator gives a worker one at a time) may have updated the
    # parameter server before its answer was lost; it runs again elsewhere.
    assert len(report['epoch_seconds']) == EPOCHS
    scheduled = report['steps_per_epoch'] * EPOCHS
    assert scheduled <= report['steps'] <= scheduled + 1, report['steps']
    # Asynchronous SGD: one replica's batch a step, the rate unscaled.
    assert report['global_batch'] == report['per_replica_batch'] == 16
    assert report['learning_rate'] == pytest.approx(0.01)
    assert report['val_accuracy'][-1] > 0.8
    assert tf.saved_model.contains_saved_model(fn_args.serving_model_dir)
    assert report['export_dir'] == fn_args.serving_model_dir
    assert not _tasks()  # The chief, worker 0 and the PS are stopped.


def test_the_chiefs_export_is_served_by_our_server(ps_run, tmp_path):
    fn_args = ps_run[0]
    base = tmp_path / 'convnet'
    shutil.copytree(fn_args.serving_model_dir, base / '1')
    images, labels = datasets.images_with_labels(30, tiny_transform.CLASSES, 9,
                                                 tiny_transform.SIZE)
    pngs = [datasets.png_bytes(image) for image in images]
    model = tf.saved_model.load(str(base / '1'))
    own = model.signatures[signatures.DEFAULT_SIGNATURE](inputs=tf.constant(
        [features.image_example(png, int(y)) for png, y in zip(pngs, labels)]))
    names_ = [n.decode() for n in own[signatures.CLASSES_OUTPUT].numpy()[0]]
    own_top = [
        names_[i] for i in own[signatures.SCORES_OUTPUT].numpy().argmax(axis=1)
    ]
    server = server_utils.start_model_server(
        tmp_path, ['--model_name=convnet', f'--model_base_path={base}'],
        rest=False)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            client.wait_until_available('convnet', 120)
            served = [
                p.top_class for p in client.predict_images('convnet', pngs)
            ]
    finally:
        server.stop()
    assert served == own_top
    truth = [tiny_transform.PARAMS['class_names'][y] for y in labels]
    assert sum(s == t for s, t in zip(served, truth)) / len(truth) > 0.8
