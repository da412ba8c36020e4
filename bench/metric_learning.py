"""Metric learning on classes held out of training, against a classifier.

The embedding model against the same trunk trained as a softmax classifier.

    python -m bench.metric_learning [--train-per-class 1000] [--epochs 10]
        [--seen 0-6] [--draws 20] [--output bench/results/metric_learning.json]

Both models are trained on the Fashion-MNIST training images of the `seen`
classes (0-6 by default: T-shirt/top .. Shirt), with the `embedding`
family's smoke settings (pipeline/configs.py) and the same budget: the same
images, batch size, learning rate, epochs and batch-norm schedule. The
embedding model (models/embedding/) learns unit vectors with its triplet
loss; the classifier is the convnet (models/convnet/) with cross-entropy,
used as an embedding by L2-normalizing the input of its softmax layer (the
trunk's last features).

Measured on the held-out classes (7-9: Sneaker, Bag, Ankle boot), on the
3000 images of the test split, none seen in training:
- recall@1: how often an image's nearest other held-out image has its
  class (leave-one-out over the 3000);
- nearest-reference accuracy with k labelled references per class (k = 1,
  5, 20): k images of each class are drawn at random as references, every
  other image is given the class of its nearest reference (as a served
  model does), averaged over `draws` draws (mean and standard deviation);
- k-NN accuracy (k = 1, 5, 20): the majority class of an image's k nearest
  other held-out images.
Chance is 1 / the held-out classes. The classifier's accuracy on the seen
classes' test images is printed too, to show it trained.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from common import environment
from common import names

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from common import settings  # noqa: E402
from formats import image_formats  # noqa: E402
from pipeline import profiles  # noqa: E402

KS = (1, 5, 20)


def _classes(text: str) -> List[int]:
    """`0-6` or `0,1,2` -> class indices."""
    if '-' in text:
        first, last = (int(v) for v in text.split('-'))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(',')]


def load_split(prefix: str, classes: Sequence[int], per_class: Optional[int],
               seed: int):
    """Images (uint8 [n, 28, 28]) and labels of `classes`.

    `per_class` of each, drawn at random (None: all).
    """
    path = os.path.join(names.FASHION_MNIST_DIR,
                        f'{prefix}-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        path, image_formats.labels_path_for(path), 10)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in classes:
        indices = np.flatnonzero(labels == label)
        if per_class is not None:
            indices = rng.choice(indices, per_class, replace=False)
        chosen.append(indices)
    chosen = rng.permutation(np.concatenate(chosen))
    return images[chosen], labels[chosen]


def nearest_reference_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int,
                               draws: int, seed: int) -> List[float]:
    """Accuracy per draw of classifying by the nearest of k references a class.

    The references themselves are not scored.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    accuracies = []
    for _ in range(draws):
        references = np.concatenate([
            rng.choice(np.flatnonzero(labels == c), k, replace=False)
            for c in classes
        ])
        queries = np.setdiff1d(np.arange(len(labels)), references)
        similarity = vectors[queries] @ vectors[references].T
        predicted = labels[references][similarity.argmax(axis=1)]
        accuracies.append(float((predicted == labels[queries]).mean()))
    return accuracies


