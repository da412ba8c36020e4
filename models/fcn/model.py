"""The 1-D fully convolutional network for sequences (Wang et al. 2017).

Per block: a 1-D convolution over time (the filter bank), batch
normalization and a ReLU; then global average pooling over time and a
softmax classifier. `conv_filters` and `kernel_sizes` give one width and one
kernel length per block (the paper: 128/256/128 filters, kernels 8/5/3).

Masked so padding never counts: the steps past a sequence's length are set
to zero before every convolution (so a convolution sees the same zeros at a
sequence's end as 'same' padding gives an unpadded sequence), batch
normalization takes its statistics over real steps only, and the pooling
averages real steps only. A sequence's scores are therefore the same however
far it is padded in its batch.

It reads what the RNN reads: the same tf.Transform output, model inputs and
serving signatures (models/sequence_io.py).
"""

from typing import Any, Dict

import tensorflow as tf

from common import settings
from models import recipe as recipe_lib
from models import schedule
from models import sequence_io

keras = tf.keras


def _zero_padding(args):
    """[batch, time, width] with the steps past each length set to zero."""
    values, mask = args
    return values * tf.cast(mask, values.dtype)[..., tf.newaxis]


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The FCN for sequences of `num_channels` channels."""
    momentum = schedule.batch_norm_momentum(params)
    sequence, length, mask = sequence_io.masked_inputs(params)
    x = sequence
    for block, (filters, kernel) in enumerate(
            zip(params['conv_filters'], params['kernel_sizes'])):
        x = keras.layers.Lambda(_zero_padding,
                                name=f'block{block}_zero')([x, mask])
        x = keras.layers.Conv1D(int(filters),
                                int(kernel),
                                padding='same',
                                use_bias=False,
                                name=f'block{block}_conv')(x)
        x = keras.layers.BatchNormalization(momentum=momentum,
                                            name=f'block{block}_bn')(x,
                                                                     mask=mask)
        x = keras.layers.ReLU(name=f'block{block}_relu')(x)
    x = keras.layers.GlobalAveragePooling1D(name='pool')(x, mask=mask)
    x = keras.layers.Dropout(float(settings.value(params, 'dropout')),
                             name='dropout')(x)
    return sequence_io.classifier(sequence, length, x, num_classes, 'fcn')


def search_space(hp) -> Dict[str, Any]:
    """The FCN's Tuner search space.

    The Tuner's space (a KerasTuner HyperParameters) -> params: the paper's
    three blocks scaled in width, or the first two.
    """
    width = hp.Choice('width', [32, 64, 128])
    depth = hp.Int('depth', 2, 3)
    return {
        'conv_filters': [width, 2 * width, width][:depth],
        'kernel_sizes': [8, 5, 3][:depth],
        **recipe_lib.search_space(hp, batch_sizes=[16, 32, 64])
    }


RECIPE = sequence_io.recipe('fcn', build_model, search_space)
