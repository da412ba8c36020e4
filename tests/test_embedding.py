"""The embedding model family (models/embedding/): the triplet loss and its
mining, unit-vector embeddings, classify-by-reference in the exported
SavedModel, and `python -m pipeline add-class`, which writes a new version
with one more class and the same weights.

The SavedModel is a real one: the embedding's run_fn trains on the tiny
real tf.Transform output of tests/test_distributed_training.py (its module
fixture, run again for this module) and exports it.
"""

import hashlib
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf

from models import signatures
from models.embedding import losses
from models.embedding import model as embedding
from pipeline import cli
from tests import datasets
from tests import test_distributed_training as tiny

transformed = tiny.transformed  # The module fixture: a tf.Transform output.

PARAMS = {'embedding_dim': 8, 'triplet_margin': 0.2,
          'triplet_mining': 'semi_hard', 'references_per_class': 10,
          'epochs': 2}


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _semi_hard_by_triplets(labels, embeddings, margin):
    """FaceNet's semi-hard loss, triplet by triplet, for comparison."""
    d = ((embeddings[:, None] - embeddings[None]) ** 2).sum(-1)
    total, count = 0.0, 0
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negatives = [d[a, n] for n in range(len(labels))
                     if labels[n] != labels[a]]
        farther = [x for x in negatives if x > d[a, p]]
        chosen = min(farther) if farther else max(negatives)
        total += max(d[a, p] - chosen + margin, 0.0)
        count += 1
    return total / count


def _batch_hard_by_anchors(labels, embeddings, margin):
    d = ((embeddings[:, None] - embeddings[None]) ** 2).sum(-1)
    total = 0.0
    for a, label in enumerate(labels):
        positive = max(d[a, p] for p in range(len(labels))
                       if p != a and labels[p] == label)
        negative = min(d[a, n] for n in range(len(labels))
                       if labels[n] != label)
        total += max(positive - negative + margin, 0.0)
    return total / len(labels)


def test_the_triplet_loss_mines_as_its_definition_says():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    for _ in range(5):
        embeddings = _unit(rng.normal(size=(8, 3)))
        for margin in (0.2, 1.0):
            got = losses.triplet_loss(tf.constant(labels),
                                      tf.constant(embeddings, tf.float32),
                                      margin, 'semi_hard')
            assert float(got) == pytest.approx(
                _semi_hard_by_triplets(labels, embeddings, margin), abs=1e-5)
            got = losses.triplet_loss(tf.constant(labels),
                                      tf.constant(embeddings, tf.float32),
                                      margin, 'hard')
            assert float(got) == pytest.approx(
                _batch_hard_by_anchors(labels, embeddings, margin), abs=1e-5)


@pytest.mark.parametrize('mining', losses.MINING)
def test_the_triplet_loss_decreases_and_separates_a_toy_set(mining):
    # Free embeddings of 24 points of 4 classes, all starting near one
    # direction: descent on the loss alone must pull the classes apart.
    rng = np.random.default_rng(1)
    labels = tf.constant(np.arange(24) % 4)
    points = tf.Variable(rng.normal(size=(24, 4)) * 0.1 + [1, 0, 0, 0],
                         dtype=tf.float32)
    optimizer = tf.keras.optimizers.Adam(0.05)
    loss_fn = losses.TripletLoss(margin=0.2, mining=mining)

    def loss():
        return loss_fn(labels, tf.math.l2_normalize(points, axis=1))

    first = float(loss())
    hits = losses.nearest_neighbour_hits(
        labels, tf.math.l2_normalize(points, axis=1))
    assert float(tf.reduce_mean(hits)) < 0.9
    for _ in range(100):
        optimizer.minimize(loss, [points])
    assert first > 0.1
    assert float(loss()) < 0.1 * first
    hits = losses.nearest_neighbour_hits(
        labels, tf.math.l2_normalize(points, axis=1))
    assert float(tf.reduce_mean(hits)) == 1.0


def test_the_model_outputs_unit_vectors_in_training_and_inference():
    params = {'image_shape': [12, 12, 1], 'conv_filters': [4],
              'dense_units': 8, 'embedding_dim': 5}
    model = embedding.build_model(params, 3)
    images = np.random.default_rng(2).normal(size=(6, 12, 12, 1)) * 10
    for training in (True, False):
        vectors = model({'image': tf.constant(images, tf.float32)},
                        training=training).numpy()
        assert vectors.shape == (6, 5)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0,
                                   atol=1e-5)
    # The convnet's trunk, without its classifier.
    names = {layer.name for layer in model.layers}
    assert {'block0_conv0', 'dense'} <= names
    assert 'classifier' not in names


@pytest.fixture(scope='module')
def exported(transformed, tmp_path_factory):
    """The embedding's run_fn on the tiny Transform output: its export."""
    out = tmp_path_factory.mktemp('embedding')
    fn_args = tiny._fn_args(transformed, out, **PARAMS)  # pylint: disable=protected-access
    embedding.run_fn(fn_args)
    return fn_args.serving_model_dir


def _images(count, seed):
    images, labels = datasets.images_with_labels(count, tiny.CLASSES, seed,
                                                 tiny.SIZE)
    return [datasets.png_bytes(image) for image in images], labels


def test_the_served_embeddings_are_unit_vectors(exported):
    model = tf.saved_model.load(exported)
    images, _ = _images(12, 5)
    vectors = model.signatures[signatures.EMBEDDING_SIGNATURE](
        images=tf.constant(images))[signatures.EMBEDDINGS_OUTPUT].numpy()
    assert vectors.shape == (12, PARAMS['embedding_dim'])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0,
                               atol=1e-5)
