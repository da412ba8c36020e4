"""Tests for components/serving_check/: the executor runs for real.

Each executor run starts a real model server subprocess on a tiny SavedModel
with the project's serving contract (tests/tiny_models.py).
"""

import json
import os
from typing import List, Sequence

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils
from tfx.utils import proto_utils

from common import signatures
from components.pusher import executor as pusher_executor
from components.serving_check import answer_checks
from components.serving_check import component
from components.serving_check import errors
from components.serving_check import executor
from components.serving_check import request_builder
from tests import tiny_models

NUM_EXAMPLES = 5

# --- Artifacts ---------------------------------------------------------------


def _examples_artifact(root: str,
                       records: Sequence[bytes],
                       split: str = 'test') -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = root
    examples.split_names = artifact_utils.encode_split_names(['train', split])
    for name in ('train', split):
        os.makedirs(os.path.join(root, f'Split-{name}'), exist_ok=True)
        path = os.path.join(root, f'Split-{name}',
                            'data_tfrecord-00000-of-00001.gz')
        with tf.io.TFRecordWriter(path, options='GZIP') as writer:
            for record in records:
                writer.write(record)
    return examples


def _model_artifact(root: str) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = root
    return model


def _run_check(tmp_path,
               name: str,
               model_root: str,
               records: Sequence[bytes],
               timeout: int = 90) -> standard_artifacts.InfraBlessing:
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / f'{name}_blessing')
    os.makedirs(blessing.uri)
    executor.Executor().Do(
        {
            executor.MODEL_KEY: [_model_artifact(model_root)],
            executor.EXAMPLES_KEY: [
                _examples_artifact(str(tmp_path / f'{name}_examples'), records)
            ]
        }, {executor.BLESSING_KEY: [blessing]}, {
            executor.SPLIT_KEY: 'test',
            executor.NUM_EXAMPLES_KEY: NUM_EXAMPLES,
            executor.TIMEOUT_SECONDS_KEY: timeout,
            executor.MODEL_NAME_KEY: name
        })
    return blessing


def _serving_dir(root) -> str:
    return path_utils.serving_model_dir(str(root))


def _read_warmup(model_dir: str) -> List[prediction_log_pb2.PredictionLog]:
    path = path_utils.warmup_file_path(model_dir)
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]


def _not_blessed_reason(blessing) -> str:
    with open(os.path.join(blessing.uri, executor.NOT_BLESSED_FILENAME)) as f:
        return f.read()


# --- Executor runs with a real server ---------------------------------------


@pytest.fixture(scope='module')
def image_blessing(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('image')
    model_root = tmp_path / 'model'
    tiny_models.save_image_model(_serving_dir(model_root))
    return _run_check(tmp_path, 'convnet', str(model_root),
                      tiny_models.image_examples(NUM_EXAMPLES + 3))


def test_good_image_model_is_blessed_with_warmup(image_blessing):
    assert image_blessing.get_int_custom_property('blessed') == 1
    assert image_blessing.get_int_custom_property('has_model') == 1
    assert os.path.exists(
        os.path.join(image_blessing.uri, executor.BLESSED_FILENAME))
    stamped = path_utils.stamped_model_path(image_blessing.uri)
    logs = _read_warmup(stamped)
    # One Classify on serving_default, one Predict on serving_image.
    assert [log.WhichOneof('log_type') for log in logs
           ] == ['classify_log', 'predict_log']
    assert len(logs[0].classify_log.request.input.example_list.examples) == \
        NUM_EXAMPLES
    predict = logs[1].predict_log.request
    assert predict.model_spec.signature_name == signatures.IMAGE_SIGNATURE
    assert predict.inputs[signatures.IMAGE_INPUT].tensor_shape.dim[0].size == \
        NUM_EXAMPLES


def test_blessed_copy_loads_and_serves(image_blessing):
    stamped = path_utils.stamped_model_path(image_blessing.uri)
    loaded = tf.saved_model.load(stamped)
    outputs = loaded.signatures[signatures.IMAGE_SIGNATURE](
        images=tf.constant([tiny_models.png_bytes(255)]))
    top = int(tf.argmax(outputs[signatures.SCORES_OUTPUT][0]))
    assert outputs[signatures.CLASSES_OUTPUT][0, top].numpy() == b'light'


def test_pusher_pushes_the_warmed_model(image_blessing, tmp_path):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / 'pushed_model')
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=str(tmp_path / 'serving' / 'convnet')))
    pusher_executor.Executor().Do(
        {'infra_blessing': [image_blessing]}, {'pushed_model': [pushed]},
        {'push_destination': proto_utils.proto_to_json(destination)})
    assert pushed.get_int_custom_property('pushed') == 1
    version_dir = pushed.get_string_custom_property('pushed_destination')
    assert os.path.exists(os.path.join(version_dir, 'saved_model.pb'))
    assert len(_read_warmup(version_dir)) == 2


