"""The ExampleGen executor run for real on Beam over every raw layout,
including bad files: errors name the file, or (when configured) are skipped
and counted."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from common import names
from components.example_gen import data_source
from components.example_gen import executor
from formats.errors import InputDataError
from models import data_facts
from models import features
from pipeline import beam_runners
from pipeline import configs
from pipeline import pipeline as pipeline_lib
from tests import datasets


def run_example_gen(tmp_path, source, **settings):
    """Runs the executor on `source` with the exec properties of the
    pipeline's own ExampleGen (pipeline.create_pipeline, `settings` given as
    a user's `--set`; the layout is learned again at run time); returns
    split -> list of tf.Example."""
    config = configs.RunConfig(
        model='convnet' if source.kind == 'images' else 'rnn',
        profile='full',
        overrides=tuple(settings.items()))
    [example_gen] = [
        component for component in pipeline_lib.create_pipeline(
            config, source.root, serving_check=False).components
        if component.id == 'FileBasedExampleGen'
    ]
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / 'examples')
    # As the launcher hands them over: protos as JSON.
    exec_properties = {
        key: (proto_utils.proto_to_json(value) if isinstance(
            value, message.Message) else value)
        for key, value in example_gen.exec_properties.items()
        if value is not None
    }
    context = base_beam_executor.BaseBeamExecutor.Context(
        tmp_dir=str(tmp_path / 'tmp'),
        unique_id='test',
        beam_pipeline_args=beam_runners.default_beam_args())
    executor.Executor(context).Do({}, {'examples': [examples]}, exec_properties)
    result = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = glob.glob(
            os.path.join(artifact_utils.get_split_uri([examples], split),
                         '*.gz'))
        result[split] = [
            tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type='GZIP')
        ]
    return result, examples


def _labels(examples):
    return sorted(e.features.feature[names.LABEL_KEY].int64_list.value[0]
                  for e in examples)


def test_idx_files_give_train_and_test_and_a_stable_eval_carved_from_train(
        tmp_path):
    folder = datasets.write_idx_dataset(str(tmp_path / 'idx'),
                                        train=60,
                                        test=20,
                                        num_classes=10)
    source = data_source.detect(folder, names.IMAGES)
    assert source.format == 'idx'
    assert source.class_names == tuple(str(i) for i in range(10))

    splits, _ = run_example_gen(tmp_path / 'run1', source)
    again, _ = run_example_gen(tmp_path / 'run2', source)

    assert set(splits) == {'train', 'eval', 'test'}
    assert len(splits['train']) + len(splits['eval']) == 60
    assert 0 < len(splits['eval']) < 20
    assert _labels(splits['test']) == sorted(np.arange(20) % 10)
    assert _labels(again['eval']) == _labels(splits['eval'])
    # The image is the PNG of the IDX pixels.
    images, labels = datasets.images_with_labels(20, 10, seed=1)
    by_label = {}
    for example in splits['test']:
        label = example.features.feature['label'].int64_list.value[0]
        png = example.features.feature['image'].bytes_list.value[0]
        by_label.setdefault(label, []).append(tf.io.decode_png(png).numpy())
    assert any(
        np.array_equal(p[..., 0], images[0]) for p in by_label[labels[0]])


def test_idx_label_out_of_range_fails_naming_the_labels_file(tmp_path):
    folder = datasets.write_idx_dataset(str(tmp_path / 'idx'), num_classes=10)
    source = data_source.detect(folder, names.IMAGES)
    # Detection already refuses such labels; ExampleGen checks them again
    # (the data may change between the two).
    (tmp_path / 'idx' / 'class_names.txt').write_text('a\nb\nc\n')
    with pytest.raises(InputDataError) as error:
        data_source.detect(folder, names.IMAGES)
    assert 'labels-idx1-ubyte.gz' in error.value.path
    source = dataclasses.replace(source, class_names=('a', 'b', 'c'))
    with pytest.raises(InputDataError) as error:
        run_example_gen(tmp_path, source)
    assert 'labels-idx1-ubyte.gz' in error.value.path
    assert 'range' in str(error.value)


def test_truncated_idx_file_fails_naming_the_file(tmp_path):
    folder = datasets.write_idx_dataset(str(tmp_path / 'idx'))
    images = os.path.join(folder, 't10k-images-idx3-ubyte.gz')
    import gzip  # pylint: disable=import-outside-toplevel
    with gzip.open(images, 'rb') as f:
        data = f.read()
    source = data_source.detect(folder, names.IMAGES)
    with gzip.open(images, 'wb') as f:
        f.write(data[:-100])
    with pytest.raises(InputDataError) as error:
        run_example_gen(tmp_path, source)
    assert error.value.path == images
    assert 'truncated' in error.value.reason
    # Each chunk of the file reports the one fault: it is one bad record.
    assert 'more bad records' not in error.value.reason


def test_class_folders_with_a_corrupt_image_fail_or_skip_and_count(tmp_path):
    root = datasets.write_class_folders(str(tmp_path / 'folders'),
                                        ['cat', 'dog'],
                                        per_class=4)
    corrupt = tmp_path / 'folders' / 'train' / 'dog' / 'broken.png'
    corrupt.write_bytes(datasets.png_bytes(np.zeros((9, 9), np.uint8))[:40])
    source = data_source.detect(root, names.IMAGES)
    assert source.format == 'class_folders'
    assert source.class_names == ('cat', 'dog')

    with pytest.raises(InputDataError) as error:
        run_example_gen(tmp_path / 'fail', source)
    assert error.value.path.endswith('broken.png')

    splits, examples = run_example_gen(tmp_path / 'skip',
                                       source,
                                       on_bad_record='skip')
    assert examples.get_int_custom_property(executor.BAD_RECORDS_PROPERTY) == 1
    assert len(splits['train']) + len(splits['eval']) == 8
    assert _labels(splits['test']) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_a_validation_folder_is_read_as_the_eval_split(tmp_path):
    """train/ and validation/ class folders: validation/'s images are the
    eval split; only test is carved from train."""
    root = datasets.write_class_folders(str(tmp_path / 'folders'),
                                        ['cat', 'dog'],
                                        per_class=2,
                                        splits=('train', 'validation'))
    source = data_source.detect(root, names.IMAGES)
    assert source.split_patterns == {
        'train': 'train/*/*',
        'eval': 'validation/*/*'
    }

    splits, _ = run_example_gen(tmp_path, source)

    assert _labels(splits['eval']) == [0, 0, 1, 1]
    assert len(splits['train']) + len(splits['test']) == 4


def _write_tfrecords(path, images, labels, compress):
    options = tf.io.TFRecordOptions('GZIP' if compress else '')
    with tf.io.TFRecordWriter(path, options) as writer:
        for image, label in zip(images, labels, strict=True):
            writer.write(
                features.image_example(datasets.png_bytes(image), int(label)))


def test_tfrecords_with_class_names_are_detected_and_read(tmp_path):
    """The README's third image layout: train/ and test/ TFRecords of
    tf.Example (`image` bytes, `label` int64), gzipped or not, with a
    class_names.txt; a label outside it names the file and the record."""
    root = tmp_path / 'records'
    images, labels = datasets.images_with_labels(24, 3, seed=2)
    for split, rows, compress in (('train', slice(0, 16), True),
                                  ('test', slice(16, 24), False)):
        (root / split).mkdir(parents=True)
        _write_tfrecords(str(root / split / 'part-0.tfrecord'), images[rows],
                         labels[rows], compress)
    (root / 'class_names.txt').write_text('boot\ncoat\ndress\n')
    source = data_source.detect(str(root), names.IMAGES)
    assert source.format == 'tfrecord'
    assert source.class_names == ('boot', 'coat', 'dress')

    splits, _ = run_example_gen(tmp_path / 'run', source)
    assert set(splits) == {'train', 'eval', 'test'}
    assert len(splits['train']) + len(splits['eval']) == 16
    assert _labels(splits['test']) == sorted(labels[16:])
    first = splits['test'][0].features.feature
    assert first[names.IMAGE_KEY].bytes_list.value[0] in {
        datasets.png_bytes(image) for image in images[16:]
    }

    bad = str(root / 'test' / 'part-1.tfrecord')
    _write_tfrecords(bad, images[:2], [1, 3], compress=False)
    with pytest.raises(
            InputDataError,
            match=r'record 1 has label 3, outside \[0, 3\)') as error:
        run_example_gen(tmp_path / 'bad', source)
    assert error.value.path == bad


def test_ts_files_become_sequence_examples_with_their_real_lengths(tmp_path):
    folder = datasets.write_ts_dataset(str(tmp_path / 'ts'), train=30, test=12)
    source = data_source.detect(os.path.join(folder, 'Toy'), names.SEQUENCES)
    assert (source.format, source.num_channels) == ('ts', 3)
    assert source.class_names == ('a', 'b', 'c')

    splits, examples = run_example_gen(tmp_path, source)

    # What the executor learned from the data, for Transform and the Trainer.
    assert data_facts.read(examples.uri) == {
        'class_names': ['a', 'b', 'c'],
        'num_channels': 3,
        'format': 'ts',
        'span': 0
    }
    assert len(splits['test']) == 12
    lengths = {}
    for example in splits['test']:
        feature = example.features.feature
        length = feature[names.LENGTH_KEY].int64_list.value[0]
        values = feature[names.SEQUENCE_KEY].float_list.value
        assert len(values) == 3 * length
        lengths[length] = True
    assert len(lengths) > 1  # variable lengths kept, no padding


def test_spans_are_found_and_patterns_carry_the_span_placeholder(tmp_path):
    for span in (1, 2):
        datasets.write_idx_dataset(str(tmp_path / 'data' / f'span-{span}'))
    source = data_source.detect(str(tmp_path / 'data'), names.IMAGES)
    assert source.has_spans
    assert source.split_patterns['train'].startswith('span-{SPAN}/')


def test_the_executor_reads_the_newest_span_it_finds_when_it_runs(tmp_path):
    datasets.write_idx_dataset(str(tmp_path / 'data' / 'span-1'),
                               train=30,
                               test=10)
    source = data_source.detect(str(tmp_path / 'data'), names.IMAGES)
    # A span lands after the pipeline was built: the run reads it.
    datasets.write_idx_dataset(str(tmp_path / 'data' / 'span-2'),
                               train=60,
                               test=20)

    splits, examples = run_example_gen(tmp_path, source)

    assert examples.span == 2
    assert data_facts.read(examples.uri)['span'] == 2
    assert sum(len(s) for s in splits.values()) == 80


def test_a_span_window_set_by_the_user_reads_the_newest_spans(tmp_path):
    """`--set span_window=2`, through the pipeline's ExampleGen: the newest
    span and the one before it, as one data set (span 1 is left out)."""
    for span, (train, test) in ((1, (10, 5)), (2, (20, 6)), (3, (40, 8))):
        datasets.write_idx_dataset(str(tmp_path / 'data' / f'span-{span}'),
                                   train=train,
                                   test=test)
    source = data_source.detect(str(tmp_path / 'data'), names.IMAGES)

    splits, examples = run_example_gen(tmp_path, source, span_window=2)

    assert examples.span == 3
    assert len(splits['train']) + len(splits['eval']) == 20 + 40
    assert len(splits['test']) == 6 + 8


def test_a_folder_without_data_is_a_clear_error(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputDataError) as error:
        data_source.detect(str(tmp_path / 'empty'), names.IMAGES)
    assert str(tmp_path / 'empty') in str(error.value)


def test_a_span_window_reads_the_newest_spans_that_exist(tmp_path):
    for span in (1, 2, 4):
        (tmp_path / f'span-{span}').mkdir()
    properties = {'span': 4, 'input_base': str(tmp_path)}
    pattern = 'span-4/train-images-idx*'
    assert executor._span_window(pattern, properties, 1) == [pattern]  # pylint: disable=protected-access
    assert executor._span_window(pattern, properties, 3) == [  # pylint: disable=protected-access
        'span-2/train-images-idx*', 'span-4/train-images-idx*'
    ]
