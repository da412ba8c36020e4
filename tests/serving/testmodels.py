"""Small real SavedModels for the serving tests (imports TensorFlow).

`write_model(path, version_bias)` exports a tf.Module that follows
models/signatures.py: `serving_default` parses tf.Examples with an
`image/float` feature (28x28 = 784 floats), `serving_image` decodes PNG
bytes; both return `classes` (string [N, 3]) and `scores` (float32 [N, 3]).
Extra signatures exercise the rest of the API:

  serving_float(x: float32 [N, 4])                 -> classes, scores
  serving_multi(a: float32 [N, 2], b: string [N])  -> total, echo_bytes
  serving_varlen(x: float32 [N, None])             -> total
  regress(inputs: string [N])                      -> outputs (float32 [N])

The four features are the means of the image's quadrants; `version_bias`
shifts the first logit so different versions give different scores.
"""

import io
import os
from typing import Iterable, List, Optional

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from common import signatures

CLASS_NAMES = (b'zero', b'one', b'two')
FLOAT_FEATURE = 'image/float'
_WEIGHTS = np.array(
    [[1.0, -1.0, 0.5], [0.5, 1.0, -1.0], [-1.0, 0.5, 1.0], [0.25, -0.5, 0.75]],
    dtype=np.float32)


class _TestModel(tf.Module):

    def __init__(self, version_bias: float):
        super().__init__()
        self.weights = tf.Variable(_WEIGHTS)
        self.bias = tf.Variable([version_bias, 0.0, 0.0])

    def _head(self, features):
        scores = tf.nn.softmax(tf.matmul(features, self.weights) + self.bias)
        classes = tf.tile(tf.constant([list(CLASS_NAMES)]),
                          [tf.shape(features)[0], 1])
        return {
            signatures.CLASSES_OUTPUT: classes,
            signatures.SCORES_OUTPUT: scores
        }

    @staticmethod
    def _quadrants(images):
        images = tf.reshape(images, [-1, 28, 28])
        top, bottom = images[:, :14], images[:, 14:]
        return tf.stack([
            tf.reduce_mean(top[:, :, :14], [1, 2]),
            tf.reduce_mean(top[:, :, 14:], [1, 2]),
            tf.reduce_mean(bottom[:, :, :14], [1, 2]),
            tf.reduce_mean(bottom[:, :, 14:], [1, 2])
        ],
                        axis=1)

    def _parse(self, serialized):
        parsed = tf.io.parse_example(
            serialized,
            {FLOAT_FEATURE: tf.io.FixedLenFeature([784], tf.float32)})
        return self._quadrants(parsed[FLOAT_FEATURE])

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=signatures.EXAMPLES_INPUT)
    ])
    def serving_default(self, inputs):
        return self._head(self._parse(inputs))

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=signatures.IMAGE_INPUT)
    ])
    def serving_image(self, images):
        decoded = tf.map_fn(
            lambda png: tf.cast(tf.io.decode_png(png, channels=1), tf.float32),
            images,
            fn_output_signature=tf.TensorSpec([None, None, 1], tf.float32))
        return self._head(self._quadrants(decoded / 255.0))

    @tf.function(
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name='x')])
    def serving_float(self, x):
        return self._head(x)

    @tf.function(input_signature=[
        tf.TensorSpec([None, 2], tf.float32, name='a'),
        tf.TensorSpec([None], tf.string, name='b')
    ])
    def serving_multi(self, a, b):
        return {'total': tf.reduce_sum(a, axis=1), 'echo_bytes': b}

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.float32, name='x')])
    def serving_varlen(self, x):
        return {'total': tf.reduce_sum(x, axis=1)}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
    def regress(self, inputs):
        return {'outputs': tf.reduce_sum(self._parse(inputs), axis=1)}


def write_model(path: str, version_bias: float = 0.0) -> str:
    """Exports the test model to `path` (a version directory)."""
    module = _TestModel(version_bias)
    tf.saved_model.save(
        module,
        path,
        signatures={
            signatures.DEFAULT_SIGNATURE: module.serving_default,
            signatures.IMAGE_SIGNATURE: module.serving_image,
            'serving_float': module.serving_float,
            'serving_multi': module.serving_multi,
            'serving_varlen': module.serving_varlen,
            'regress': module.regress,
        })
    return path


def image(seed: int = 0) -> np.ndarray:
    """A deterministic 28x28 uint8 image."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(28, 28), dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode='L').save(buffer, format='PNG')
    return buffer.getvalue()


def example(pixels: np.ndarray) -> tf.train.Example:
    """A tf.Example with the image as 784 floats in [0, 1]."""
    values = (pixels.astype(np.float32) / 255.0).reshape(-1)
    return tf.train.Example(features=tf.train.Features(
        feature={
            FLOAT_FEATURE:
                tf.train.Feature(float_list=tf.train.FloatList(value=values))
        }))


def expected_scores(features: np.ndarray,
                    version_bias: float = 0.0) -> np.ndarray:
    """The model's scores for [N, 4] features, computed with numpy."""
    logits = features.astype(np.float32) @ _WEIGHTS + np.array(
        [version_bias, 0, 0], np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def quadrant_features(pixels: np.ndarray) -> np.ndarray:
    images = pixels.astype(np.float32) / 255.0
    return np.array([
        images[:14, :14].mean(), images[:14, 14:].mean(),
        images[14:, :14].mean(), images[14:, 14:].mean()
    ],
                    dtype=np.float32)


def write_warmup(version_dir: str,
                 requests: Iterable[predict_pb2.PredictRequest]) -> int:
    """Writes assets.extra/tf_serving_warmup_requests; returns the count."""
    directory = os.path.join(version_dir, 'assets.extra')
    os.makedirs(directory, exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(
            os.path.join(directory, 'tf_serving_warmup_requests')) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
            count += 1
    return count


def float_predict_request(
        rows: List[List[float]],
        name: Optional[str] = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if name:
        request.model_spec.name = name
    request.model_spec.signature_name = 'serving_float'
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.array(rows, dtype=np.float32)))
    return request