def test_good_sequence_model_is_blessed(tmp_path):
    model_root = tmp_path / 'model'
    tiny_models.save_sequence_model(_serving_dir(model_root))
    blessing = _run_check(tmp_path, 'rnn', str(model_root),
                          tiny_models.sequence_examples(NUM_EXAMPLES))
    assert blessing.get_int_custom_property('blessed') == 1, \
        _not_blessed_reason(blessing)
    logs = _read_warmup(path_utils.stamped_model_path(blessing.uri))
    assert len(logs) == 2
    request = logs[1].predict_log.request
    assert request.model_spec.signature_name == signatures.SEQUENCE_SIGNATURE
    assert request.inputs[signatures.LENGTH_INPUT].dtype == \
        tf.int32.as_datatype_enum


def test_model_returning_nan_is_not_blessed(tmp_path):
    model_root = tmp_path / 'model'
    tiny_models.save_image_model(_serving_dir(model_root), broken=True)
    blessing = _run_check(tmp_path, 'nan', str(model_root),
                          tiny_models.image_examples(NUM_EXAMPLES))
    assert blessing.get_int_custom_property('blessed') == 0
    assert not blessing.get_int_custom_property('has_model')
    assert 'non-finite' in _not_blessed_reason(blessing)
    assert not os.path.exists(path_utils.stamped_model_path(blessing.uri))


def test_corrupt_model_is_not_blessed(tmp_path):
    model_dir = _serving_dir(tmp_path / 'model')
    tiny_models.save_image_model(model_dir)
    with open(os.path.join(model_dir, 'saved_model.pb'), 'wb') as f:
        f.write(b'this is not a SavedModel')
    blessing = _run_check(tmp_path,
                          'corrupt',
                          str(tmp_path / 'model'),
                          tiny_models.image_examples(NUM_EXAMPLES),
                          timeout=60)
    assert blessing.get_int_custom_property('blessed') == 0
    # Found before any server starts: like tensorflow_model_server, the check
    # loads the MetaGraph tagged `serve`, and there is none.
    reason = _not_blessed_reason(blessing)
    assert 'does not answer in process' in reason
    assert "tags 'serve' could not be found" in reason


# --- Without a server --------------------------------------------------------


def test_missing_saved_model_is_not_blessed(tmp_path):
    os.makedirs(_serving_dir(tmp_path / 'model'))
    blessing = _run_check(tmp_path, 'empty', str(tmp_path / 'model'),
                          tiny_models.image_examples(2))
    assert blessing.get_int_custom_property('blessed') == 0
    assert 'saved_model.pb' in _not_blessed_reason(blessing)


def test_missing_split_raises(tmp_path):
    examples = _examples_artifact(str(tmp_path / 'examples'),
                                  tiny_models.image_examples(1),
                                  split='eval')
    with pytest.raises(ValueError,
                       match='Split does not exist over all example '
                       'artifacts: test$'):
        request_builder.read_serialized_examples(examples, 'test', 4)


