"""The preprocessing_fns run for real via tf.Transform on Beam, on tiny data."""

import io
import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from PIL import Image
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from common import names
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


if __name__ == '__main__':
    pytest.main([__file__])
