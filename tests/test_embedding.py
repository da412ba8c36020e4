"""The embedding model family (models/embedding/): the triplet loss and its
mining, unit-vector embeddings, classify-by-reference in the exported
SavedModel, and `python -m pipeline add-class`, which writes a new version
with one more class and the same weights.

The SavedModel is a real one: the embedding's run_fn trains on a tiny real
tf.Transform output (tests/tiny_transform.py) and exports it, once for the
module.
"""

import hashlib
import itertools
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from common import signatures
from models import entry_points
from models import features
from models.embedding import losses
from models.embedding import model as embedding
from pipeline import cli
from serving import client as client_lib
from tests import datasets
from tests import tiny_transform as tiny
from tests.serving import server_utils

PARAMS = {
    'embedding_dim': 8,
    'triplet_margin': 0.2,
    'triplet_mining': 'semi_hard',
    'references_per_class': 10,
    'epochs': 2
}


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _semi_hard_by_triplets(labels, embeddings, margin):
    """FaceNet's semi-hard loss, triplet by triplet, for comparison."""
    d = ((embeddings[:, None] - embeddings[None])**2).sum(-1)
    total, count = 0.0, 0
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negatives = [
            d[a, n] for n in range(len(labels)) if labels[n] != labels[a]
        ]
        farther = [x for x in negatives if x > d[a, p]]
        chosen = min(farther) if farther else max(negatives)
        total += max(d[a, p] - chosen + margin, 0.0)
        count += 1
    return total / count


def _batch_hard_by_anchors(labels, embeddings, margin):
    d = ((embeddings[:, None] - embeddings[None])**2).sum(-1)
    total = 0.0
    for a, label in enumerate(labels):
        positive = max(d[a, p]
                       for p in range(len(labels))
                       if p != a and labels[p] == label)
        negative = min(
            d[a, n] for n in range(len(labels)) if labels[n] != label)
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
            assert float(got) == pytest.approx(_semi_hard_by_triplets(
                labels, embeddings, margin),
                                               abs=1e-5)
            got = losses.triplet_loss(tf.constant(labels),
                                      tf.constant(embeddings, tf.float32),
                                      margin, 'hard')
            assert float(got) == pytest.approx(_batch_hard_by_anchors(
                labels, embeddings, margin),
                                               abs=1e-5)


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
    hits = losses.nearest_neighbour_hits(labels,
                                         tf.math.l2_normalize(points, axis=1))
    assert float(tf.reduce_mean(hits)) < 0.9
    for _ in range(100):
        optimizer.minimize(loss, [points])
    assert first > 0.1
    assert float(loss()) < 0.1 * first
    hits = losses.nearest_neighbour_hits(labels,
                                         tf.math.l2_normalize(points, axis=1))
    assert float(tf.reduce_mean(hits)) == 1.0


def test_the_model_outputs_unit_vectors_in_training_and_inference():
    params = {
        'image_shape': [12, 12, 1],
        'conv_filters': [4],
        'dense_units': 8,
        'embedding_dim': 5
    }
    # Seeded weights: at these widths an unlucky draw can leave an image no
    # active feature, and the zero vector has no direction to normalize.
    tf.keras.utils.set_random_seed(0)
    model = embedding.build_model(params, 3)
    images = np.random.default_rng(2).normal(size=(6, 12, 12, 1)) * 10
    for training in (True, False):
        vectors = model({
            'image': tf.constant(images, tf.float32)
        },
                        training=training).numpy()
        assert vectors.shape == (6, 5)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1),
                                   1.0,
                                   atol=1e-5)
    # The convnet's trunk, without its classifier.
    names = {layer.name for layer in model.layers}
    assert {'block0_conv0', 'dense'} <= names
    assert 'classifier' not in names


