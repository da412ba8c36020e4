"""A tiny real tf.Transform output of the convnet's preprocessing_fn, and
the Trainer's FnArgs over it (a real TFX DataAccessor), for the tests that
run a run_fn: tests/test_distributed_training.py, tests/test_embedding.py.
"""

import os
import tempfile

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils
from tfx.components.trainer import fn_args_utils

from common import names
from models import data_facts
from models import workers
from models.convnet import preprocessing
from pipeline import beam_runners
from tests import datasets

SIZE = 12
CLASSES = 3
TRAIN, EVAL = 300, 90
PARAMS = {
    'image_shape': [SIZE, SIZE, 1],
    'conv_filters': [4],
    'dense_units': 16,
    'dropout': 0.1,
    'epochs': 3,
    'batch_size': 16,
    'learning_rate': 0.01,
    'seed': 7,
    'cache_examples': True,
    'class_names': ['a', 'b', 'c'],
    'learning_rate_scaling': 'linear',
    'warmup_epochs': 1,
    'cpu_devices': 2,
    # A fixed schedule: these tests count steps and epochs (the schedule's
    # adaptation to the data is tested in test_training.py).
    'min_train_steps': 0,
    'max_batch_fraction': 0.0,
    'early_stopping_patience': 100,
}


def raw_examples(count, seed):
    """`count` raw examples (PNG bytes, label) of `tests.datasets`' images."""
    images, labels = datasets.images_with_labels(count, CLASSES, seed, SIZE)
    return [{
        names.IMAGE_KEY: [datasets.png_bytes(image)],
        names.LABEL_KEY: [int(label)]
    } for image, label in zip(images, labels)]


def write_transformed(root):
    """<root>/transform_graph (as TFX's Transform writes it) and
    <root>/examples/Split-{train,eval}/ gzipped transformed tf.Examples."""
    return write_transform_output(
        root, {
            names.IMAGE_KEY: tf.io.VarLenFeature(tf.string),
            names.LABEL_KEY: tf.io.VarLenFeature(tf.int64)
        }, {
            'train': raw_examples(TRAIN, 0),
            'eval': raw_examples(EVAL, 1)
        }, preprocessing.preprocessing_fn, {'image_shape': [SIZE, SIZE, 1]}, {
            data_facts.CLASS_NAMES: PARAMS['class_names'],
            data_facts.NUM_CHANNELS: 1
        })


def write_transform_output(root, raw_feature_spec, splits, preprocessing_fn,
                           custom_config, facts):
    """<root>/transform_graph and <root>/examples/Split-<name>/ of `splits`
    (name -> raw rows) through `preprocessing_fn`, analyzed on `train`, as
    the project's Transform writes them (with the data `facts`)."""
    raw_metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec))
    graph = str(root / 'transform_graph')
    config = {**custom_config, **facts}
    with tempfile.TemporaryDirectory() as temp_dir:
        with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
            with beam.Pipeline(options=PipelineOptions(
                    beam_runners.default_beam_args())) as pipeline:
                raw = {
                    name: pipeline | f'Create{name}' >> beam.Create(rows)
                    for name, rows in splits.items()
                }
                transform_fn = (
                    (raw['train'], raw_metadata) | tft_beam.AnalyzeDataset(
                        lambda inputs: preprocessing_fn(inputs, config)))
                _ = transform_fn | tft_beam.WriteTransformFn(graph)
                for name, rows in raw.items():
                    (data, metadata) = (
                        ((rows, raw_metadata), transform_fn) |
                        f'Transform{name}' >> tft_beam.TransformDataset())
                    coder = tft.coders.ExampleProtoCoder(metadata.schema)
                    _ = (data | f'Encode{name}' >> beam.Map(coder.encode) |
                         f'Write{name}' >> beam.io.WriteToTFRecord(
                             str(root / 'examples' / f'Split-{name}' / 'data'),
                             file_name_suffix='.gz'))
    metadata_io.write_metadata(
        raw_metadata, os.path.join(graph,
                                   tft.TFTransformOutput.RAW_METADATA_DIR))
    # What the project's Transform copies from ExampleGen's output.
    data_facts.write(graph, facts)
    return root


def fn_args(root, out, base_params=None, **params):
    """The Trainer's FnArgs over `write_transformed(root)` (or another
    `write_transform_output`), writing to `out`; `params` override
    `base_params` (default: PARAMS)."""
    examples = str(root / 'examples')
    return fn_args_utils.FnArgs(
        working_dir=str(out),
        train_files=[f'{examples}/Split-train/*'],
        eval_files=[f'{examples}/Split-eval/*'],
        transform_output=str(root / 'transform_graph'),
        transform_graph_path=str(root / 'transform_graph'),
        serving_model_dir=str(out / 'serving_model'),
        model_run_dir=str(out / 'model_run'),
        custom_config={
            **(PARAMS if base_params is None else base_params),
            **params
        },
        data_accessor=workers.data_accessor(examples))
