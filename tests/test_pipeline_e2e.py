"""End to end, as a user runs it: `python -m pipeline run` on small data sets
(real Beam, real ML Metadata in SQLite, real SavedModels, the real serving
check), for every model family.

Beam runs with the pipeline's defaults (FnApiRunner, in memory).
"""

import base64
import glob
import html
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from common import names
from common import settings
from common import signatures
from formats import ts_format
from models import data_facts
from models import features
from pipeline import cli as pipeline_cli
from pipeline import profiles
from pipeline import report
from pipeline import report_html
from serving import client as client_lib
from tests import browser
from tests import datasets
from tests.serving import server_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pipeline(*args):
    """Runs the CLI; returns (summary dict or None, stderr)."""
    process = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'run', *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # Bounds a hang only.
        check=False)
    lines = [
        line for line in process.stdout.splitlines() if line.startswith('{')
    ]
    if process.returncode != 0 or not lines:
        return None, process.stderr
    return json.loads(lines[-1]), process.stderr


@pytest.fixture(scope='module')
def convnet_run(tmp_path_factory):
    """One run of the convnet pipeline on a small IDX data set, under the
    default profile: training adapts its length to the data's size."""
    root = tmp_path_factory.mktemp('convnet')
    data = datasets.write_idx_dataset(str(root / 'data'), train=400, test=100)
    home = str(root / 'home')
    summary, log = run_pipeline('--model', 'convnet', '--data', data, '--home',
                                home)
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
    assert os.path.exists(
        os.path.join(pushed, 'assets.extra', 'tf_serving_warmup_requests'))

    model = tf.saved_model.load(pushed)
    images, labels = datasets.images_with_labels(8, 10, seed=5)
    pngs = [datasets.png_bytes(image) for image in images]
    from_examples = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant([
            features.image_example(png, int(label))
            for png, label in zip(pngs, labels)
        ]))
    from_images = _signature(
        model, signatures.IMAGE_SIGNATURE)(images=tf.constant(pngs))
    np.testing.assert_allclose(from_examples[signatures.SCORES_OUTPUT],
                               from_images[signatures.SCORES_OUTPUT],
                               rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(
        from_images[signatures.SCORES_OUTPUT].numpy().sum(axis=1),
        1.0,
        rtol=1e-5)
    names = from_images[signatures.CLASSES_OUTPUT].numpy()[0]
    assert [n.decode() for n in names] == [str(i) for i in range(10)]


def _rest_value(value):
    """One instance's input as TF Serving's REST API takes it."""
    if isinstance(value, bytes):
        return {'b64': base64.b64encode(value).decode()}
    return value.tolist()


@pytest.fixture(scope='module')
def e2e_server(convnet_run, rnn_run, fcn_run, inception_time_run,
               tmp_path_factory):
    """One model server for the module's four pushed models, each pinned
    to the version its first run pushed (later runs push more)."""
    workdir = tmp_path_factory.mktemp('e2e_server')
    entries = []
    for summary in (convnet_run[0], rnn_run[0], fcn_run[0],
                    inception_time_run[0]):
        base, version = os.path.split(summary['pushed_model'])
        entries.append(f"""
          config {{
            name: "{os.path.basename(base)}"
            base_path: "{base}"
            model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: {version} }} }}
          }}""")
    config = workdir / 'models.config'
    config.write_text('model_config_list {%s\n}\n' % ''.join(entries))
    server = server_utils.start_model_server(workdir,
                                             [f'--model_config_file={config}'],
                                             timeout=600)
    yield server
    server.stop()


def assert_served_as_in_process(server, pushed, signature, inputs, examples):
    """The pushed model answers over gRPC (Predict by `signature` on
    `inputs`, numpy arrays by input name; Classify on `examples`) and REST
    (predict) from `server` as it does in process, to float tolerance."""
    name = os.path.basename(os.path.dirname(pushed))
    model = tf.saved_model.load(pushed)
    own = model.signatures[signature](**{
        key: tf.constant(value) for key, value in inputs.items()
    })[signatures.SCORES_OUTPUT].numpy()
    own_default = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant(examples))
    classes = [
        n.decode() for n in own_default[signatures.CLASSES_OUTPUT].numpy()[0]
    ]
    with client_lib.ModelServerClient(server.grpc_address) as client:
        client.wait_until_available(name, timeout=600)
        outputs = client.send_predict(
            client_lib.build_predict_request(name, inputs, signature))
        classified = client.send_classify(
            client_lib.build_classification_request(
                name, examples, signatures.DEFAULT_SIGNATURE),
            top_k=None)
    code, body = server.http(
        'POST', f'/v1/models/{name}:predict', {
            'signature_name':
                signature,
            'instances': [{
                key: _rest_value(value[i]) for key, value in inputs.items()
            } for i in range(len(own))]
        })
    np.testing.assert_allclose(outputs[signatures.SCORES_OUTPUT],
                               own,
                               rtol=1e-5,
                               atol=1e-6)
    assert code == 200, body
    np.testing.assert_allclose(
        [p[signatures.SCORES_OUTPUT] for p in body['predictions']],
        own,
        rtol=1e-5,
        atol=1e-6)
    np.testing.assert_allclose(
        [[dict(p.pairs())[n] for n in classes] for p in classified],
        own_default[signatures.SCORES_OUTPUT],
        rtol=1e-5,
        atol=1e-6)


