"""tf.Transform for images: decode, resize, scale, z-score per channel.

The mean and variance are full-pass tft analyzers over every pixel of the
training split; the resulting graph is the one the exported model carries.
Transform's `custom_config` gives the target `image_shape` [height, width,
channels]; gray images become colour and back as decode_image's `channels`
dictates.
"""

from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from common import names
from models import features


def decode_images(encoded: tf.Tensor, height: int, width: int,
                  channels: int) -> tf.Tensor:
    """Decodes encoded images to float32 in [0, 1].

    Encoded image bytes [batch] -> float32 [batch, height, width, channels] in
    [0, 1].
    """

    def decode(image_bytes):
        image = tf.io.decode_image(image_bytes,
                                   channels=channels,
                                   expand_animations=False)
        image = tf.image.convert_image_dtype(image, tf.float32)
        return tf.image.resize(image, [height, width])

    return tf.map_fn(decode,
                     encoded,
                     fn_output_signature=tf.TensorSpec(
                         [height, width, channels], tf.float32))


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform's preprocessing_fn for the image models."""
    height, width, channels = (int(d) for d in custom_config['image_shape'])
    images = decode_images(features.dense_column(inputs[names.IMAGE_KEY], b''),
                           height, width, channels)
    pixels = tf.reshape(images, [-1, channels])
    mean = tft.mean(pixels, reduce_instance_dims=False)
    variance = tft.var(pixels, reduce_instance_dims=False)
    outputs = {names.IMAGE_KEY: (images - mean) / tf.sqrt(variance + 1e-6)}
    if names.LABEL_KEY in inputs:
        outputs[names.LABEL_KEY] = features.dense_column(
            inputs[names.LABEL_KEY], -1)
    return outputs
