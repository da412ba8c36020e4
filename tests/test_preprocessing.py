"""The preprocessing_fns run for real via tf.Transform on Beam, on tiny data."""

import io
import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from common import names
from models import sequence_io
from models.convnet import preprocessing as image_preprocessing
from models.rnn import preprocessing as sequence_preprocessing


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def _analyze_and_transform(rows, feature_spec, preprocessing_fn):
    """Runs tf.Transform's Analyze+Transform on in-memory rows."""
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(feature_spec))
    with tempfile.TemporaryDirectory() as temp_dir:
        with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
            (transformed,
             _), _ = ((rows, metadata) |
                      tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
    return transformed


def test_images_are_decoded_resized_and_zscored_over_the_whole_split():
    rng = np.random.default_rng(0)
    gray = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(5)]
    big_colour = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    rows = [{
        names.IMAGE_KEY: [_png(a)],
        names.LABEL_KEY: [i]
    } for i, a in enumerate(gray)]
    rows.append({names.IMAGE_KEY: [_png(big_colour)], names.LABEL_KEY: [5]})
    spec = {
        names.IMAGE_KEY: tf.io.VarLenFeature(tf.string),
        names.LABEL_KEY: tf.io.VarLenFeature(tf.int64)
    }

    transformed = _analyze_and_transform(
        rows, spec, lambda inputs: image_preprocessing.preprocessing_fn(
            inputs, {'image_shape': [8, 8, 1]}))

    images = np.stack(
        [np.asarray(r[names.IMAGE_KEY]).reshape(8, 8, 1) for r in transformed])
    assert images.shape == (6, 8, 8, 1)
    # z-scored with the mean and variance of every pixel of the split.
    assert abs(images.mean()) < 1e-4
    assert abs(images.std() - 1.0) < 1e-3
    assert [int(r[names.LABEL_KEY]) for r in transformed] == list(range(6))
    # The pixel order survives: the brightest raw pixel stays the brightest.
    first = gray[0].astype(np.float32)
    assert np.argmax(images[0].ravel()) == np.argmax(first.ravel())


def test_sequences_are_zscored_per_channel_and_missing_values_imputed():
    sequences = [
        np.array([[1.0, 10.0], [3.0, 30.0], [5.0, math.nan]], np.float32),
        np.array([[7.0, 20.0]], np.float32),
    ]
    rows = [{
        names.SEQUENCE_KEY: s.ravel().tolist(),
        names.LENGTH_KEY: [len(s)],
        names.LABEL_KEY: [i]
    } for i, s in enumerate(sequences)]
    spec = {
        names.SEQUENCE_KEY: tf.io.VarLenFeature(tf.float32),
        names.LENGTH_KEY: tf.io.VarLenFeature(tf.int64),
        names.LABEL_KEY: tf.io.VarLenFeature(tf.int64)
    }

    transformed = _analyze_and_transform(
        rows, spec, lambda inputs: sequence_preprocessing.preprocessing_fn(
            inputs, {'num_channels': 2}))

    by_label = {int(r[names.LABEL_KEY]): r for r in transformed}
    first = np.asarray(by_label[0][names.SEQUENCE_KEY]).reshape(-1, 2)
    second = np.asarray(by_label[1][names.SEQUENCE_KEY]).reshape(-1, 2)
    assert int(by_label[0][names.LENGTH_KEY]) == 3
    assert first.shape == (3, 2) and second.shape == (1, 2)
    # Channel 0 over all steps: 1, 3, 5, 7 (mean 4, std sqrt(5)).
    np.testing.assert_allclose(first[:, 0],
                               np.array([-3, -1, 1]) / math.sqrt(5),
                               rtol=1e-4)
    # Channel 1 ignores the NaN: 10, 30, 20 (mean 20), and imputes it as 0.
    std = math.sqrt(200 / 3)
    np.testing.assert_allclose(first[:, 1], [-10 / std, 10 / std, 0.0],
                               rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(second[0], [3 / math.sqrt(5), 0.0], atol=1e-5)


def test_per_series_zscore_is_the_transform_graphs_in_training_and_serving(
        tmp_path):
    """`sequence_normalization=per_series`: each series' channels over its
    own steps, a constant channel zeros; the transform graph a served model
    carries gives training's values, whatever a request pads."""
    sequences = [
        np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0], [math.nan, 10.0]],
                 np.float32),
        np.array([[100.0, -2.0], [300.0, 2.0]], np.float32),
        np.array([[4.0, 0.0]], np.float32),
    ]
    rows = [{
        names.SEQUENCE_KEY: s.ravel().tolist(),
        names.LENGTH_KEY: [len(s)],
        names.LABEL_KEY: [i]
    } for i, s in enumerate(sequences)]
    spec = {
        names.SEQUENCE_KEY: tf.io.VarLenFeature(tf.float32),
        names.LENGTH_KEY: tf.io.VarLenFeature(tf.int64),
        names.LABEL_KEY: tf.io.VarLenFeature(tf.int64)
    }
    config = {'num_channels': 2, 'sequence_normalization': 'per_series'}
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(spec))
    graph = str(tmp_path / 'transform_graph')
    with tft_beam.Context(temp_dir=str(tmp_path / 'tmp'),
                          force_tf_compat_v1=False):
        (transformed,
         _), transform_fn = ((rows, metadata) |
                             tft_beam.AnalyzeAndTransformDataset(
                                 lambda inputs: sequence_preprocessing.
                                 preprocessing_fn(inputs, config)))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    trained = {}
    for row in transformed:
        trained[int(row[names.LABEL_KEY])] = np.asarray(
            row[names.SEQUENCE_KEY]).reshape(-1, 2)
    # Channel 0 of the first: 1, 3, 5 (mean 3, std sqrt(8/3)), the NaN 0;
    # its constant channel 1, and the one-step series', zeros.
    np.testing.assert_allclose(trained[0][:, 0],
                               np.array([-2, 0, 2, 0]) / math.sqrt(8 / 3),
                               rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(trained[0][:, 1], 0.0)
    np.testing.assert_allclose(trained[1], [[-1, -1], [1, 1]], rtol=1e-5)
    np.testing.assert_array_equal(trained[2], [[0.0, 0.0]])

    layer = tft.TFTransformOutput(graph).transform_features_layer()

    def predict(raw):
        """The transformed steps, padded with NaN, as `scores`."""
        values = layer(raw)[names.SEQUENCE_KEY]
        return {'scores': tf.sparse.to_dense(values, default_value=math.nan)}

    serve = sequence_io.sequence_signature(predict, config)
    lengths = [len(s) for s in sequences]
    for width in (4, 9):
        padded = np.full((3, width, 2), 1e4, np.float32)
        for i, s in enumerate(sequences):
            padded[i, :len(s)] = s
        served = serve(tf.constant(padded), tf.constant(lengths, tf.int64))
        for i, length in enumerate(lengths):
            np.testing.assert_allclose(
                served['scores'].numpy()[i, :2 * length].reshape(-1, 2),
                trained[i],
                rtol=1e-5,
                atol=1e-6)


if __name__ == '__main__':
    pytest.main([__file__])
