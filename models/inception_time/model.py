"""InceptionTime for sequences (Fawaz et al. 2020), one network of it.

Per Inception module: a bottleneck (a 1x1 convolution to
`bottleneck_filters` channels, skipped where the input has one channel),
parallel convolutions of the `kernel_sizes` lengths (the paper's 40, 20
and 10: its reference code's 41, 21 and 11, each minus one) and a max-pool
(3 steps) branch with a 1x1 convolution, each of the module's
`conv_filters` filters; the branches concatenated, batch normalization and
a ReLU. A residual shortcut (a 1x1 convolution and batch normalization,
added before the ReLU) every three modules; then global average pooling
over time and a softmax classifier. The paper's defaults: six modules of 32
filters per branch (`conv_filters=[32]*6`). Its ensemble of five networks is
not built here.

Masked so padding never counts, as the FCN (models/fcn/model.py): the steps
past a sequence's length are zeros before every convolution and the lowest
float before the max-pool, batch normalization takes its statistics over
real steps only, and the pooling averages real steps only; so a sequence's
scores are the same however far it is padded. It reads and serves what the
RNN and the FCN do (models/sequence_io.py).
"""

from typing import Any, Dict, List

import tensorflow as tf

from common import settings
from models import recipe as recipe_lib
from models import schedule
from models import sequence_io

keras = tf.keras
# Modules between residual shortcuts (the paper's).
_SHORTCUT_EVERY = 3
_POOL_SIZE = 3


def _zero_padding(args):
    """[batch, time, width] with the steps past each length set to zero."""
    values, mask = args
    return tf.where(mask[..., tf.newaxis], values, tf.zeros_like(values))


def _lowest_padding(args):
    """[batch, time, width] with the steps past each length the lowest float.

    So that a max-pool's window over a sequence's end takes its real steps
    only, as the pool's own 'same' padding does at an unpadded end.
    """
    values, mask = args
    return tf.where(mask[..., tf.newaxis], values,
                    tf.fill(tf.shape(values), values.dtype.min))


def _module(x: tf.Tensor, mask: tf.Tensor, filters: int,
            kernel_sizes: List[int], bottleneck: int, momentum: float,
            name: str) -> tf.Tensor:
    """One Inception module: bottleneck, parallel branches, BN, ReLU."""
    zeroed = keras.layers.Lambda(_zero_padding, name=f'{name}_zero')([x, mask])
    inner = zeroed
    if x.shape[-1] > 1:
        inner = keras.layers.Conv1D(bottleneck,
                                    1,
                                    use_bias=False,
                                    name=f'{name}_bottleneck')(zeroed)
    branches = [
        keras.layers.Conv1D(filters,
                            kernel,
                            padding='same',
                            use_bias=False,
                            name=f'{name}_conv{kernel}')(inner)
        for kernel in kernel_sizes
    ]
    lowest = keras.layers.Lambda(_lowest_padding,
                                 name=f'{name}_lowest')([x, mask])
    pooled = keras.layers.MaxPool1D(_POOL_SIZE,
                                    strides=1,
                                    padding='same',
                                    name=f'{name}_maxpool')(lowest)
    pooled = keras.layers.Lambda(_zero_padding,
                                 name=f'{name}_pool_zero')([pooled, mask])
    branches.append(
        keras.layers.Conv1D(filters,
                            1,
                            use_bias=False,
                            name=f'{name}_pool_conv')(pooled))
    x = keras.layers.Concatenate(name=f'{name}_concat')(branches)
    x = keras.layers.BatchNormalization(momentum=momentum,
                                        name=f'{name}_bn')(x, mask=mask)
    return keras.layers.ReLU(name=f'{name}_relu')(x)


def _shortcut(residual: tf.Tensor, x: tf.Tensor, mask: tf.Tensor,
              momentum: float, name: str) -> tf.Tensor:
    """`x` plus `residual` through a 1x1 convolution and BN, then a ReLU."""
    residual = keras.layers.Conv1D(int(x.shape[-1]),
                                   1,
                                   use_bias=False,
                                   name=f'{name}_conv')(residual)
    residual = keras.layers.BatchNormalization(momentum=momentum,
                                               name=f'{name}_bn')(residual,
                                                                  mask=mask)
    x = keras.layers.Add(name=f'{name}_add')([residual, x])
    return keras.layers.ReLU(name=f'{name}_relu')(x)


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """InceptionTime for sequences of `num_channels` channels."""
    momentum = schedule.batch_norm_momentum(params)
    kernel_sizes = [int(k) for k in params['kernel_sizes']]
    bottleneck = int(settings.value(params, 'bottleneck_filters'))
    sequence, length, mask = sequence_io.masked_inputs(params)
    x = residual = sequence
    for index, filters in enumerate(params['conv_filters']):
        x = _module(x, mask, int(filters), kernel_sizes, bottleneck, momentum,
                    f'module{index}')
        if index % _SHORTCUT_EVERY == _SHORTCUT_EVERY - 1:
            x = residual = _shortcut(residual, x, mask, momentum,
                                     f'shortcut{index}')
    x = keras.layers.GlobalAveragePooling1D(name='pool')(x, mask=mask)
    x = keras.layers.Dropout(float(settings.value(params, 'dropout')),
                             name='dropout')(x)
    return sequence_io.classifier(sequence, length, x, num_classes,
                                  'inception_time')


def search_space(hp) -> Dict[str, Any]:
    """InceptionTime's Tuner search space.

    The Tuner's space (a KerasTuner HyperParameters) -> params: the
    filters per branch and the modules (in whole residual blocks of
    three).
    """
    width = hp.Choice('width', [16, 32])
    depth = hp.Choice('depth', [3, 6])
    return {
        'conv_filters': [width] * depth,
        **recipe_lib.search_space(hp, batch_sizes=[16, 32, 64])
    }


RECIPE = sequence_io.recipe('inception_time', build_model, search_space)