@pytest.fixture(scope='module')
def exported(tiny_transformed, tmp_path_factory):
    """The embedding's run_fn on a tiny real tf.Transform output (the
    run's, tests/conftest.py): its export."""
    transformed = tiny_transformed
    out = tmp_path_factory.mktemp('embedding')
    fn_args = tiny.fn_args(transformed, out, **PARAMS)
    entry_points.embedding_run_fn(fn_args)
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
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_classify_by_reference_names_the_nearest_class(exported):
    model = tf.saved_model.load(exported)
    images, labels = _images(15, 6)
    images = tf.constant(images)
    vectors = model.signatures[signatures.EMBEDDING_SIGNATURE](
        images=images)[signatures.EMBEDDINGS_OUTPUT].numpy()
    table = model.reference_table
    names = [n.decode() for n in table.class_names.numpy()]
    assert names == tiny.PARAMS['class_names']
    # References from the training split: at most references_per_class
    # of each class, all unit vectors.
    counts = np.bincount(table.labels.numpy(), minlength=len(names))
    assert counts.tolist() == [PARAMS['references_per_class']] * len(names)
    references = table.embeddings.numpy()
    np.testing.assert_allclose(np.linalg.norm(references, axis=1),
                               1.0,
                               atol=1e-5)
    # The nearest reference, found here by brute force.
    similarity = vectors @ references.T
    nearest = similarity.argmax(axis=1)
    want = [names[table.labels.numpy()[i]] for i in nearest]

    answer = model.signatures[signatures.REFERENCE_SIGNATURE](images=images)
    got = [n.decode() for n in answer[signatures.NEAREST_CLASS_OUTPUT].numpy()]
    assert got == want
    np.testing.assert_allclose(answer[signatures.SIMILARITY_OUTPUT].numpy(),
                               similarity.max(axis=1),
                               atol=1e-5)
    # The classifier's signatures name it too: a distribution over the
    # classes, the nearest class first; the same from bytes and Examples.
    by_image = model.signatures[signatures.IMAGE_SIGNATURE](images=images)
    scores = by_image[signatures.SCORES_OUTPUT].numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    classes = by_image[signatures.CLASSES_OUTPUT].numpy()
    assert [row[i].decode() for row, i in zip(classes, scores.argmax(axis=1))
           ] == want
    examples = [
        features.image_example(image, int(label))
        for image, label in zip(images.numpy(), labels)
    ]
    by_example = model.signatures[signatures.DEFAULT_SIGNATURE](
        inputs=tf.constant(examples))
    np.testing.assert_allclose(by_example[signatures.SCORES_OUTPUT].numpy(),
                               scores,
                               atol=1e-5)
    # The tiny set is easy: the embedding learned it.
    assert (np.array(want) == np.array(names)[labels]).mean() >= 0.9


VERSION = 1700000000
NEW_CLASS = 'stripe'


def _stripes(count, seed):
    """Images of a class the model never saw: a vertical band."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (count, tiny.SIZE, tiny.SIZE), dtype=np.uint8)
    images[:, :, 4:8] += 150
    return [datasets.png_bytes(image) for image in images]


def _write(folder, images):
    folder.mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / f'{i}.png').write_bytes(data)
    return folder


def _digest(folder):
    """SHA-256 of every file's relative path and bytes under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).rglob('*')):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _nearest(client, images):
    outputs = client.predict('embedding', {signatures.IMAGE_INPUT: images},
                             signature=signatures.REFERENCE_SIGNATURE)
    return [n.decode() for n in outputs[signatures.NEAREST_CLASS_OUTPUT]]


@pytest.fixture(scope='module')
def added(exported, tmp_path_factory):
    """Our model server on a base path holding the exported model; a class
    added by `add-class` while it serves. What the server answered before
    and after the swap, and the versions' files."""
    root = tmp_path_factory.mktemp('add_class')
    base = root / 'embedding'
    shutil.copytree(exported, base / str(VERSION))
    old_digest = _digest(base / str(VERSION))
    references = _write(root / 'references', _stripes(6, 3))
    unseen = _stripes(8, 4)  # Not among the references.
    server = server_utils.start_model_server(root, [
        '--model_name=embedding', f'--model_base_path={base}',
        '--file_system_poll_wait_seconds=1'
    ],
                                             rest=False)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            before = _nearest(client, unseen)
            code = cli.main([
                'add-class', '--model-dir',
                str(base), '--name', NEW_CLASS, '--images',
                str(references)
            ])
            client.wait_until_available('embedding', 120, version=VERSION + 1)
            after = _nearest(client, unseen)
            top = [
                p.top_class for p in client.predict_images('embedding', unseen)
            ]
    finally:
        server.stop()
    return dict(base=base,
                code=code,
                before=before,
                after=after,
                top=top,
                unseen=unseen,
                old_digest=old_digest)


