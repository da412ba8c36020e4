"""tf.Transform for clips: reshape to the clip shape, z-score per channel.

Transform's `custom_config` carries the data's clip shape [frames, height,
width, channels] (ExampleGen's data facts: models/data_facts.py). The mean
and variance are full-pass tft analyzers over every value of each channel
of the training split, as for images (models/convnet/preprocessing.py).
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from common import names
from models import data_facts
from models import features


def clips_of(values: tf.Tensor, clip_shape) -> tf.Tensor:
    """Flat clip values [batch, n] (dense or sparse) -> [batch, *clip_shape]."""
    if isinstance(values, tf.SparseTensor):
        values = tf.sparse.to_dense(values)
    return tf.reshape(values, [-1, *(int(d) for d in clip_shape)])


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform's preprocessing_fn for the clip models."""
    clip_shape = custom_config[data_facts.CLIP_SHAPE]
    channels = int(clip_shape[-1])
    clips = clips_of(inputs[names.CLIP_KEY], clip_shape)
    values = tf.reshape(clips, [-1, channels])
    mean = tft.mean(values, reduce_instance_dims=False)
    variance = tft.var(values, reduce_instance_dims=False)
    outputs = {names.CLIP_KEY: (clips - mean) / tf.sqrt(variance + 1e-6)}
    if names.LABEL_KEY in inputs:
        outputs[names.LABEL_KEY] = features.dense_column(
            inputs[names.LABEL_KEY], -1)
    return outputs
