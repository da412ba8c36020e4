"""What every sequence family reads and serves: model inputs, signatures.

The RNN and the FCN read the same tf.Transform output (the RNN's
preprocessing_fn) and serve the same signatures (`serving_default`,
`serving_sequence`: common/signatures.py), so a Tuner may choose between
them (`tune_families`) and the pushed model serves the same requests
whichever family trained it.
"""

from typing import Any, Dict

import tensorflow as tf

from common import names
from common import signatures
from models import export


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


# The signatures a sequence model serves besides `serving_default`.
SIGNATURES = {signatures.SEQUENCE_SIGNATURE: sequence_signature}