def test_the_runs_report_renders_every_section_in_chromium(convnet_run):
    """The report the run wrote (its path in the JSON line), as headless
    chromium renders it: every section, per-class metrics by class name, a
    confusion matrix over the test split, the curves."""
    summary, _, home, _ = convnet_run
    path = summary['report']
    assert path.startswith(os.path.join(home, report.REPORTS_DIR, ''))
    page = browser.Sections(browser.dump_dom(path))
    assert list(page.text) == [key for key, _ in report_html.SECTIONS]
    examples = os.path.join(home, 'pipelines', 'convnet-pipeline',
                            'FileBasedExampleGen', 'examples', '1')
    class_names = data_facts.read(examples)[data_facts.CLASS_NAMES]
    per_class = page.tables['metrics-per-class']
    assert [row[0] for row in per_class[1:]] == class_names
    overall = dict(zip(*page.tables['metrics-overall']))
    assert float(overall['accuracy']) == pytest.approx(summary['accuracy'],
                                                       abs=1e-4)
    confusion = page.tables['confusion-table']
    assert confusion[0][1:] == class_names
    assert sum(float(c) for row in confusion[1:] for c in row[1:]) == float(
        overall['example_count'])
    assert 'label' in [row[1] for row in page.tables['statistics-table']]
    assert 'No anomalies found' in page.text['anomalies']
    assert 'No previous span' in page.text['drift']
    assert 'No blessed model before this one' in page.text['comparison']
    assert 'answered' in page.text['serving']
    # Two training curves and the confusion matrix, laid out by the browser.
    assert page.figures == {'training': 2, 'confusion': 1}
    assert page.body['data-figures-shown'] == '3'


def test_served_answers_equal_the_saved_models_own(convnet_run, e2e_server):
    """The pushed model over gRPC and REST answers as it does in process."""
    images, _ = datasets.images_with_labels(8, 10, seed=7)
    pngs = [datasets.png_bytes(image) for image in images]
    assert_served_as_in_process(
        e2e_server, convnet_run[0]['pushed_model'], signatures.IMAGE_SIGNATURE,
        {signatures.IMAGE_INPUT: np.array(pngs, object)},
        [features.image_example(png, 0) for png in pngs])


@pytest.fixture(scope='module')
def convnet_second_run(convnet_run):
    """The same run again on the same home and data, before any other run
    on it (the tests that run more on the home ask for this fixture first):
    (summary, log, the served versions after it)."""
    _, data, home, _ = convnet_run
    summary, log = run_pipeline('--model', 'convnet', '--data', data, '--home',
                                home)
    assert summary is not None, log
    return summary, log, os.listdir(os.path.join(home, 'serving', 'convnet'))


