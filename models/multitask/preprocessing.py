"""tf.Transform for multi-task images: the convnet's, and the group label.

The image is decoded, resized and z-scored as the convnet's
(models/convnet/preprocessing.py); the group label ExampleGen added to each
example (components/example_gen/executor.py) passes through beside the
class label.
"""

from typing import Any, Dict

import tensorflow as tf

from common import names
from models import features
from models.convnet import preprocessing as convnet


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """tf.Transform's preprocessing_fn for the multi-task model."""
    outputs = convnet.preprocessing_fn(inputs, custom_config)
    if names.GROUP_LABEL_KEY in inputs:
        outputs[names.GROUP_LABEL_KEY] = features.dense_column(
            inputs[names.GROUP_LABEL_KEY], -1)
    return outputs
