"""Raw feature names and example builders: the ingest <-> models contract.

ExampleGen writes tf.Examples with these features; each model's
`preprocessing_fn` reads them, and the exported `serving_default` signature
parses them. Labels are integer indices into the data set's class names.

Images:    `image` (bytes, encoded PNG/JPEG), `label` (int64; none when
           unlabelled).
Clips:     `clip` (float list: the [frames, height, width, channels] values
           flattened row-major), `label` (int64).
Sequences: `sequence` (float list: the [length, channels] values flattened
           row-major, NaN where missing), `length` (int64), `label` (int64).
"""

from typing import Any, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2

from common import names


def _int64(value: int) -> feature_pb2.Feature:
    return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))


def image_example(image: bytes, label: Optional[int] = None) -> bytes:
    """A serialized tf.Example holding one encoded image and its label.

    No label feature with `label` None (unlabelled images).
    """
    feature = {
        names.IMAGE_KEY:
            feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[image]))
    }
    if label is not None:
        feature[names.LABEL_KEY] = _int64(label)
    return example_pb2.Example(features=feature_pb2.Features(
        feature=feature)).SerializeToString(deterministic=True)


def sequence_example(values: np.ndarray, label: int) -> bytes:
    """A serialized tf.Example holding one [length, channels] sequence."""
    values = np.asarray(values, dtype=np.float32)
    return example_pb2.Example(features=feature_pb2.Features(
        feature={
            names.SEQUENCE_KEY:
                feature_pb2.Feature(float_list=feature_pb2.FloatList(
                    value=values.ravel())),
            names.LENGTH_KEY:
                _int64(values.shape[0]),
            names.LABEL_KEY:
                _int64(label),
        })).SerializeToString(deterministic=True)


def clip_example(values: np.ndarray, label: int) -> bytes:
    """A serialized tf.Example holding one clip's values and its label."""
    return example_pb2.Example(features=feature_pb2.Features(
        feature={
            names.CLIP_KEY:
                feature_pb2.Feature(float_list=feature_pb2.FloatList(
                    value=np.asarray(values, dtype=np.float32).ravel())),
            names.LABEL_KEY:
                _int64(label),
        })).SerializeToString(deterministic=True)


def dense_column(feature: tf.Tensor, default: Any) -> tf.Tensor:
    """A single-valued raw feature as a [batch] dense tensor.

    A single-valued raw feature ([batch] dense or [batch, 1] sparse) as a
    [batch] dense tensor.
    """
    if isinstance(feature, tf.SparseTensor):
        feature = tf.sparse.to_dense(feature, default_value=default)
    return tf.reshape(feature, [-1])
