"""The RNN: masked, optionally bidirectional and stacked LSTM or GRU layers.

Padded time steps are masked from the sequence lengths (not from a padding
value, which a z-scored step could equal). Dropout between layers, a softmax
classifier, gradients clipped by global norm (`clip_norm`, the remedy for
exploding gradients through time), cross-entropy on shuffled mini-batches
(models/training.py).
"""

from typing import Any, Dict

import tensorflow as tf

from common import settings
from models import recipe as recipe_lib
from models import sequence_io

keras = tf.keras
_CELLS = {'lstm': keras.layers.LSTM, 'gru': keras.layers.GRU}


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The RNN for sequences of `num_channels` channels."""
    dropout = float(settings.value(params, 'dropout'))
    cell = _CELLS[settings.value(params, 'cell')]
    sequence, length, mask = sequence_io.masked_inputs(params)
    x = sequence
    units = [int(u) for u in params['units']]
    for index, width in enumerate(units):
        layer = cell(width,
                     return_sequences=index < len(units) - 1,
                     name=f'rnn{index}')
        if settings.value(params, 'bidirectional'):
            layer = keras.layers.Bidirectional(layer, name=f'birnn{index}')
        x = layer(x, mask=mask)
        x = keras.layers.Dropout(dropout, name=f'dropout{index}')(x)
    return sequence_io.classifier(sequence, length, x, num_classes, 'rnn')


def search_space(hp) -> Dict[str, Any]:
    """The Tuner's space (a KerasTuner HyperParameters) -> params."""
    depth = hp.Int('depth', 1, 2)
    width = hp.Choice('width', [32, 64, 128])
    return {
        'units': [width] * depth,
        'cell': hp.Choice('cell', list(_CELLS)),
        'bidirectional': hp.Boolean('bidirectional', default=True),
        **recipe_lib.search_space(hp, batch_sizes=[16, 32, 64])
    }


RECIPE = sequence_io.recipe('rnn', build_model, search_space)
