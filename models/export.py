"""Exports a trained Keras model with the signatures of models/signatures.py.

The transform graph (tf.Transform) is attached to the model, so every
signature takes raw data and applies the very normalization used in
training. One function builds all signatures; a model package only says how
its extra signature's inputs become raw features.
"""

from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from common import names
from common import signatures

# Raw features -> {scores, classes}: the model with its transform graph.
PredictFn = Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]
# (PredictFn, hyper-parameters) -> one signature: a tf.function with an
# input_signature, taking what a client sends.
SignatureFactory = Callable[..., Callable[..., Dict[str, tf.Tensor]]]
# The model's output -> the signatures' outputs.
OutputsFn = Callable[[tf.Tensor], Dict[str, tf.Tensor]]


def rows_to_sparse(dense: tf.Tensor) -> tf.SparseTensor:
    """Dense values as the sparse tensor a VarLen feature parses to.

    [batch] or [batch, n] dense values as the sparse [batch, n] a VarLen feature
    parses to (all values kept, unlike tf.sparse.from_dense).
    """
    if dense.shape.rank == 1:
        dense = dense[:, tf.newaxis]
    return tf.RaggedTensor.from_tensor(dense).to_sparse()


def class_rows(class_names: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
    """The class names [n] as a row per row of `scores` [batch, n]."""
    return tf.tile(class_names[tf.newaxis, :], [tf.shape(scores)[0], 1])


def export_serving_model(model: tf.keras.Model,
                         tf_transform_output: tft.TFTransformOutput,
                         class_names: Sequence[str],
                         to_model_inputs: Callable[[Dict[str, tf.Tensor]],
                                                   Dict[str, tf.Tensor]],
                         extra_signatures: Dict[str, SignatureFactory],
                         export_dir: str,
                         to_outputs: Optional[OutputsFn] = None) -> None:
    """Saves `model` as a SavedModel whose signatures take raw data.

    Args:
        model: The trained Keras model; takes `to_model_inputs`'s output.
        tf_transform_output: The Transform component's output.
        class_names: Class names in label order.
        to_model_inputs: Transformed features -> the model's inputs.
        extra_signatures: Signature name -> a function making that signature
            from the predict function, besides `serving_default`.
        export_dir: Where to write the SavedModel.
        to_outputs: The model's output -> the signatures' outputs (default:
            `scores` and `classes` of `class_names`). With more than those
            two (a model of many heads), `serving_default` keeps only them,
            as the Classify API requires, and `predict` (serialized
            Examples, as `serving_default`) answers with them all.
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    class_name_tensor = tf.constant(list(class_names))
    raw_spec = dict(tf_transform_output.raw_feature_spec())
    # Labels are what a client asks for, not what it sends.
    raw_spec.pop(names.LABEL_KEY)
    raw_spec.pop(names.GROUP_LABEL_KEY, None)

    def class_outputs(scores: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {
            signatures.SCORES_OUTPUT: scores,
            signatures.CLASSES_OUTPUT: class_rows(class_name_tensor, scores)
        }

    def predict(raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw_features)
        return (to_outputs or class_outputs)(model(to_model_inputs(transformed),
                                                   training=False))

    examples_spec = tf.TensorSpec([None],
                                  tf.string,
                                  name=signatures.EXAMPLES_INPUT)

    @tf.function(input_signature=[examples_spec])
    def predict_examples(inputs):
        return predict(tf.io.parse_example(inputs, raw_spec))

    @tf.function(input_signature=[examples_spec])
    def classify_examples(inputs):
        outputs = predict(tf.io.parse_example(inputs, raw_spec))
        return {
            name: outputs[name]
            for name in (signatures.SCORES_OUTPUT, signatures.CLASSES_OUTPUT)
        }

    serving = {signatures.DEFAULT_SIGNATURE: predict_examples}
    if to_outputs is not None:
        serving = {
            signatures.DEFAULT_SIGNATURE: classify_examples,
            signatures.PREDICT_SIGNATURE: predict_examples
        }
    for name, make_signature in extra_signatures.items():
        serving[name] = make_signature(predict)
    # Without Keras's traces of every layer's call: the signatures above are
    # all a server or TFMA calls, and the traces cost the RNN 11-14 s to
    # save and 2-4 s more to load (bench/).
    model.save(export_dir,
               save_format='tf',
               signatures=serving,
               save_traces=False)
