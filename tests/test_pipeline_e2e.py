"""End to end, as a user runs it: `python -m pipeline run` on small data sets
(real Beam, real ML Metadata in SQLite, real SavedModels, the real serving
check). Here the convnet on IDX images; the sequence families (RNN, FCN) in
tests/test_pipeline_e2e_sequences.py (two modules: two test workers run
them at once).

Beam runs with the pipeline's defaults (FnApiRunner, in memory).
"""

import glob
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common import signatures
from formats import image_formats
from models import data_facts
from models import features
from pipeline import cli as pipeline_cli
from pipeline import report
from pipeline import report_html
from tests import browser
from tests import datasets
from tests import pipeline_runs

# Heavy (tests/conftest.py): the convnet's first run, its cached rerun,
# the mirrored and the worse-model runs.
pytestmark = pytest.mark.heavy(240)


@pytest.fixture(scope='module')
def convnet_run(tmp_path_factory):
    """One run of the convnet pipeline on a small IDX data set, under the
    default profile: training adapts its length to the data's size."""
    root = tmp_path_factory.mktemp('convnet')
    data = datasets.write_idx_dataset(str(root / 'data'), train=400, test=100)
    home = str(root / 'home')
    summary, log = pipeline_runs.run_pipeline('--model', 'convnet', '--data',
                                              data, '--home', home)
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


@pytest.fixture(scope='module')
def e2e_server(convnet_run, tmp_path_factory):
    """A model server for the convnet, pinned to its first run's version."""
    with pipeline_runs.pinned_server(tmp_path_factory.mktemp('e2e_server'),
                                     [convnet_run[0]]) as server:
        yield server


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


def _make_demo_commands(home):
    """`make demo HOME_DIR=home`'s pipeline commands, as `make -n` prints
    them (the recipe's lines; nothing is run)."""
    process = subprocess.run(['make', '-n', 'demo', f'HOME_DIR={home}'],
                             cwd=pipeline_runs.REPO,
                             capture_output=True,
                             text=True,
                             timeout=300,
                             check=True)
    return [
        shlex.split(line)
        for line in process.stdout.splitlines()
        if ' -m pipeline ' in line
    ]


def test_make_demo_trains_both_families_on_their_full_data(tmp_path):
    """`make demo`'s two runs (an hour together: not run here) are command
    lines the pipeline takes, the full profile of the convnet and the RNN
    into HOME_DIR, on their default data, which is there and readable:
    the checks `pipeline run` makes before it loads TensorFlow."""
    home = str(tmp_path / 'home')
    *runs, _ = _make_demo_commands(home)
    models = []
    for command in runs:
        assert command[1:4] == ['-m', 'pipeline', 'run'], command
        args = pipeline_cli.build_parser().parse_args(command[3:])
        assert (args.profile, args.home, args.data) == ('full', home, None)
        pipeline_cli._check_arguments(args)  # pylint: disable=protected-access
        models.append(args.model)
    assert models == ['convnet', 'rnn']


def test_demo_serves_the_homes_model_and_prints_its_answers(convnet_run):
    """`make demo`'s last command, `python -m pipeline demo --home H` (the
    README's third command), as the Makefile's recipe has it: serves what
    H's runs pushed and prints its answers to Fashion-MNIST's first test
    images, each beside its true class."""
    _, _, home, _ = convnet_run
    demo = _make_demo_commands(home)[-1]
    assert demo[1:] == ['-m', 'pipeline', 'demo', '--home', home], demo
    # The recipe's interpreter is the Makefile's venv's, this one under
    # `make test`; here (and under Bazel, whose runfiles hold no venv) the
    # one running the tests.
    process = subprocess.run(
        [sys.executable, *demo[1:]],
        cwd=pipeline_runs.REPO,
        capture_output=True,
        text=True,
        timeout=1800,  # Bounds a hang only.
        check=False)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert lines[0].startswith('model server on 127.0.0.1:'), lines
    assert f'serving convnet from {home}/serving' in lines[0], lines
    answers = [
        re.fullmatch(
            r'  (ok   |WRONG) fashion_mnist_test_(\d)\.png +true (.+?) +'
            r'predicted (\S+) +p=([0-9.]+)', line) for line in lines
    ]
    answers = [a.groups() for a in answers if a]
    assert [index for _, index, *_ in answers] == list('01234'), lines
    for mark, _, truth, predicted, score in answers:
        assert truth in image_formats.FASHION_MNIST_CLASS_NAMES
        # convnet_run's classes are the digits of its IDX labels.
        assert predicted in [str(i) for i in range(10)]
        assert mark == ('ok   ' if truth == predicted else 'WRONG')
        assert 0 < float(score) <= 1
    assert os.path.exists(
        os.path.join(home, 'demo_queries', 'fashion_mnist_test_4.png'))


def test_served_answers_equal_the_saved_models_own(convnet_run, e2e_server):
    """The pushed model over gRPC and REST answers as it does in process."""
    images, _ = datasets.images_with_labels(8, 10, seed=7)
    pngs = [datasets.png_bytes(image) for image in images]
    pipeline_runs.assert_served_as_in_process(
        e2e_server, convnet_run[0]['pushed_model'], signatures.IMAGE_SIGNATURE,
        {signatures.IMAGE_INPUT: np.array(pngs, object)},
        [features.image_example(png, 0) for png in pngs])


@pytest.fixture(scope='module')
def convnet_second_run(convnet_run):
    """The same run again on the same home and data, before any other run
    on it (the tests that run more on the home ask for this fixture first):
    (summary, log, the served versions after it)."""
    _, data, home, _ = convnet_run
    summary, log = pipeline_runs.run_pipeline('--model', 'convnet', '--data',
                                              data, '--home', home)
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
        cwd=pipeline_runs.REPO,
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
    summary, log = pipeline_runs.run_pipeline(
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
    summary, log = pipeline_runs.run_pipeline('--model', 'convnet', '--data',
                                              data, '--home', home, '--set',
                                              'epochs=1', '--set',
                                              'min_train_steps=0', '--set',
                                              'learning_rate=0', '--set',
                                              'min_accuracy=0')
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


def test_bad_data_ends_the_run_with_one_line_naming_the_file(tmp_path):
    data = datasets.write_idx_dataset(str(tmp_path / 'data'), train=40, test=10)
    labels = os.path.join(data, 't10k-labels-idx1-ubyte.gz')
    datasets.write_idx(labels, np.full(10, 12))  # labels out of range
    process = subprocess.run([
        sys.executable, '-m', 'pipeline', 'run', '--model', 'convnet', '--data',
        data, '--home',
        str(tmp_path / 'home')
    ],
                             cwd=pipeline_runs.REPO,
                             capture_output=True,
                             text=True,
                             timeout=1800,
                             check=False)
    assert process.returncode == 2
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and labels in last, process.stderr
    assert not glob.glob(str(tmp_path / 'home' / 'serving' / '*' / '*'))
