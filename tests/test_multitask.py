"""The multi-task family (models/multitask/): class folders plus a class ->
group mapping file, through the whole pipeline to a pushed model that our
server answers with every head.

One real `python -m pipeline run --model multitask` on a tiny class-folder
set (two epochs, no minimum of steps) is shared by the tests that read its
examples, its evaluation and its pushed model; one training step and the
bad mapping files run in this process.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow.core.example import example_pb2

from common import names
from common import signatures
from models.multitask import model as multitask
from pipeline import cli
from pipeline import pipeline as pipeline_lib
from serving import client as client_lib
from tests import datasets
from tests.serving import server_utils

# Heavy (tests/conftest.py): one multitask run.
pytestmark = pytest.mark.heavy(95)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ['boot', 'coat', 'sandal', 'shirt']
GROUPS = {
    'boot': 'footwear',
    'sandal': 'footwear',
    'coat': 'tops',
    'shirt': 'tops'
}
GROUP_NAMES = ['footwear', 'tops']
PER_CLASS = 12


def _data(folder: str) -> str:
    datasets.write_class_folders(folder, CLASSES, per_class=PER_CLASS)
    with open(os.path.join(folder, names.GROUPS_FILE), 'w',
              encoding='utf-8') as f:
        json.dump(GROUPS, f)
    return folder


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """One pipeline run from the command line: (summary, home, stderr)."""
    root = tmp_path_factory.mktemp('multitask')
    data = _data(str(root / 'data'))
    home = str(root / 'home')
    process = subprocess.run([
        sys.executable, '-m', 'pipeline', 'run', '--model', 'multitask',
        '--data', data, '--home', home, '--set', 'min_train_steps=0', '--set',
        'epochs=2', '--set', 'min_accuracy=0'
    ],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             timeout=3600,
                             check=False)
    lines = [
        line for line in process.stdout.splitlines() if line.startswith('{')
    ]
    assert process.returncode == 0 and lines, process.stderr[-5000:]
    return json.loads(lines[-1]), home, process.stderr


def _component_output(home: str, component: str, output: str) -> str:
    found = sorted(
        glob.glob(
            os.path.join(home, 'pipelines', 'multitask-pipeline', component,
                         output, '*')))
    assert found, (component, output)
    return found[-1]


def _test_examples(home: str, count: int = 8):
    split = os.path.join(
        _component_output(home, 'FileBasedExampleGen', 'examples'),
        'Split-test')
    files = sorted(glob.glob(os.path.join(split, '*.gz')))
    return [
        r.numpy() for r in tf.data.TFRecordDataset(files, 'GZIP').take(count)
    ]


def test_every_example_carries_its_class_and_its_group(run):
    _, home, _ = run
    examples = _component_output(home, 'FileBasedExampleGen', 'examples')
    files = glob.glob(os.path.join(examples, 'Split-*', '*.gz'))
    seen = 0
    for record in tf.data.TFRecordDataset(files, 'GZIP'):
        feature = example_pb2.Example.FromString(
            record.numpy()).features.feature
        label = feature[names.LABEL_KEY].int64_list.value[0]
        group = feature[names.GROUP_LABEL_KEY].int64_list.value
        assert list(group) == [GROUP_NAMES.index(GROUPS[CLASSES[label]])]
        seen += 1
    assert seen == 2 * PER_CLASS * len(CLASSES)


def test_the_pushed_model_answers_every_head_and_classifies_by_the_primary(run):
    summary, home, _ = run
    assert summary['blessed'] and summary['pushed_model'], summary
    model = tf.saved_model.load(summary['pushed_model'])
    examples = tf.constant(_test_examples(home))
    batch = int(examples.shape[0])
    default = model.signatures[signatures.DEFAULT_SIGNATURE](inputs=examples)
    # Classify's signature: two outputs, the primary (class) head's.
    assert sorted(default) == [
        signatures.CLASSES_OUTPUT, signatures.SCORES_OUTPUT
    ]
    every = model.signatures[signatures.PREDICT_SIGNATURE](inputs=examples)
    sizes = {signatures.CLASS_TASK: CLASSES, signatures.GROUP_TASK: GROUP_NAMES}
    assert sorted(every) == sorted(
        [signatures.SCORES_OUTPUT, signatures.CLASSES_OUTPUT] + [
            signatures.task_output(task, output)
            for task in sizes
            for output in (signatures.SCORES_OUTPUT, signatures.CLASSES_OUTPUT)
        ])
    for task, task_names in sizes.items():
        scores = every[signatures.task_output(
            task, signatures.SCORES_OUTPUT)].numpy()
        classes = every[signatures.task_output(
            task, signatures.CLASSES_OUTPUT)].numpy()
        assert scores.shape == classes.shape == (batch, len(task_names))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert [[c.decode() for c in row] for row in classes
               ] == [task_names] * batch
    class_scores = every[signatures.task_output(
        signatures.CLASS_TASK, signatures.SCORES_OUTPUT)].numpy()
    np.testing.assert_allclose(default[signatures.SCORES_OUTPUT].numpy(),
                               class_scores,
                               atol=1e-6)
    # The image signature answers the same from the images' bytes.
    images = [
        example_pb2.Example.FromString(e).features.feature[
            names.IMAGE_KEY].bytes_list.value[0] for e in examples.numpy()
    ]
    by_image = model.signatures[signatures.IMAGE_SIGNATURE](
        images=tf.constant(images))
    for name, value in every.items():
        if value.dtype == tf.float32:
            np.testing.assert_allclose(by_image[name].numpy(),
                                       value.numpy(),
                                       atol=1e-5)


def test_our_server_answers_predict_with_every_head_and_classify(run, tmp_path):
    summary, home, _ = run
    base = os.path.dirname(summary['pushed_model'])
    examples = _test_examples(home)
    server = server_utils.start_model_server(
        tmp_path, ['--model_name=multitask', f'--model_base_path={base}'],
        rest=False)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            client.wait_until_available('multitask', 120)
            every = client.predict('multitask',
                                   {signatures.EXAMPLES_INPUT: examples},
                                   signature=signatures.PREDICT_SIGNATURE)
            classified = client.classify_examples('multitask', examples)
    finally:
        server.stop()
    group_scores = every[signatures.task_output(signatures.GROUP_TASK,
                                                signatures.SCORES_OUTPUT)]
    assert group_scores.shape == (len(examples), len(GROUP_NAMES))
    class_scores = every[signatures.task_output(signatures.CLASS_TASK,
                                                signatures.SCORES_OUTPUT)]
    assert [p.top_class for p in classified
           ] == [CLASSES[i] for i in class_scores.argmax(axis=1)]
    assert all(len(p.classes) == len(CLASSES) for p in classified)


def test_the_evaluator_measures_each_head_and_blesses_by_the_primary(run):
    _, home, _ = run
    evaluation = _component_output(home, 'Evaluator', 'evaluation')
    overall = {}
    for metrics in tfma.load_metrics(evaluation):
        if metrics.slice_key.single_slice_keys:
            continue
        for entry in metrics.metric_keys_and_values:
            if not entry.key.is_diff:
                overall[(entry.key.name, entry.key.output_name)] = (
                    entry.value.double_value.value)
    class_output = signatures.task_output(signatures.CLASS_TASK,
                                          signatures.SCORES_OUTPUT)
    group_output = signatures.task_output(signatures.GROUP_TASK,
                                          signatures.SCORES_OUTPUT)
    assert 0 <= overall[(names.ACCURACY_METRIC, class_output)] <= 1
    assert 0 <= overall[('group_accuracy', group_output)] <= 1
    # The threshold is on the primary head's accuracy; --set
    # primary_task=group moves it (and `accuracy`) to the group head.
    for primary, other in ((signatures.CLASS_TASK, signatures.GROUP_TASK),
                           (signatures.GROUP_TASK, signatures.CLASS_TASK)):
        config = pipeline_lib.eval_config(0.5, 0.0, primary)
        thresholded = [
            list(spec.output_names)
            for spec in config.metrics_specs
            for metric in spec.metrics
            if metric.per_slice_thresholds
        ]
        assert thresholded == [[
            signatures.task_output(primary, signatures.SCORES_OUTPUT)
        ]]
        other_spec = [
            spec for spec in config.metrics_specs if list(spec.output_names) ==
            [signatures.task_output(other, signatures.SCORES_OUTPUT)]
        ]
        assert f'{other}_accuracy' in other_spec[0].metrics[0].config


def _params(**weights):
    return {
        'image_shape': [12, 12, 1],
        'conv_filters': [4],
        'dense_units': 8,
        'dropout': 0.0,
        'class_names': CLASSES,
        'group_names': GROUP_NAMES,
        'learning_rate': 0.01,
        **weights
    }


@pytest.mark.parametrize('class_loss_weight', [1.0, 0.0])
def test_one_training_step_lowers_each_weighted_heads_loss(class_loss_weight):
    tf.keras.utils.set_random_seed(0)
    params = _params(class_loss_weight=class_loss_weight)
    model = multitask.build_model(params, len(CLASSES))
    multitask.compile_model(model, params)
    rng = np.random.default_rng(0)
    images = {
        'image': tf.constant(rng.normal(size=(16, 12, 12, 1)), tf.float32)
    }
    labels = np.arange(16) % len(CLASSES)
    groups = np.array(
        [GROUP_NAMES.index(GROUPS[CLASSES[label]]) for label in labels])
    targets = multitask.to_targets({names.GROUP_LABEL_KEY: tf.constant(groups)},
                                   tf.constant(labels), params)
    assert targets.shape == (16, 2)

    def losses():
        # Batch statistics, no dropout: the step's own view of the batch.
        outputs = model(images, training=True)
        return {
            task:
                float(
                    tf.reduce_mean(
                        tf.keras.losses.sparse_categorical_crossentropy(
                            targets[:, column], outputs[:,
                                                        start:start + size])))
            for column, (task, start,
                         size) in enumerate(((signatures.CLASS_TASK, 0,
                                              len(CLASSES)),
                                             (signatures.GROUP_TASK,
                                              len(CLASSES), len(GROUP_NAMES))))
        }

    class_head = model.get_layer('class_head').kernel.numpy().copy()
    before = losses()
    model.train_on_batch(images, targets)
    after = losses()
    assert after[signatures.GROUP_TASK] < before[signatures.GROUP_TASK]
    if class_loss_weight:
        assert after[signatures.CLASS_TASK] < before[signatures.CLASS_TASK]
    else:  # Weight 0: the class head learns nothing.
        np.testing.assert_array_equal(
            model.get_layer('class_head').kernel.numpy(), class_head)


def _no_file(d):
    os.remove(os.path.join(d, names.GROUPS_FILE))
    return 'no class -> group mapping file'


def _not_json_elsewhere(d):
    """A file named by --set groups_file=, not the data's own."""
    path = os.path.join(os.path.dirname(d), 'my groups.json')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('{"boot": "footwear",\n "coat": tops}\n')
    return 'not JSON', path


