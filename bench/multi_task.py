"""Multi-task against single-task learning on Fashion-MNIST, same budget.

    python -m bench.multi_task [--train-per-class 300] [--epochs 20]
        [--profile full] [--seeds 0,1,2] [--group-loss-weights 1.0]
        [--output bench/results/multi_task.json]

Fashion-MNIST's ten classes and their coarse groups (tops, bottoms,
dresses, footwear, bags: formats/class_groups.py FASHION_MNIST_GROUPS).
Both models are the convnet's `profile` (pipeline/profiles.py: the filter
banks, dense layer, batch, learning rate and dropout) trained on the
same training images (`train-per-class` of each class drawn at random; 0:
all 60000) for the same epochs (the same steps, batch-norm schedule and
recalibration):
- single-task: the convnet (models/convnet/) on the ten classes;
- multi-task: the same trunk with a class head and a group head
  (models/multitask/), the group head's cross-entropy weighted by each of
  `group-loss-weights`.
Measured on the 10000 test images: the class accuracy, and the group
accuracy (the multi-task model's group head; the single-task model's
predicted class mapped to its group). Each seed draws its own training
images, initial weights and shuffle, the same for both models.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from common import environment
from common import names

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from common import settings  # noqa: E402
from formats import class_groups  # noqa: E402
from formats import image_formats  # noqa: E402
from pipeline import profiles  # noqa: E402


def load_split(prefix: str, per_class: int, seed: int):
    """(images uint8 [n, 28, 28], labels): `per_class` a class (0: all)."""
    path = os.path.join(names.FASHION_MNIST_DIR,
                        f'{prefix}-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        path, image_formats.labels_path_for(path), 10)
    if per_class:
        rng = np.random.default_rng(seed)
        chosen = np.concatenate([
            rng.choice(np.flatnonzero(labels == label),
                       per_class,
                       replace=False) for label in range(10)
        ])
        images, labels = images[chosen], labels[chosen]
    return images, labels


def main(argv: Optional[List[str]] = None) -> int:
    """Trains and measures both models for each seed; writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--train-per-class', type=int, default=300)
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--profile', default='full', choices=profiles.PROFILES)
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--group-loss-weights', default='1.0')
    parser.add_argument('--output', default='bench/results/multi_task.json')
    args = parser.parse_args(argv)
    # TensorFlow loads after the arguments parse.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from models import schedule  # pylint: disable=import-outside-toplevel
    from models import training  # pylint: disable=import-outside-toplevel
    from models import weights  # pylint: disable=import-outside-toplevel
    from models.convnet import model as convnet  # pylint: disable=import-outside-toplevel
    from models.multitask import model as multitask  # pylint: disable=import-outside-toplevel

    class_names = list(image_formats.FASHION_MNIST_CLASS_NAMES)
    groups = class_groups.read('', names.FASHION_MNIST_DIR, class_names)
    to_group = np.array(groups.class_groups)
    params = {
        **settings.family_defaults('multitask'),
        **profiles.MODELS['multitask'].profiles[args.profile], 'class_names':
            class_names,
        'group_names':
            list(groups.group_names)
    }
    batch = int(params['batch_size'])
    test_images, test_labels = load_split('t10k', 0, 0)
    results: Dict[str, Any] = {
        'command':
            ' '.join(['python -m bench.multi_task'] +
                     (argv if argv is not None else sys.argv[1:])),
        'train_per_class':
            args.train_per_class,
        'epochs':
            args.epochs,
        'profile':
            args.profile,
        'test_images':
            int(len(test_labels)),
        'load_average_at_start':
            list(os.getloadavg()),
        'settings': {
            k: params[k] for k in ('conv_filters', 'dense_units', 'batch_size',
                                  'learning_rate', 'dropout')
        },
        'runs': []
    }
    for seed in (int(s) for s in args.seeds.split(',')):
        train_images, train_labels = load_split('train', args.train_per_class,
                                                seed)
        # Scaled and z-scored as the convnet's preprocessing_fn does.
        mean, std = train_images.mean() / 255, train_images.std() / 255

        def inputs(images, mean=mean, std=std):
            x = (images[..., np.newaxis].astype(np.float32) / 255 - mean) / std
            return {'image': x}

        steps = int(np.ceil(len(train_labels) / batch))
        run_params = {
            **params,
            **schedule.training_schedule(
                {
                    **params, 'epochs': args.epochs,
                    'min_train_steps': 0
                }, steps)
        }
        targets = np.stack([train_labels, to_group[train_labels]], axis=1)
        variants = [('single-task', None)
                   ] + [(f'multi-task (group weight {w})', float(w))
                        for w in args.group_loss_weights.split(',')]
        for name, group_weight in variants:
            tf.keras.utils.set_random_seed(seed)
            if group_weight is None:
                model = convnet.build_model(run_params, 10)
                training.compile_model(model, run_params)
                y = train_labels
            else:
                model_params = {**run_params, 'group_loss_weight': group_weight}
                model = multitask.build_model(model_params, 10)
                multitask.compile_model(model, model_params)
                y = targets
            dataset = tf.data.Dataset.from_tensor_slices(
                (inputs(train_images), y))
            started = time.monotonic()
            model.fit(dataset.shuffle(len(y), seed=seed).batch(batch),
                      epochs=args.epochs,
                      verbose=0)
            weights.recalibrate_batch_norm(model, dataset.batch(batch), 100)
            seconds = time.monotonic() - started
            scores = model.predict(inputs(test_images),
                                   batch_size=512,
                                   verbose=0)
            predicted = scores[:, :10].argmax(axis=1)
            if group_weight is None:
                predicted_group = to_group[predicted]
            else:
                predicted_group = scores[:, 10:].argmax(axis=1)
            run = {
                'model':
                    name,
                'seed':
                    seed,
                'train_images':
                    int(len(train_labels)),
                'steps':
                    steps * args.epochs,
                'train_seconds':
                    round(seconds, 1),
                'class_accuracy':
                    round(float((predicted == test_labels).mean()), 4),
                'group_accuracy':
                    round(
                        float(
                            (predicted_group == to_group[test_labels]).mean()),
                        4)
            }
            results['runs'].append(run)
            print(json.dumps(run), flush=True)
    common.write_results(args.output, results)
    print(format_table(results))
    return 0


def format_table(results: Dict[str, Any]) -> str:
    """Each model's mean (and spread over seeds) of both accuracies."""
    by_model: Dict[str, List[Dict[str, Any]]] = {}
    for run in results['runs']:
        by_model.setdefault(run['model'], []).append(run)
    lines = [
        '| model | seeds | class accuracy | group accuracy |',
        '| --- | --- | --- | --- |'
    ]
    for model, runs in by_model.items():
        cells = []
        for key in ('class_accuracy', 'group_accuracy'):
            values = np.array([r[key] for r in runs])
            cells.append(f'{values.mean():.4f} ± {values.std():.4f}'
                         if len(values) > 1 else f'{values[0]:.4f}')
        lines.append(f'| {model} | {len(runs)} | {cells[0]} | {cells[1]} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
