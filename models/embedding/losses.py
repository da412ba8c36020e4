"""The triplet loss with in-batch mining, and the embedding's accuracy.

Both take a batch's integer labels [batch] and L2-normalized embeddings
[batch, dim]; every pair of the batch is compared, so no triplets are
prepared in the input (Schroff et al. 2015, "FaceNet"; Hermans et al. 2017,
"In defense of the triplet loss").
"""

import tensorflow as tf

keras = tf.keras

MINING = ('semi_hard', 'hard')


def squared_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """Squared Euclidean distances between unit vectors.

    [batch, batch] squared Euclidean distances of unit vectors: 2 - 2 cos, never
    below 0.
    """
    return tf.nn.relu(2.0 -
                      2.0 * tf.matmul(embeddings, embeddings, transpose_b=True))


def triplet_loss(labels: tf.Tensor,
                 embeddings: tf.Tensor,
                 margin: float,
                 mining: str = 'semi_hard') -> tf.Tensor:
    """The triplet loss over the triplets the mining picks.

    Mean of max(0, d(a, p) - d(a, n) + margin) over the batch's triplets the
    mining picks.

    `semi_hard` (FaceNet): every anchor-positive pair, with the closest
    negative farther than the positive (the hardest negative that does not
    collapse the embedding early); when none is farther, the farthest one.
    `hard` (batch-hard): each anchor's farthest positive and closest
    negative.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    distances = squared_distances(embeddings)
    same = tf.equal(labels[:, tf.newaxis], labels[tf.newaxis, :])
    positive = tf.logical_and(
        same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))
    negative = tf.logical_not(same)
    big = tf.reduce_max(distances) + 1.0
    if mining == 'hard':
        hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0),
                                         axis=1)
        hardest_negative = tf.reduce_min(tf.where(negative, distances, big),
                                         axis=1)
        losses = tf.nn.relu(hardest_positive - hardest_negative + margin)
        valid = tf.logical_and(tf.reduce_any(positive, axis=1),
                               tf.reduce_any(negative, axis=1))
    elif mining == 'semi_hard':
        # [anchor, positive, negative]
        to_positive = distances[:, :, tf.newaxis]
        to_negative = distances[:, tf.newaxis, :]
        negatives = negative[:, tf.newaxis, :]
        farther = tf.logical_and(negatives, to_negative > to_positive)
        closest_farther = tf.reduce_min(tf.where(farther, to_negative, big),
                                        axis=2)
        farthest = tf.reduce_max(tf.where(negatives, to_negative, -big), axis=2)
        chosen = tf.where(tf.reduce_any(farther, axis=2), closest_farther,
                          farthest)
        losses = tf.nn.relu(distances - chosen + margin)
        valid = tf.logical_and(positive,
                               tf.reduce_any(negative, axis=1, keepdims=True))
    else:
        raise ValueError(f'mining {mining!r}: expected one of {MINING}')
    valid = tf.cast(valid, losses.dtype)
    return tf.reduce_sum(losses * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


class TripletLoss(keras.losses.Loss):
    """`triplet_loss` as a Keras loss (y_true: labels, y_pred: embeddings).

    The mining needs the whole batch, so the loss is one value per batch.
    """

    def __init__(self,
                 margin: float = 0.2,
                 mining: str = 'semi_hard',
                 name: str = 'triplet_loss'):
        super().__init__(name=name)
        if mining not in MINING:
            raise ValueError(f'mining {mining!r}: expected one of {MINING}')
        self.margin = float(margin)
        self.mining = mining

    def call(self, y_true, y_pred):
        return triplet_loss(y_true, y_pred, self.margin, self.mining)

    def get_config(self):
        return {'margin': self.margin, 'mining': self.mining, 'name': self.name}


def nearest_neighbour_hits(labels: tf.Tensor,
                           embeddings: tf.Tensor) -> tf.Tensor:
    """Leave-one-out 1-NN hits in the batch.

    1.0 where an example's nearest other example in the batch has its label,
    else 0.0 ([batch]): leave-one-out 1-NN accuracy in the batch.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    similarity = tf.matmul(embeddings, embeddings, transpose_b=True)
    # Never itself: cosine similarity is at least -1.
    similarity -= 3.0 * tf.eye(tf.shape(labels)[0], dtype=similarity.dtype)
    nearest = tf.gather(labels, tf.argmax(similarity, axis=1))
    return tf.cast(tf.equal(nearest, labels), tf.float32)


class NearestNeighbourAccuracy(keras.metrics.MeanMetricWrapper):
    """The embedding's accuracy: 1-NN in the batch.

    The embedding's accuracy: how often an example's nearest neighbour in its
    batch shares its label. What early stopping and the Tuner choose by, as they
    choose a classifier by its accuracy.
    """

    def __init__(self, name: str = 'accuracy', dtype=None):
        super().__init__(nearest_neighbour_hits, name=name, dtype=dtype)
