"""What every sequence family reads and serves: model inputs, signatures.

The RNN, the FCN and InceptionTime read the same tf.Transform output (the
RNN's preprocessing_fn), take the same Keras inputs, end in the same
classifier and serve the same signatures (`serving_default`,
`serving_sequence`: common/signatures.py), so a Tuner may choose between
them (`tune_families`) and the pushed model serves the same requests
whichever family trained it.
"""

from typing import Any, Callable, Dict, Tuple

import tensorflow as tf

from common import names
from common import signatures
from models import export
from models import recipe as recipe_lib

keras = tf.keras


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


def masked_inputs(
        params: Dict[str, Any]) -> Tuple[keras.Input, keras.Input, tf.Tensor]:
    """The model's sequence and length inputs, and the mask of real steps."""
    channels = int(params['num_channels'])
    sequence = keras.Input((None, channels), name=names.SEQUENCE_KEY)
    length = keras.Input((), dtype=tf.int64, name=names.LENGTH_KEY)
    mask = keras.layers.Lambda(
        lambda args: tf.sequence_mask(args[1],
                                      tf.shape(args[0])[1]),
        name='mask')([sequence, length])
    return sequence, length, mask


def classifier(sequence: keras.Input, length: keras.Input, x: tf.Tensor,
               num_classes: int, name: str) -> keras.Model:
    """The model `name`: softmax scores over `x`, from the two inputs."""
    scores = keras.layers.Dense(num_classes,
                                activation='softmax',
                                name='classifier')(x)
    return keras.Model({
        names.SEQUENCE_KEY: sequence,
        names.LENGTH_KEY: length
    },
                       scores,
                       name=name)


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


# The signatures a sequence model serves besides `serving_default`.
SIGNATURES = {signatures.SEQUENCE_SIGNATURE: sequence_signature}


def recipe(name: str, build_model: Callable[[recipe_lib.Params, int],
                                            keras.Model],
           search_space: Callable[[Any], recipe_lib.Params]):
    """The recipe (a ModelRecipe) of the sequence family `name`."""
    return recipe_lib.ModelRecipe(name=name,
                                  build_model=build_model,
                                  to_model_inputs=to_model_inputs,
                                  extra_signatures=SIGNATURES,
                                  search_space=search_space)