def neighbour_metrics(vectors: np.ndarray,
                      labels: np.ndarray) -> Dict[str, float]:
    """recall@1 and k-NN (majority vote) accuracy, leave-one-out."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1)[:, :max(KS)]
    neighbours = labels[order]
    metrics = {'recall_at_1': float((neighbours[:, 0] == labels).mean())}
    classes = np.unique(labels)
    for k in KS:
        votes = np.stack(
            [(neighbours[:, :k] == c).sum(axis=1) for c in classes], axis=1)
        # Ties go to the class of the nearer neighbours: the vote of the
        # k nearest, then the nearest alone breaks it.
        predicted = classes[votes.argmax(axis=1)]
        metrics[f'knn_{k}'] = float((predicted == labels).mean())
    return metrics


def evaluate(vectors: np.ndarray, labels: np.ndarray, draws: int,
             seed: int) -> Dict[str, Any]:
    """Every held-out metric of one embedding."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    result: Dict[str, Any] = neighbour_metrics(vectors, labels)
    for k in KS:
        per_draw = nearest_reference_accuracy(vectors, labels, k, draws, seed)
        result[f'references_{k}'] = [
            round(float(np.mean(per_draw)), 4),
            round(float(np.std(per_draw)), 4)
        ]
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Trains both models, scores them, writes `--output`."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--train-per-class', type=int, default=1000)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--seen', type=_classes, default=_classes('0-6'))
    parser.add_argument('--draws', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--output',
                        default='bench/results/metric_learning.json')
    args = parser.parse_args(argv)
    # TensorFlow loads after the arguments parse.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from models import schedule  # pylint: disable=import-outside-toplevel
    from models import training  # pylint: disable=import-outside-toplevel
    from models import weights  # pylint: disable=import-outside-toplevel
    from models.convnet import model as convnet  # pylint: disable=import-outside-toplevel
    from models.embedding import model as embedding  # pylint: disable=import-outside-toplevel

    held_out = [c for c in range(10) if c not in args.seen]
    params = {
        **settings.DEFAULTS,
        **profiles.MODELS['embedding'].profiles['smoke']
    }
    tf.keras.utils.set_random_seed(args.seed)
    train_images, train_labels = load_split('train', args.seen,
                                            args.train_per_class, args.seed)
    seen_test, seen_labels = load_split('t10k', args.seen, None, args.seed)
    test_images, test_labels = load_split('t10k', held_out, None, args.seed)
    # Scaled and z-scored as the convnet's preprocessing_fn does.
    mean, std = train_images.mean() / 255, train_images.std() / 255

    def inputs(images):
        x = (images[..., np.newaxis].astype(np.float32) / 255 - mean) / std
        return {'image': x}

    # Seen labels as 0..len(seen)-1 for the classifier.
    label_index = {c: i for i, c in enumerate(args.seen)}
    y_train = np.array([label_index[c] for c in train_labels])
    batch = int(params['batch_size'])
    steps = int(np.ceil(len(y_train) / batch))
    params.update(
        schedule.training_schedule(
            {
                **params, 'epochs': args.epochs,
                'min_train_steps': 0
            }, steps))
    dataset = tf.data.Dataset.from_tensor_slices(
        (inputs(train_images), y_train))
    recalibration = dataset.batch(batch)

    results: Dict[str, Any] = {
        'command':
            ' '.join(['python -m bench.metric_learning'] +
                     (argv if argv is not None else sys.argv[1:])),
        'seen_classes':
            args.seen,
        'held_out_classes':
            held_out,
        'train_images':
            int(len(y_train)),
        'epochs':
            args.epochs,
        'steps':
            steps * args.epochs,
        'held_out_images':
            int(len(test_labels)),
        'chance':
            round(1 / len(held_out), 4),
        'settings': {
            k: params[k]
            for k in ('conv_filters', 'dense_units', 'embedding_dim',
                      'triplet_margin', 'triplet_mining', 'batch_size',
                      'learning_rate', 'dropout')
        }
    }
    models = {}
    for name in ('embedding', 'softmax'):
        if name == 'embedding':
            model = embedding.build_model(params, len(args.seen))
            embedding.compile_model(model, params)
        else:
            model = convnet.build_model(params, len(args.seen))
            training.compile_model(model, params)
        started = time.monotonic()
        history = model.fit(dataset.shuffle(len(y_train),
                                            seed=args.seed).batch(batch),
                            epochs=args.epochs,
                            verbose=0)
        weights.recalibrate_batch_norm(model, recalibration, 100)
        seconds = time.monotonic() - started
        if name == 'softmax':
            # The trunk's last features, below the softmax.
            trunk = tf.keras.Model(model.inputs,
                                   model.get_layer('classifier').input)
            seen_accuracy = float(
                (model.predict(inputs(seen_test),
                               verbose=0).argmax(axis=1) == np.array([
                                   label_index[c] for c in seen_labels
                               ])).mean())
        else:
            trunk = model
            seen_accuracy = None
        vectors = trunk.predict(inputs(test_images), batch_size=256, verbose=0)
        models[name] = {
            'train_seconds':
                round(seconds, 1),
            'final_loss':
                round(float(history.history['loss'][-1]), 4),
            **({
                'seen_test_accuracy': round(seen_accuracy, 4)
            } if seen_accuracy is not None else {}),
            **evaluate(vectors, test_labels, args.draws, args.seed)
        }
        print(f'{name}: {json.dumps(models[name])}', flush=True)
    results['models'] = models
    common.write_results(args.output, results)
    print(format_table(results))
    return 0


def format_table(results: Dict[str, Any]) -> str:
    """The measures of both models and chance, one row each."""
    columns = ['recall_at_1'] + [f'references_{k}' for k in KS
                                ] + [f'knn_{k}' for k in KS]
    rows = [['model', *columns]]
    for name, measured in results['models'].items():
        rows.append([name] +
                    [(f'{measured[c][0]:.3f}±{measured[c][1]:.3f}' if
                      isinstance(measured[c], list) else f'{measured[c]:.3f}')
                     for c in columns])
    rows.append(['chance'] + [f'{results["chance"]:.3f}'] * len(columns))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) + 1)]
    return '\n'.join('  '.join(cell.ljust(w)
                               for cell, w in zip(row, widths))
                     for row in rows)


if __name__ == '__main__':
    sys.exit(main())