def test_an_added_class_is_served_after_the_version_swap(added):
    assert added['code'] == 0
    assert NEW_CLASS not in added['before']
    assert added['after'] == [NEW_CLASS] * len(added['after'])
    assert added['top'] == added['after']  # serving_image agrees


def test_add_class_writes_the_next_version_and_leaves_the_old_one(added):
    base = added['base']
    assert sorted(os.listdir(base)) == [str(VERSION), str(VERSION + 1)]
    assert _digest(base / str(VERSION)) == added['old_digest']
    old = tf.saved_model.load(str(base / str(VERSION)))
    answer = old.signatures[signatures.REFERENCE_SIGNATURE](
        images=tf.constant(added['unseen']))
    assert NEW_CLASS.encode() not in answer[
        signatures.NEAREST_CLASS_OUTPUT].numpy().tolist()
    new = tf.saved_model.load(str(base / str(VERSION + 1)))
    assert [n.decode() for n in new.reference_table.class_names.numpy()] == \
        tiny.PARAMS['class_names'] + [NEW_CLASS]
    assert np.bincount(new.reference_table.labels.numpy())[-1] == 6
    # The old classes' references and every weight are the old version's.
    table = {
        id(v)
        for v in (old.reference_table.embeddings, old.reference_table.labels,
                  old.reference_table.class_names)
    }
    weights = sorted((v.name, v.numpy().tobytes())
                     for v in tf.train.TrackableView(old).descendants()
                     if isinstance(v, tf.Variable) and id(v) not in table)
    new_table = {
        id(v)
        for v in (new.reference_table.embeddings, new.reference_table.labels,
                  new.reference_table.class_names)
    }
    assert weights and weights == sorted(
        (v.name, v.numpy().tobytes())
        for v in tf.train.TrackableView(new).descendants()
        if isinstance(v, tf.Variable) and id(v) not in new_table)
    old_rows = old.reference_table.embeddings.numpy()
    np.testing.assert_array_equal(
        new.reference_table.embeddings.numpy()[:len(old_rows)], old_rows)


@pytest.fixture
def base_path(exported, tmp_path):
    base = tmp_path / 'embedding'
    shutil.copytree(exported, base / str(VERSION))
    return base


@pytest.mark.parametrize('fault', [
    'no images', 'unreadable image', 'not an image file', 'existing name',
    'no version'
])
def test_bad_input_to_add_class_is_one_line_and_exit_2(fault, base_path,
                                                       tmp_path, capsys):
    images = _write(tmp_path / 'images', _stripes(2, 5))
    name, model_dir, culprit = NEW_CLASS, base_path, None
    if fault == 'no images':
        for path in images.iterdir():
            path.unlink()
        culprit = f'{images}: holds no image files'
    elif fault == 'unreadable image':
        (images / '1.png').write_bytes(b'not a png')
        culprit = f'{images / "1.png"}: is not an image'
    elif fault == 'not an image file':
        (images / 'notes.txt').write_text('a shirt')
        culprit = f'{images / "notes.txt"}: is not an image file'
    elif fault == 'existing name':
        name = tiny.PARAMS['class_names'][1]
        culprit = f'{base_path / str(VERSION)}: already has a class {name!r}'
    else:
        model_dir = tmp_path / 'empty'
        model_dir.mkdir()
        culprit = f'{model_dir}: holds no numbered model version'
    before = sorted(os.listdir(base_path))
    code = cli.main([
        'add-class', '--model-dir',
        str(model_dir), '--name', name, '--images',
        str(images)
    ])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error')]
    assert code == 2
    # One line: the error, last, and no traceback before it.
    assert len(lines) == 1 and lines[0].startswith(f'error: {culprit}'), err
    assert err.strip().splitlines()[-1] == lines[0], err
    assert 'Traceback' not in err, err
    assert sorted(os.listdir(base_path)) == before  # Nothing written.