def test_read_serialized_examples_limits(tmp_path):
    records = tiny_models.image_examples(4)
    examples = _examples_artifact(str(tmp_path / 'examples'), records)
    assert request_builder.read_serialized_examples(examples, 'test', 3) == \
        records[:3]


def test_check_probability_rows():
    good = [[0.2, 0.8], [0.5, 0.5]]
    names = [('a', 'b'), ('a', 'b')]
    answer_checks.check_probability_rows('x', names, good, 2)
    bad_cases = [
        (names, good, 3, 'rows'),
        (names, [[0.2, 0.9], [0.5, 0.5]], 2, 'probability'),
        (names, [[float('inf'), 0.0], [0.5, 0.5]], 2, 'non-finite'),
        ([('a', ''), ('a', 'b')], good, 2, 'empty class'),
        ([('a', 'a'), ('a', 'b')], good, 2, 'repeats'),
    ]
    for classes, scores, batch, message in bad_cases:
        with pytest.raises(errors.ModelCheckFailed, match=message):
            answer_checks.check_probability_rows('x', classes, scores, batch)


def test_check_agreement():
    answer_checks.check_agreement('x', [{
        'a': 0.3,
        'b': 0.7
    }], [{
        'a': 0.30005,
        'b': 0.69995
    }])
    with pytest.raises(errors.ModelCheckFailed, match='differ'):
        answer_checks.check_agreement('x', [{
            'a': 0.3,
            'b': 0.7
        }], [{
            'a': 0.31,
            'b': 0.69
        }])
    with pytest.raises(errors.ModelCheckFailed, match='classes'):
        answer_checks.check_agreement('x', [{
            'a': 0.3,
            'b': 0.7
        }], [{
            'a': 0.3,
            'c': 0.7
        }])
    with pytest.raises(errors.ModelCheckFailed,
                       match="differ from the SavedModel's own"):
        answer_checks.check_agreement('x', [{
            'a': 0.3,
            'b': 0.7
        }], [{
            'a': 0.4,
            'b': 0.6
        }], answer_checks.IN_PROCESS)
    with pytest.raises(errors.ModelCheckFailed, match='1 answers'):
        answer_checks.check_agreement('x', [{
            'a': 0.3,
            'b': 0.7
        }] * 2, [{
            'a': 0.3,
            'b': 0.7
        }])


def test_component_compiles_for_kubeflow_v2(tmp_path):
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    model = tfx.dsl.Importer(
        source_uri=str(tmp_path / 'model'),
        artifact_type=standard_artifacts.Model).with_id('model_importer')
    examples = tfx.dsl.Importer(
        source_uri=str(tmp_path / 'examples'),
        artifact_type=standard_artifacts.Examples).with_id('examples_importer')
    check = component.ServingCheck(model=model.outputs['result'],
                                   examples=examples.outputs['result'],
                                   model_name='convnet',
                                   num_examples=4,
                                   timeout_seconds=60)
    # The project's Pusher, as pipeline/pipeline.py builds it.
    from tfx.dsl.components.base import executor_spec  # pylint: disable=import-outside-toplevel
    pusher = tfx.components.Pusher(
        infra_blessing=check.outputs['blessing'],
        custom_executor_spec=executor_spec.ExecutorClassSpec(
            pusher_executor.Executor),
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=str(tmp_path / 'serving' / 'convnet'))))
    pipeline = tfx.dsl.Pipeline(pipeline_name='serving-check-test',
                                pipeline_root=str(tmp_path / 'root'),
                                components=[model, examples, check, pusher])
    output = tmp_path / 'pipeline.json'
    tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image='example/image:latest'),
        output_filename=str(output)).run(pipeline, write_out=True)
    spec = json.loads(output.read_text())
    executors = spec['pipelineSpec']['deploymentSpec']['executors']
    assert any('components.serving_check.executor.Executor' in json.dumps(e)
               for e in executors.values())
    assert any('components.pusher.executor.Executor' in json.dumps(e)
               for e in executors.values())
