"""tf.Transform for sequences: per-channel z-score over every time step.

Raw `sequence` holds a [length, channels] series flattened row-major, with
NaN for missing values. The mean and variance of each channel are full-pass
tft analyzers over all present (non-NaN) time steps of the training split.

Missing values: a NaN is imputed with its channel's mean, which is 0 after
the z-score. The output keeps the sequence's real length (a sparse, variable
length feature); padding and masking happen in the model.
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from common import names
from models import features


def channel_zscore(steps: tf.Tensor) -> tf.Tensor:
    """[steps, channels] with NaNs -> z-scored per channel, NaN -> 0."""
    missing = tf.math.is_nan(steps)
    present = tf.cast(tf.logical_not(missing), tf.float32)
    filled = tf.where(missing, tf.zeros_like(steps), steps)
    count = tf.maximum(tft.sum(present, reduce_instance_dims=False), 1.0)
    mean = tft.sum(filled, reduce_instance_dims=False) / count
    mean_square = tft.sum(tf.square(filled), reduce_instance_dims=False) / count
    std = tf.sqrt(tf.maximum(mean_square - tf.square(mean), 0.0) + 1e-6)
    return tf.where(missing, tf.zeros_like(steps), (filled - mean) / std)


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform's preprocessing_fn for the sequence models."""
    channels = int(custom_config['num_channels'])
    sequences = tf.RaggedTensor.from_sparse(inputs[names.SEQUENCE_KEY])
    steps = tf.reshape(sequences.flat_values, [-1, channels])
    normalized = channel_zscore(steps)
    outputs = {
        names.SEQUENCE_KEY:
            sequences.with_flat_values(tf.reshape(normalized,
                                                  [-1])).to_sparse(),
        names.LENGTH_KEY:
            features.dense_column(inputs[names.LENGTH_KEY], 0),
    }
    if names.LABEL_KEY in inputs:
        outputs[names.LABEL_KEY] = features.dense_column(
            inputs[names.LABEL_KEY], -1)
    return outputs
