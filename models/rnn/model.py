"""The RNN: masked, optionally bidirectional and stacked LSTM or GRU layers.

Padded time steps are masked from the sequence lengths (not from a padding
value, which a z-scored step could equal). Dropout between layers, a softmax
classifier, gradients clipped by global norm (`clip_norm`, the remedy for
exploding gradients through time), cross-entropy on shuffled mini-batches
(models/training.py).

Where no GPU is visible the layers train with the standard kernel only: in a
tf.function tf_keras otherwise traces each layer twice, the standard kernel
and a cuDNN one for Grappler to choose at run time, and on a CPU the second
trace is wasted time (the full profile's first epoch, which traces the
training and eval steps: 30 s against 11, docs/results/performance.md).
The export traces both again, so the SavedModel is the one tf_keras
writes, and a GPU serving it runs cuDNN.
"""

import dataclasses
from typing import Any, Dict

import tensorflow as tf

from common import settings
from models import export
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
    model = sequence_io.classifier(sequence, length, x, num_classes, 'rnn')
    trace_cudnn_kernel(model, bool(tf.config.list_logical_devices('GPU')))
    return model


def trace_cudnn_kernel(model: keras.Model, trace: bool) -> None:
    """Whether the model's LSTM and GRU layers trace a cuDNN kernel too.

    tf_keras reads the flag each time a layer is traced (its `call`). Our
    layers always qualify for cuDNN (tanh and sigmoid activations, a bias,
    no recurrent dropout, not unrolled), so True restores what tf_keras set.
    It has no public switch for it.
    """
    # pylint: disable=protected-access
    for layer in model.submodules:  # Bidirectional's copies included.
        if isinstance(layer, tuple(_CELLS.values())):
            layer._could_use_gpu_kernel = trace


def export_model(model: keras.Model, *args, params: Dict[str, Any],
                 train_data: tf.data.Dataset, **kwargs) -> None:
    """export.export_serving_model, tracing both kernels as tf_keras would."""
    del params, train_data  # Only the Trainer's hook passes them.
    trace_cudnn_kernel(model, True)
    export.export_serving_model(model, *args, **kwargs)


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


RECIPE = dataclasses.replace(sequence_io.recipe('rnn', build_model,
                                                search_space),
                             export_model=export_model)