def _unknown_class(d):
    with open(os.path.join(d, names.GROUPS_FILE), 'w', encoding='utf-8') as f:
        json.dump({**GROUPS, 'hat': 'tops'}, f)
    return 'names classes the data does not have: hat'


def _class_without_group(d):
    with open(os.path.join(d, names.GROUPS_FILE), 'w', encoding='utf-8') as f:
        json.dump({c: g for c, g in GROUPS.items() if c != 'coat'}, f)
    return 'gives no group for the classes coat'


def _one_group(d):
    with open(os.path.join(d, names.GROUPS_FILE), 'w', encoding='utf-8') as f:
        json.dump({c: 'all' for c in GROUPS}, f)
    return 'puts every class in one group'


@pytest.mark.parametrize('fault', [
    _no_file, _not_json_elsewhere, _unknown_class, _class_without_group,
    _one_group
],
                         ids=lambda f: f.__name__.strip('_'))
def test_a_bad_mapping_file_exits_2_with_one_line_before_any_component(
        fault, tmp_path, capsys):
    data = str(tmp_path / 'data')
    datasets.write_class_folders(data, CLASSES, per_class=1)
    with open(os.path.join(data, names.GROUPS_FILE), 'w',
              encoding='utf-8') as f:
        json.dump(GROUPS, f)
    path = os.path.join(data, names.GROUPS_FILE)
    fragment = fault(data)
    overrides = []
    if isinstance(fragment, tuple):
        fragment, path = fragment
        overrides = ['--set', f'groups_file={path}']
    home = tmp_path / 'home'
    code = cli.main([
        'run', '--model', 'multitask', '--data', data, '--home',
        str(home), *overrides
    ])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert code == cli.EXIT_BAD_DATA, err
    assert len(errors) == 1, err
    assert errors[0].startswith(f'error: {path}'), errors[0]
    assert fragment in errors[0], errors[0]
    assert 'Traceback' not in err, err
    assert not (home / 'metadata.sqlite').exists()  # No component ran.
