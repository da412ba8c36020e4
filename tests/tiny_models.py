"""Tiny SavedModels with the project's serving contract
(models/signatures.py), and the requests they answer: shared by
tests/test_serving_check.py and tests/serving/test_client_cli.py.
"""

import io
from typing import List

import numpy as np
import tensorflow as tf
from PIL import Image

from common import names
from common import signatures
from models import features

IMAGE_CLASSES = ('dark', 'mid', 'light')
SEQUENCE_CLASSES = ('down', 'flat', 'up')


def _classes_like(names: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    return tf.tile(names[tf.newaxis], [batch, 1])


class _ImageModel(tf.Module):
    """Scores 3 classes from the mean brightness of a grayscale PNG."""

    def __init__(self, broken: bool = False):
        super().__init__()
        self.names = tf.constant(IMAGE_CLASSES)
        self.weights = tf.Variable([-8.0, 0.0, 8.0])
        self.bias = tf.Variable([4.0, 2.0, -4.0])
        self.broken = broken

    def _outputs(self, images: tf.Tensor):

        def brightness(image):
            pixels = tf.io.decode_png(image, channels=1)
            return tf.reduce_mean(tf.cast(pixels, tf.float32)) / 255.0

        means = tf.map_fn(brightness, images, fn_output_signature=tf.float32)
        scores = tf.nn.softmax(means[:, tf.newaxis] * self.weights + self.bias)
        if self.broken:
            scores = scores * float('nan')
        return {
            signatures.SCORES_OUTPUT:
                scores,
            signatures.CLASSES_OUTPUT:
                _classes_like(self.names,
                              tf.shape(images)[0])
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_examples(self, inputs):
        parsed = tf.io.parse_example(
            inputs, {names.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return self._outputs(parsed[names.IMAGE_KEY])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_images(self, images):
        return self._outputs(images)


class _SequenceModel(tf.Module):
    """Scores 3 classes from the mean of a sequence's values.

    Its lengths input is int32, to check that clients convert to the dtype
    the model declares.
    """

    def __init__(self):
        super().__init__()
        self.names = tf.constant(SEQUENCE_CLASSES)
        self.weights = tf.Variable([-3.0, 0.0, 3.0])
        self.bias = tf.Variable([0.0, 1.0, 0.0])

    def _outputs(self, means: tf.Tensor):
        scores = tf.nn.softmax(means[:, tf.newaxis] * self.weights + self.bias)
        return {
            signatures.SCORES_OUTPUT:
                scores,
            signatures.CLASSES_OUTPUT:
                _classes_like(self.names,
                              tf.shape(means)[0])
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_examples(self, inputs):
        parsed = tf.io.parse_example(
            inputs, {names.SEQUENCE_KEY: tf.io.RaggedFeature(tf.float32)})
        return self._outputs(tf.reduce_mean(parsed[names.SEQUENCE_KEY], axis=1))

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None], tf.float32),
        tf.TensorSpec([None], tf.int32)
    ])
    def serve_sequences(self, sequences, lengths):
        mask = tf.sequence_mask(lengths,
                                tf.shape(sequences)[1],
                                dtype=tf.float32)
        total = tf.reduce_sum(sequences * mask[:, :, tf.newaxis], axis=[1, 2])
        count = tf.cast(lengths * tf.shape(sequences)[2], tf.float32)
        return self._outputs(total / count)


def save_image_model(path: str, broken: bool = False) -> str:
    """Saves a tiny image classifier SavedModel at `path`; returns `path`."""
    module = _ImageModel(broken)
    tf.saved_model.save(module,
                        path,
                        signatures={
                            signatures.DEFAULT_SIGNATURE: module.serve_examples,
                            signatures.IMAGE_SIGNATURE: module.serve_images
                        })
    return path


def save_sequence_model(path: str) -> str:
    """Saves a tiny sequence classifier SavedModel at `path`; returns `path`."""
    module = _SequenceModel()
    tf.saved_model.save(
        module,
        path,
        signatures={
            signatures.DEFAULT_SIGNATURE: module.serve_examples,
            signatures.SEQUENCE_SIGNATURE: module.serve_sequences
        })
    return path


def png_bytes(brightness: int, size: int = 6) -> bytes:
    """A grayscale PNG of one brightness (0-255)."""
    out = io.BytesIO()
    Image.new('L', (size, size), brightness).save(out, format='PNG')
    return out.getvalue()


def image_examples(count: int) -> List[bytes]:
    """Serialized image tf.Examples of increasing brightness."""
    return [
        features.image_example(png_bytes(int(255 * i / max(count - 1, 1))),
                               i % len(IMAGE_CLASSES)) for i in range(count)
    ]


def sequence_examples(count: int, channels: int = 2) -> List[bytes]:
    """Serialized sequence tf.Examples of different lengths."""
    rng = np.random.default_rng(0)
    return [
        features.sequence_example(
            rng.normal(size=(3 + i, channels)).astype(np.float32), i % 3)
        for i in range(count)
    ]
