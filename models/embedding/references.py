"""The reference table and the embedding model's serving signatures.

A served embedding model classifies by reference: an image's class is that
of its nearest reference embedding. The table (class names, and reference
unit vectors with the index of their class) is held in the SavedModel as
variables of unknown length, so a new table, with more classes, can be
written into a copy of the model without retracing or retraining it
(pipeline/add_class.py).

Signatures (names in models/signatures.py):
- `serving_default` (tf.Examples) and `serving_image` (image bytes): every
  known class's score, a softmax over its nearest reference's cosine
  similarity, and the class names: the contract every model keeps, so
  TFMA, the serving check and TF Serving's Classify work unchanged.
- `serving_embedding` (image bytes): the unit vectors.
- `serving_reference` (image bytes): the nearest class's name and its
  cosine similarity.
"""

import math
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from common import names
from common import signatures
from models import export
from models.convnet import model as convnet

keras = tf.keras

# Class scores are softmax(cosine similarity / TEMPERATURE): the ranking is
# the similarity's, and a class 0.1 more similar than another gets about
# 7 times its score.
TEMPERATURE = 0.05


class ReferenceTable(tf.Module):
    """Class names and reference embeddings, as resizable variables.

    Attributes:
        class_names: [classes] strings, in label order.
        embeddings: [references, dim] unit vectors.
        labels: [references] index of each reference's class.
    """

    def __init__(self, class_names: Sequence[str], embeddings: np.ndarray,
                 labels: np.ndarray):
        super().__init__(name='reference_table')
        dim = int(embeddings.shape[1])
        self.class_names = tf.Variable(list(class_names),
                                       dtype=tf.string,
                                       trainable=False,
                                       shape=tf.TensorShape([None]),
                                       name='class_names')
        self.embeddings = tf.Variable(embeddings.astype(np.float32),
                                      trainable=False,
                                      shape=tf.TensorShape([None, dim]),
                                      name='embeddings')
        self.labels = tf.Variable(labels.astype(np.int32),
                                  trainable=False,
                                  shape=tf.TensorShape([None]),
                                  name='labels')

    def class_similarity(self, embeddings: tf.Tensor) -> tf.Tensor:
        """Each class's nearest-reference similarity to each embedding.

        [batch, classes]: each class's nearest reference's cosine similarity to
        each embedding.
        """
        similarity = tf.matmul(self.embeddings, embeddings, transpose_b=True)
        return tf.transpose(
            tf.math.unsorted_segment_max(similarity, self.labels,
                                         tf.size(self.class_names)))

    def class_scores(self, embeddings: tf.Tensor) -> Dict[str, tf.Tensor]:
        """`scores` and `classes`, as every classifier answers."""
        scores = tf.nn.softmax(self.class_similarity(embeddings) / TEMPERATURE)
        classes = tf.tile(self.class_names[tf.newaxis, :],
                          [tf.shape(scores)[0], 1])
        return {
            signatures.SCORES_OUTPUT: scores,
            signatures.CLASSES_OUTPUT: classes
        }

    def nearest(self, embeddings: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The nearest class's name and cosine similarity, per embedding."""
        similarity = self.class_similarity(embeddings)
        return {
            signatures.NEAREST_CLASS_OUTPUT:
                tf.gather(self.class_names, tf.argmax(similarity, axis=1)),
            signatures.SIMILARITY_OUTPUT:
                tf.reduce_max(similarity, axis=1)
        }


def collect_references(embed: Callable[[Any], np.ndarray],
                       batches: Iterable[Tuple[Any, Any]], num_classes: int,
                       per_class: int) -> Tuple[np.ndarray, np.ndarray]:
    """Up to `per_class` (0: all) embedded examples of each class.

    Args:
        embed: Model inputs of a batch -> [batch, dim] embeddings.
        batches: (model inputs, labels) batches, in a fixed order.
        num_classes: Classes the labels index.
        per_class: References kept per class, the first met; 0 keeps all.

    Returns:
        (embeddings [n, dim], labels [n]).
    """
    kept: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    counts = np.zeros(num_classes, dtype=np.int64)
    limit = per_class or math.inf
    for inputs, batch_labels in batches:
        if counts.min() >= limit:
            break
        batch_labels = np.asarray(batch_labels).reshape(-1)
        take = np.zeros(len(batch_labels), dtype=bool)
        for i, label in enumerate(batch_labels):
            if counts[label] < limit:
                counts[label] += 1
                take[i] = True
        if take.any():
            kept.append(np.asarray(embed(inputs))[take])
            labels.append(batch_labels[take])
    if not kept:
        raise ValueError('no training examples to take references from')
    return np.concatenate(kept), np.concatenate(labels).astype(np.int32)


def export_serving_model(model: keras.Model,
                         tf_transform_output: tft.TFTransformOutput,
                         class_names: Sequence[str],
                         to_model_inputs: Callable[[Dict[str, tf.Tensor]],
                                                   Dict[str, tf.Tensor]],
                         extra_signatures: Dict[str, export.SignatureFactory],
                         export_dir: str, reference_data: tf.data.Dataset,
                         references_per_class: int) -> None:
    """Saves the embedding model with its reference table and signatures.

    Args: as export.export_serving_model's, and
        reference_data: The training split, (model inputs, label) batches
            in a fixed order: the references are taken from it.
        references_per_class: References per class (0: every example).
    """
    del extra_signatures  # This family's signatures are all made here.
    embeddings, labels = collect_references(
        lambda inputs: model(inputs, training=False).numpy(), reference_data,
        len(class_names), references_per_class)
    table = ReferenceTable(class_names, embeddings, labels)
    # Attributes of the model: saved with it, found by add_class.
    model.tft_layer = tf_transform_output.transform_features_layer()
    model.reference_table = table
    raw_spec = dict(tf_transform_output.raw_feature_spec())
    raw_spec.pop(names.LABEL_KEY)

    def embed(raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
        transformed = model.tft_layer(raw_features)
        return model(to_model_inputs(transformed), training=False)

    def embed_images(raw_features):
        return {signatures.EMBEDDINGS_OUTPUT: embed(raw_features)}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=signatures.EXAMPLES_INPUT)
    ])
    def serve_examples(inputs):
        return table.class_scores(embed(tf.io.parse_example(inputs, raw_spec)))

    serving = {
        signatures.DEFAULT_SIGNATURE:
            serve_examples,
        signatures.IMAGE_SIGNATURE:
            convnet.image_signature(lambda raw: table.class_scores(embed(raw)),
                                    {}),
        signatures.EMBEDDING_SIGNATURE:
            convnet.image_signature(embed_images, {}),
        signatures.REFERENCE_SIGNATURE:
            convnet.image_signature(lambda raw: table.nearest(embed(raw)), {}),
    }
    model.save(export_dir,
               save_format='tf',
               signatures=serving,
               save_traces=False)
