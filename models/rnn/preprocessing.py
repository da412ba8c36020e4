"""tf.Transform for sequences: a per-channel z-score, per set or per series.

Raw `sequence` holds a [length, channels] series flattened row-major, with
NaN for missing values. `sequence_normalization` chooses the z-score:
`per_set`, each channel's mean and variance over every present (non-NaN)
time step of the training split (full-pass tft analyzers), the same for
every series; or `per_series`, each series' channels z-normalized over its
own present steps (the UCR archive's practice), so that a series' own
offset and scale are gone. A series' constant channel becomes zeros.

Missing values: a NaN is imputed with its channel's mean, which is 0 after
the z-score. The output keeps the sequence's real length (a sparse, variable
length feature); padding and masking happen in the model, so padding never
enters either statistic: the serving signatures take the real steps only
(models/sequence_io.py).
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from common import names
from common import settings
from models import features

# A standard deviation below this is taken as 1: a constant channel.
_MIN_STD = 1e-6


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


def series_zscore(steps: tf.Tensor, series: tf.Tensor,
                  num_series: tf.Tensor) -> tf.Tensor:
    """[steps, channels] -> z-scored per series and channel, NaN -> 0.

    `series` gives each step's series (0 to `num_series` - 1). A channel's
    mean and standard deviation are its series' own, over its present
    steps; a constant channel (standard deviation under _MIN_STD) is only
    centred, so it becomes zeros, not a division by zero.
    """
    missing = tf.math.is_nan(steps)
    present = tf.cast(tf.logical_not(missing), tf.float32)
    filled = tf.where(missing, tf.zeros_like(steps), steps)

    def per_series(values):
        """[num_series, channels] sums of `values` over each series' steps."""
        return tf.math.unsorted_segment_sum(values, series, num_series)

    count = tf.maximum(per_series(present), 1.0)
    mean = per_series(filled) / count
    mean_square = per_series(tf.square(filled)) / count
    std = tf.sqrt(tf.maximum(mean_square - tf.square(mean), 0.0))
    std = tf.where(std < _MIN_STD, tf.ones_like(std), std)
    zscored = (filled - tf.gather(mean, series)) / tf.gather(std, series)
    return tf.where(missing, tf.zeros_like(steps), zscored)


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform's preprocessing_fn for the sequence models."""
    channels = int(custom_config['num_channels'])
    sequences = tf.RaggedTensor.from_sparse(inputs[names.SEQUENCE_KEY])
    steps = tf.reshape(sequences.flat_values, [-1, channels])
    if settings.value(custom_config, 'sequence_normalization') == 'per_series':
        series = sequences.value_rowids()[::channels]
        normalized = series_zscore(steps, tf.cast(series, tf.int32),
                                   tf.cast(sequences.nrows(), tf.int32))
    else:
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
