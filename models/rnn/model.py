"""The RNN: masked, optionally bidirectional and stacked LSTM or GRU layers.

Padded time steps are masked from the sequence lengths (not from a padding
value, which a z-scored step could equal). Dropout between layers, a softmax
classifier, gradients clipped by global norm (`clip_norm`, the remedy for
exploding gradients through time), cross-entropy on shuffled mini-batches
(models/training.py).
"""

from typing import TYPE_CHECKING, Any, Dict

import tensorflow as tf

from common import names
from common import settings
from common import signatures
from models import export
from models import training

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras
_CELLS = {'lstm': keras.layers.LSTM, 'gru': keras.layers.GRU}


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The RNN for sequences of `num_channels` channels."""
    channels = int(params['num_channels'])
    dropout = float(settings.value(params, 'dropout'))
    cell = _CELLS[params.get('cell', 'lstm')]
    sequence = keras.Input((None, channels), name=names.SEQUENCE_KEY)
    length = keras.Input((), dtype=tf.int64, name=names.LENGTH_KEY)
    mask = keras.layers.Lambda(
        lambda args: tf.sequence_mask(args[1],
                                      tf.shape(args[0])[1]),
        name='mask')([sequence, length])
    x = sequence
    units = [int(u) for u in params['units']]
    for index, width in enumerate(units):
        layer = cell(width,
                     return_sequences=index < len(units) - 1,
                     name=f'rnn{index}')
        if params.get('bidirectional', True):
            layer = keras.layers.Bidirectional(layer, name=f'birnn{index}')
        x = layer(x, mask=mask)
        x = keras.layers.Dropout(dropout, name=f'dropout{index}')(x)
    scores = keras.layers.Dense(num_classes,
                                activation='softmax',
                                name='classifier')(x)
    return keras.Model({
        names.SEQUENCE_KEY: sequence,
        names.LENGTH_KEY: length
    },
                       scores,
                       name='rnn')


def to_model_inputs(transformed: Dict[str, tf.Tensor],
                    params: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Transformed (flat, sparse) sequences -> padded [batch, time, channel]."""
    values = tf.sparse.to_dense(transformed[names.SEQUENCE_KEY])
    channels = int(params['num_channels'])
    return {
        names.SEQUENCE_KEY:
            tf.reshape(values, [tf.shape(values)[0], -1, channels]),
        names.LENGTH_KEY:
            tf.cast(transformed[names.LENGTH_KEY], tf.int64),
    }


def sequence_signature(predict: export.PredictFn, params: Dict[str, Any]):
    """`serving_sequence`: padded float sequences and their lengths."""
    channels = int(params['num_channels'])

    @tf.function(input_signature=[
        tf.TensorSpec(
            [None, None, channels], tf.float32, name=signatures.SEQUENCE_INPUT),
        tf.TensorSpec([None], tf.int64, name=signatures.LENGTH_INPUT)
    ])
    def serve_sequences(sequences, lengths):
        steps = tf.boolean_mask(
            sequences, tf.sequence_mask(lengths,
                                        tf.shape(sequences)[1]))
        flat = tf.RaggedTensor.from_row_lengths(tf.reshape(steps, [-1]),
                                                lengths * channels)
        return predict({
            names.SEQUENCE_KEY: flat.to_sparse(),
            names.LENGTH_KEY: export.rows_to_sparse(lengths),
        })

    return serve_sequences


def search_space(hp) -> Dict[str, Any]:
    """The Tuner's space (a KerasTuner HyperParameters) -> params."""
    depth = hp.Int('depth', 1, 2)
    width = hp.Choice('width', [32, 64, 128])
    return {
        'units': [width] * depth,
        'cell': hp.Choice('cell', list(_CELLS)),
        'bidirectional': hp.Boolean('bidirectional', default=True),
        **training.search_space(hp, batch_sizes=[16, 32, 64])
    }


RECIPE = training.ModelRecipe(
    build_model=build_model,
    to_model_inputs=to_model_inputs,
    extra_signatures={signatures.SEQUENCE_SIGNATURE: sequence_signature},
    search_space=search_space)


def run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's entry point for the RNN: after a Tuner that chose
    between the sequence families, the best trial's family."""
    from models import sequences  # pylint: disable=import-outside-toplevel
    training.run(fn_args, RECIPE, recipes=sequences.recipes())


def tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's entry point for the RNN, or for the sequence
    families with `tune_families`."""
    # pylint: disable=import-outside-toplevel
    from models import sequences
    from models import tuning
    return tuning.tuner_fn(fn_args, RECIPE, sequences.recipes())
