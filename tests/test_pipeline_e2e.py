"""End to end, as a user runs it: `python -m pipeline run` on small data sets
(real Beam, real ML Metadata in SQLite, real SavedModels, the real serving
check), for both models.

Beam runs with the pipeline's defaults (FnApiRunner, in memory).
"""

import base64
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components import sequence_formats
from models import features
from models import signatures
from serving import client as client_lib
from tests import datasets
from tests.serving import server_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pipeline(*args):
    """Runs the CLI; returns (summary dict or None, stderr)."""
    process = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'run', *args],
        cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    lines = [l for l in process.stdout.splitlines() if l.startswith('{')]
    if process.returncode != 0 or not lines:
        return None, process.stderr
    return json.loads(lines[-1]), process.stderr


@pytest.fixture(scope='module')
def convnet_run(tmp_path_factory):
    """One smoke run of the convnet pipeline on a small IDX data set."""
    root = tmp_path_factory.mktemp('convnet')
    data = datasets.write_idx_dataset(str(root / 'data'), train=400, test=100)
    home = str(root / 'home')
    summary, log = run_pipeline('--model', 'convnet', '--data', data,
                                '--home', home, '--set', 'epochs=2')
    assert summary is not None, log
    return summary, data, home, log


def _signature(model, name):
    return model.signatures[name]


def test_convnet_run_pushes_a_blessed_model_with_two_agreeing_signatures(
        convnet_run):
    summary, data, home, log = convnet_run
    assert summary['model'] == 'convnet' and summary['profile'] == 'smoke'
    assert summary['blessed'] is True and summary['new_version'] is True
    assert summary['accuracy'] > 0.5
    pushed = summary['pushed_model']
    assert os.path.dirname(pushed) == os.path.join(home, 'serving', 'convnet')
    assert os.path.basename(pushed).isdigit()
    # Progress lines name each component with its time.
    assert 'Trainer done in' in log and 'ServingCheck done in' in log
    # The first line comes before the heavy imports; TensorFlow's CUDA
    # registration lines and TFX's warnings stay off the console.
    assert 'loading TensorFlow and TFX' in log.splitlines()[1], log
    assert 'Unable to register' not in log and 'WARNING:absl' not in log, log
    logdir = os.path.join(home, 'pipelines', 'convnet-pipeline', 'Trainer',
                          'model_run')
    assert f'training curves: tensorboard --logdir {logdir}' in log
    assert glob.glob(os.path.join(logdir, '*', 'train', 'events.out.*'))
    # The serving check's warmup requests travel with the pushed model.
    assert os.path.exists(os.path.join(
        pushed, 'assets.extra', 'tf_serving_warmup_requests'))

    model = tf.saved_model.load(pushed)
    images, labels = datasets.images_with_labels(8, 10, seed=5)
    pngs = [datasets.png_bytes(image) for image in images]
    from_examples = _signature(model, signatures.DEFAULT_SIGNATURE)(
        inputs=tf.constant([features.image_example(png, int(label))
                            for png, label in zip(pngs, labels)]))
    from_images = _signature(model, signatures.IMAGE_SIGNATURE)(
        images=tf.constant(pngs))
    np.testing.assert_allclose(from_examples[signatures.SCORES_OUTPUT],
                               from_images[signatures.SCORES_OUTPUT],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        from_images[signatures.SCORES_OUTPUT].numpy().sum(axis=1), 1.0,
        rtol=1e-5)
    names = from_images[signatures.CLASSES_OUTPUT].numpy()[0]
    assert [n.decode() for n in names] == [str(i) for i in range(10)]


def test_served_answers_equal_the_saved_models_own(convnet_run, tmp_path):
    """The pushed model over gRPC and REST answers as it does in process."""
    summary = convnet_run[0]
    pushed = summary['pushed_model']
    images, labels = datasets.images_with_labels(8, 10, seed=7)
    pngs = [datasets.png_bytes(image) for image in images]
    model = tf.saved_model.load(pushed)
    own = model.signatures[signatures.IMAGE_SIGNATURE](
        images=tf.constant(pngs))[signatures.SCORES_OUTPUT].numpy()
    own_default = _signature(model, signatures.DEFAULT_SIGNATURE)(
        inputs=tf.constant([features.image_example(png, int(label))
                            for png, label in zip(pngs, labels)]))
    names = [n.decode() for n in
             own_default[signatures.CLASSES_OUTPUT].numpy()[0]]
    server = server_utils.start_model_server(tmp_path, [
        '--model_name=convnet',
        f'--model_base_path={os.path.dirname(pushed)}'])
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            client.wait_until_available('convnet', timeout=120)
            outputs = client.send_predict(client_lib.build_predict_request(
                'convnet', {signatures.IMAGE_INPUT: np.array(pngs, object)},
                signatures.IMAGE_SIGNATURE))
            classified = client.send_classify(
                client_lib.build_classification_request(
                    'convnet', [features.image_example(png, 0)
                                for png in pngs],
                    signatures.DEFAULT_SIGNATURE), top_k=None)
        code, body = server.http('POST', '/v1/models/convnet:predict', {
            'signature_name': signatures.IMAGE_SIGNATURE,
            'instances': [{'b64': base64.b64encode(png).decode()}
                          for png in pngs]})
    finally:
        server.stop()
    np.testing.assert_allclose(outputs[signatures.SCORES_OUTPUT], own,
                               rtol=1e-5, atol=1e-6)
    assert code == 200, body
    np.testing.assert_allclose(
        [p[signatures.SCORES_OUTPUT] for p in body['predictions']], own,
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        [[dict(p.pairs())[n] for n in names] for p in classified],
        own_default[signatures.SCORES_OUTPUT], rtol=1e-5, atol=1e-6)