def test_second_run_reuses_the_cache_and_compares_with_the_blessed_model(
        convnet_run, convnet_second_run):
    first, _, home, _ = convnet_run
    summary, log, served = convnet_second_run
    for component in ('FileBasedExampleGen', 'Transform', 'Trainer'):
        assert f'{component} done in' in log
        assert any(
            line.endswith('(cached)')
            for line in log.splitlines()
            if f'] {component} done' in line), log
    # Compared with itself as the baseline, the model is not worse.
    assert summary['blessed'] is True
    # It is the model already served: no new version, and the JSON line
    # names the version that serves it.
    assert summary['pushed_model'] == first['pushed_model']
    assert summary['new_version'] is False
    assert served == [os.path.basename(first['pushed_model'])]


def test_runs_lists_both_runs_and_show_prints_one(convnet_run,
                                                  convnet_second_run, capsys):
    """`pipeline runs` and `show` read what the two runs did from ML
    Metadata (in process: TensorFlow is already loaded here)."""
    first, _, home, _ = convnet_run
    second = convnet_second_run[0]
    assert pipeline_cli.main(['runs', '--home', home, '--model',
                              'convnet']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        'run', 'model', 'span', 'accuracy', 'blessed', 'pushed', 'seconds',
        'state'
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    version = os.path.basename(first['pushed_model'])
    for run, pushed in ((first, [version]), (second, [version, '(again)'])):
        model, span, accuracy, blessed, *rest = rows[run['run']]
        assert [model, span, blessed] == ['convnet', str(run['span']), 'yes']
        assert float(accuracy) == pytest.approx(run['accuracy'])
        assert rest[:len(pushed)] == pushed and rest[-1] == 'COMPLETE'
        assert 0 < float(rest[-2]) < run['wall_seconds']

    assert pipeline_cli.main(['show', first['run'][:19], '--home', home]) == 0
    shown = capsys.readouterr().out
    assert f'run: {first["run"]}\n' in shown and 'state: COMPLETE' in shown
    assert f'pushed version: {version}\n' in shown
    trainer = os.path.join(home, 'pipelines', 'convnet-pipeline', 'Trainer')
    assert re.search(
        r'^  Trainer: COMPLETE, [0-9.]+ s\n    model: ' + re.escape(trainer),
        shown, re.M), shown

    assert pipeline_cli.main(['show', '1999-', '--home', home]) == 2
    assert capsys.readouterr().err.startswith('error: ')


@pytest.mark.parametrize('command', [['runs'], ['show', '2026-']])
def test_runs_of_a_home_without_metadata_is_one_line(tmp_path, command):
    """`runs` and `show` on a home no run has used: one line, exit 2."""
    process = subprocess.run(
        [sys.executable, '-m', 'pipeline', *command, '--home',
         str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False)
    assert process.returncode == 2
    assert process.stderr.splitlines() == [
        f'error: {tmp_path}/metadata.sqlite: no ML Metadata (no run has '
        f'used --home {tmp_path})'
    ]
    assert not os.path.exists(tmp_path / 'metadata.sqlite')


def test_mirrored_run_trains_on_two_devices_and_pushes(convnet_run,
                                                       convnet_second_run):
    """`--strategy mirrored` through the real Trainer, on 2 logical CPU
    devices the run makes at start: each replica its batch_size, the global
    batch and learning rate twice that, no worse than the `auto` model."""
    first, data, home, _ = convnet_run
    summary, log = run_pipeline(
        '--model',
        'convnet',
        '--data',
        data,
        '--home',
        home,
        '--set',
        'epochs=2',
        # Two epochs, not the smoke profile's
        # minimum of steps: counted below.
        '--set',
        'min_train_steps=0',
        # The configured batch, not the small-data
        # cap (tests/test_training.py).
        '--set',
        'max_batch_fraction=0',
        '--set',
        'max_accuracy_drop=0.1',
        '--strategy',
        'mirrored')
    assert summary is not None, log
    training = summary['training']
    assert training['strategy'] == 'mirrored', training
    assert training['replicas'] == 2
    assert training['per_replica_batch'] == 64  # The smoke profile's.
    assert training['global_batch'] == 128
    assert training['learning_rate'] == pytest.approx(2e-3)
    assert training['warmup_steps'] > 0
    assert len(training['epoch_seconds']) == 2
    assert first['training']['strategy'] == 'auto'
    assert first['training']['replicas'] == 1
    # Compared with the `auto` model as the baseline: within noise of it.
    assert summary['accuracy'] >= first['accuracy'] - 0.1, (summary, first)
    assert summary['blessed'] is True, (summary, first)
    assert summary['pushed_model'] is not None


def test_a_worse_model_is_not_pushed(convnet_run, convnet_second_run):
    _, data, home, _ = convnet_run
    versions = sorted(os.listdir(os.path.join(home, 'serving', 'convnet')))
    # A learning rate of zero leaves the weights random: worse than blessed.
    summary, log = run_pipeline('--model', 'convnet', '--data', data, '--home',
                                home, '--set', 'epochs=1', '--set',
                                'min_train_steps=0', '--set', 'learning_rate=0',
                                '--set', 'min_accuracy=0')
    assert summary is not None, log
    assert summary['blessed'] is False
    assert summary['pushed_model'] is None
    serving_dir = os.path.join(home, 'serving', 'convnet')
    assert sorted(os.listdir(serving_dir)) == versions
    # Its report renders too, saying why nothing was pushed.
    page = browser.Sections(browser.dump_dom(summary['report']))
    assert 'not blessed' in page.text['comparison']
    assert 'Baseline' in page.text['comparison']
    assert 'accuracy change against the baseline' in page.text['comparison']


CLASS_INDEX = {'a': 0, 'b': 1, 'c': 2}  # write_ts_dataset's classes


@pytest.fixture(scope='module')
def rnn_run(tmp_path_factory):
    """One run of the RNN pipeline on small sequences (the first span of
    its home, whose schema the data-gate tests curate)."""
    root = tmp_path_factory.mktemp('rnn')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    # 15 epochs of two steps, not the smoke profile's 200 steps: the classes
    # differ in their means, learnt in a few steps.
    summary, log = run_pipeline('--model', 'rnn', '--data', data, '--home',
                                home, '--set', 'epochs=15', '--set',
                                'min_train_steps=0', '--set', 'units=[8]',
                                '--set', 'learning_rate=0.01')
    assert summary is not None, log
    return summary, data, home, log


def _test_sequences(data, count=6):
    return list(ts_format.read_ts(os.path.join(data, 'Toy_TEST.ts')))[:count]


def _padded(sequences):
    """The serving_sequence inputs: values zero-padded to the longest."""
    longest = max(len(s.values) for s in sequences)
    padded = np.zeros((len(sequences), longest, 3), np.float32)
    for i, s in enumerate(sequences):
        padded[i, :len(s.values)] = s.values
    return {
        signatures.SEQUENCE_INPUT:
            padded,
        signatures.LENGTH_INPUT:
            np.array([len(s.values) for s in sequences], np.int64)
    }


def test_rnn_run_pushes_a_model_whose_two_signatures_agree(rnn_run):
    summary, data, _, log = rnn_run
    # The classes differ in their means: chance is 1/3, a trained RNN nears 1.
    assert summary['accuracy'] > 0.6, summary
    assert summary['blessed'] is True, log
    model = tf.saved_model.load(summary['pushed_model'])

    sequences = _test_sequences(data)
    from_examples = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant([
            features.sequence_example(s.values, CLASS_INDEX[s.label])
            for s in sequences
        ]))
    from_tensors = _signature(model, signatures.SEQUENCE_SIGNATURE)(**{
        key: tf.constant(value) for key, value in _padded(sequences).items()
    })
    np.testing.assert_allclose(from_examples[signatures.SCORES_OUTPUT],
                               from_tensors[signatures.SCORES_OUTPUT],
                               rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize('family', ['rnn', 'fcn', 'inception_time'])
def test_served_sequence_answers_equal_the_saved_models_own(
        family, request, e2e_server):
    """The sequence families' pushed models over gRPC and REST answer as
    they do in process."""
    summary, data, _, _ = request.getfixturevalue(f'{family}_run')
    sequences = _test_sequences(data)
    assert_served_as_in_process(
        e2e_server, summary['pushed_model'], signatures.SEQUENCE_SIGNATURE,
        _padded(sequences),
        [features.sequence_example(s.values, 0) for s in sequences])


def _gate_run(home, data, *flags):
    """A run on `home` that the DataGate is to stop: (exit code, stderr)."""
    process = subprocess.run(
        [
            sys.executable,
            '-m',
            'pipeline',
            'run',
            '--model',
            'rnn',
            '--data',
            data,
            '--home',
            home,
            *flags,
            # Short, should the gate let the span through.
            '--set',
            'epochs=1',
            '--set',
            'min_train_steps=0'
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False)
    return process.returncode, process.stderr


def _assert_stopped_at_the_gate(code, log, home, pushed, *words):
    """Exit 2, the last line names the feature and the anomaly (`words`),
    nothing after the DataGate ran, nothing new pushed; the stopped run's
    report says it failed and why."""
    assert code == 2, log
    last = log.strip().splitlines()[-1]
    assert last.startswith('error: data validation found anomalies: '), log
    assert all(word in last for word in words), last
    assert '] DataGate ...' in log and '] Transform ...' not in log, log
    assert os.listdir(os.path.join(home, 'serving',
                                   'rnn')) == [os.path.basename(pushed)]
    [report] = re.findall(r'\] report: (\S+)$', log, re.M)
    with open(report, encoding='utf-8') as f:
        page = html.unescape(f.read())
    assert 'failed' in page and all(word in page for word in words)


def test_a_span_that_breaks_the_curated_schema_stops_before_transform(
        rnn_run, tmp_path):
    """The first span's schema, curated with the sequence values' domain:
    a later span outside it stops the run at the DataGate."""
    summary, _, home, _ = rnn_run
    # The first run's, named by its execution id.
    inferred = min(glob.glob(
        os.path.join(home, 'pipelines', 'rnn-pipeline', 'SchemaGen', 'schema',
                     '*', 'schema.pbtxt')),
                   key=lambda path: int(path.split(os.sep)[-2]))
    schema = tfdv.load_schema_text(inferred)
    # write_ts_dataset's values lie within [-10, 15].
    tfdv.get_feature(schema, names.SEQUENCE_KEY).float_domain.CopyFrom(
        schema_pb2.FloatDomain(min=-20.0, max=20.0))
    curated = str(tmp_path / 'schema.pbtxt')
    tfdv.write_schema_text(schema, curated)
    data = datasets.write_ts_dataset(str(tmp_path / 'data'),
                                     train=30,
                                     test=12,
                                     offset=100.0)
    code, log = _gate_run(home, data, '--set', f'schema_path={curated}')
    _assert_stopped_at_the_gate(code, log, home, summary['pushed_model'],
                                f"feature '{names.SEQUENCE_KEY}'",
                                'Unexpectedly high value')


def test_stop_on_drift_stops_a_drifted_span_before_transform(rnn_run, tmp_path):
    """Values shifted far from the last passed span's: with stop_on_drift
    the run stops at the DataGate, naming the drifted feature. The stopped
    span does not become the baseline: the same span again is stopped
    again."""
    summary, _, home, _ = rnn_run
    data = datasets.write_ts_dataset(str(tmp_path / 'data'),
                                     train=60,
                                     test=30,
                                     offset=30.0)
    for _ in range(2):
        code, log = _gate_run(home, data, '--set', 'stop_on_drift=true')
        _assert_stopped_at_the_gate(code, log, home, summary['pushed_model'],
                                    f"feature '{names.SEQUENCE_KEY}'",
                                    'Jensen-Shannon')


# Fewer steps than the profile's minimum: three trainings (two trials and
# the Trainer) on 60 series; the first trial the profile's own values; every
# trial with the rate's cosine decay, a setting given (the search holds it).
FCN_FLAGS = ('--model', 'fcn', '--set', 'tune_trials=2', '--set',
             'min_train_steps=60', '--set', 'learning_rate_decay=cosine')


@pytest.fixture(scope='module')
def fcn_run(tmp_path_factory):
    """One smoke run of the 1-D convnet (FCN) pipeline on small sequences,
    with a random search of two trials before the Trainer."""
    root = tmp_path_factory.mktemp('fcn')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    summary, log = run_pipeline(*FCN_FLAGS, '--data', data, '--home', home)
    assert summary is not None, log
    return summary, data, home, log


@pytest.fixture(scope='module')
def inception_time_run(tmp_path_factory):
    """One run of the InceptionTime pipeline on small sequences, no Tuner:
    as the RNN's run, a few epochs of two steps (the classes differ in
    their means)."""
    root = tmp_path_factory.mktemp('inception_time')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    summary, log = run_pipeline('--model', 'inception_time', '--data', data,
                                '--home', home, '--set', 'epochs=10', '--set',
                                'min_train_steps=0', '--set',
                                'learning_rate=0.01')
    assert summary is not None, log
    return summary, data, home, log


@pytest.mark.parametrize('family', ['fcn', 'inception_time'])
def test_convolutional_runs_push_a_model_that_ignores_padding(family, request):
    summary, data, _, log = request.getfixturevalue(f'{family}_run')
    assert summary['model'] == family
    assert summary['blessed'] is True, log
    assert summary['accuracy'] > 0.6, summary
    model = tf.saved_model.load(summary['pushed_model'])
    serve = _signature(model, signatures.SEQUENCE_SIGNATURE)

    sequences = list(ts_format.read_ts(os.path.join(data, 'Toy_TEST.ts')))[:6]
    short = min(sequences, key=lambda s: len(s.values))
    longest = max(len(s.values) for s in sequences)

    def scores_of_short(batch, width):
        """`short`'s scores, sent first in `batch` padded to `width`."""
        padded = np.full((len(batch), width, 3), 7.0, np.float32)
        for i, s in enumerate(batch):
            padded[i, :len(s.values)] = s.values
        return serve(
            sequences=tf.constant(padded),
            lengths=tf.constant([len(s.values) for s in batch],
                                tf.int64))[signatures.SCORES_OUTPUT].numpy()[0]

    alone = scores_of_short([short], len(short.values))
    # Padded to two lengths, and inside the model padded to the batch's
    # longest sequence: the same answer.
    np.testing.assert_allclose(scores_of_short([short] + sequences, longest),
                               alone,
                               atol=1e-5)
    np.testing.assert_allclose(scores_of_short([short] + sequences,
                                               longest + 20),
                               alone,
                               atol=1e-5)
    class_index = {'a': 0, 'b': 1, 'c': 2}
    from_examples = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant([
            features.sequence_example(short.values, class_index[short.label])
        ]))
    np.testing.assert_allclose(
        from_examples[signatures.SCORES_OUTPUT].numpy()[0], alone, atol=1e-5)


def test_bad_data_ends_the_run_with_one_line_naming_the_file(tmp_path):
    data = datasets.write_idx_dataset(str(tmp_path / 'data'), train=40, test=10)
    labels = os.path.join(data, 't10k-labels-idx1-ubyte.gz')
    datasets.write_idx(labels, np.full(10, 12))  # labels out of range
    process = subprocess.run([
        sys.executable, '-m', 'pipeline', 'run', '--model', 'convnet', '--data',
        data, '--home',
        str(tmp_path / 'home')
    ],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             timeout=1800,
                             check=False)
    assert process.returncode == 2
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and labels in last, process.stderr
    assert not glob.glob(str(tmp_path / 'home' / 'serving' / '*' / '*'))


def _only_file(pattern):
    matches = glob.glob(pattern)
    assert len(matches) == 1, (pattern, matches)
    with open(matches[0], encoding='utf-8') as f:
        return json.load(f)


def test_tuner_tries_two_trials_and_the_trainer_trains_the_best(fcn_run):
    summary, data, home, log = fcn_run
    outputs = os.path.join(home, 'pipelines', 'fcn-pipeline', 'Tuner')
    trials = _only_file(
        os.path.join(outputs, 'tuner_results', '*', 'tuner_results.json'))
    best = _only_file(
        os.path.join(outputs, 'best_hyperparameters', '*',
                     'best_hyperparameters.txt'))['values']
    assert len(trials) == 2, trials
    assert all(0.0 <= t['score'] <= 1.0 for t in trials)
    best_trial = max(trials, key=lambda t: t['score'])
    assert {k: best_trial[k] for k in best} == best
    # The search chose between the sequence families (tune_families, on by
    # default; the second trial, seed 42, is the RNN's). The pushed model
    # is the best trial's family with its architecture: for the FCN,
    # `depth` blocks of `width`, 2 x `width`, ... filters; for the RNN,
    # recurrent layers and no convolution.
    family = best['family']
    assert {t['family'] for t in trials} <= {'fcn', 'rnn', 'inception_time'
                                            } and len(trials) == 2, trials
    model = tf.saved_model.load(summary['pushed_model'])
    variable_names = [
        v.name
        for v in tf.train.TrackableView(model).descendants()
        if isinstance(v, tf.Variable)
    ]
    kernels = sorted((v.name, v.shape[-1])
                     for v in tf.train.TrackableView(model).descendants()
                     if isinstance(v, tf.Variable) and
                     v.name.startswith('block') and 'conv' in v.name)
    if family == 'fcn':
        width, depth = best['fcn/width'], best['fcn/depth']
        assert [filters for _, filters in kernels] == [width, 2 * width, width
                                                      ][:depth], (kernels, best)
    elif family == 'inception_time':
        assert not kernels and any(
            'module0_' in name for name in variable_names), variable_names
    else:
        assert not kernels and any(
            'rnn0' in name for name in variable_names), variable_names
    # One trial (the first) was the profile's own values, the FCN's (a
    # family's values are named in its scope), read here from the profile
    # by hand: `width` and `depth` are its conv_filters' first and count.
    smoke = {
        **settings.family_defaults('fcn'),
        **profiles.MODELS['fcn'].profiles['smoke']
    }
    profile = {
        'family': 'fcn',
        'fcn/width': smoke['conv_filters'][0],
        'fcn/depth': len(smoke['conv_filters']),
        'fcn/dropout': smoke['dropout'],
        'fcn/learning_rate': smoke['learning_rate'],
        'fcn/learning_rate_decay': 'cosine',
        'fcn/batch_size': smoke['batch_size'],
        'fcn/training_length': smoke['training_length'],
    }
    assert any(
        {key: t.get(key) for key in profile} == profile for t in trials), (
            profile, trials)
    assert {t[f"{t['family']}/learning_rate_decay"] for t in trials
           } == {'cosine'}, trials
    report = _only_file(
        os.path.join(home, 'pipelines', 'fcn-pipeline', 'Trainer', 'model_run',
                     '*', 'training.json'))
    assert report['family'] == family
    # A cosine decay is a schedule: no plateau halving on top of it.
    assert report['learning_rate_decay'] == 'cosine'
    assert not report['lr_plateau']

    # A rerun on the same data takes the Tuner's result from the cache.
    again, log = run_pipeline(*FCN_FLAGS, '--data', data, '--home', home)
    assert again is not None, log
    assert any(
        line.endswith('(cached)')
        for line in log.splitlines()
        if '] Tuner done' in line), log