def test_second_run_reuses_the_cache_and_compares_with_the_blessed_model(
        convnet_run):
    first, data, home, _ = convnet_run
    summary, log = run_pipeline('--model', 'convnet', '--data', data,
                                '--home', home, '--set', 'epochs=2')
    assert summary is not None, log
    for component in ('FileBasedExampleGen', 'Transform', 'Trainer'):
        assert f'{component} done in' in log
        assert any(line.endswith('(cached)') for line in log.splitlines()
                   if f'] {component} done' in line), log
    # Compared with itself as the baseline, the model is not worse.
    assert summary['blessed'] is True
    # It is the model already served: no new version, and the JSON line
    # names the version that serves it.
    assert summary['pushed_model'] == first['pushed_model']
    assert summary['new_version'] is False
    assert os.listdir(os.path.join(home, 'serving', 'convnet')) == [
        os.path.basename(first['pushed_model'])]


def test_a_worse_model_is_not_pushed(convnet_run):
    _, data, home, _ = convnet_run
    versions = sorted(os.listdir(os.path.join(home, 'serving', 'convnet')))
    # A learning rate of zero leaves the weights random: worse than blessed.
    summary, log = run_pipeline('--model', 'convnet', '--data', data,
                                '--home', home, '--set', 'epochs=1',
                                '--set', 'learning_rate=0', '--set',
                                'min_accuracy=0')
    assert summary is not None, log
    assert summary['blessed'] is False
    assert summary['pushed_model'] is None
    assert sorted(os.listdir(os.path.join(home, 'serving', 'convnet'))) == versions


def test_rnn_run_pushes_a_model_whose_two_signatures_agree(tmp_path):
    data = datasets.write_ts_dataset(str(tmp_path / 'data'), train=60, test=30)
    summary, log = run_pipeline('--model', 'rnn', '--data', data,
                                '--home', str(tmp_path / 'home'),
                                '--set', 'epochs=15', '--set', 'units=[8]',
                                '--set', 'learning_rate=0.01')
    assert summary is not None, log
    # The classes differ in their means: chance is 1/3, a trained RNN nears 1.
    assert summary['accuracy'] > 0.6, summary
    assert summary['blessed'] is True, log
    model = tf.saved_model.load(summary['pushed_model'])

    sequences = list(sequence_formats.read_ts(
        os.path.join(data, 'Toy_TEST.ts')))[:6]
    class_index = {'a': 0, 'b': 1, 'c': 2}
    from_examples = _signature(model, signatures.DEFAULT_SIGNATURE)(
        inputs=tf.constant([features.sequence_example(
            s.values, class_index[s.label]) for s in sequences]))
    longest = max(len(s.values) for s in sequences)
    padded = np.zeros((len(sequences), longest, 3), np.float32)
    for i, s in enumerate(sequences):
        padded[i, :len(s.values)] = s.values
    from_tensors = _signature(model, signatures.SEQUENCE_SIGNATURE)(
        sequences=tf.constant(padded),
        lengths=tf.constant([len(s.values) for s in sequences], tf.int64))
    np.testing.assert_allclose(from_examples[signatures.SCORES_OUTPUT],
                               from_tensors[signatures.SCORES_OUTPUT],
                               rtol=1e-5, atol=1e-6)


def test_bad_data_ends_the_run_with_one_line_naming_the_file(tmp_path):
    data = datasets.write_idx_dataset(str(tmp_path / 'data'), train=40, test=10)
    labels = os.path.join(data, 't10k-labels-idx1-ubyte.gz')
    datasets.write_idx(labels, np.full(10, 12))  # labels out of range
    process = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'run', '--model',
         'convnet', '--data', data, '--home', str(tmp_path / 'home')],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert process.returncode == 2
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and labels in last, process.stderr
    assert not glob.glob(str(tmp_path / 'home' / 'serving' / '*' / '*'))
