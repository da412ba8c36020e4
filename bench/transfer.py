"""Multi-scale vs single-scale convnets, transfer vs from scratch.

Each at the same budget (steps).

    python -m bench.transfer [--out DIR] [--part all|transfer|scales]
        [--seeds 3]

1. A source convnet learns 6 Fashion-MNIST classes (Trouser, Dress, Sandal,
   Sneaker, Bag, Ankle boot) at 28x28 from all their training images
   (36,000; `--source-per-class`) for 10 epochs (`--source-epochs`), each
   epoch's test accuracy kept to show it converged, and is saved as a
   model base path (`DIR/source/1`); a later run with the same `--out` and
   settings reuses it.
2. A small class-folder set of the 4 other classes (T-shirt, Pullover,
   Coat, Shirt), which the source never saw, at another size (32x32 gray
   PNGs, `bench/small_data.py`; 300 training and 400 test images), is
   learnt from scratch and from the source (`transfer_from`: its filter
   banks, frozen for the first quarter of the epochs, then fine-tuned at a
   tenth of the learning rate while the new head keeps the full rate; and
   at the full rate), each with `--seeds` seeds: the table gives each
   variant's mean and spread. `--part scales` learns it multi-scale
   instead.
3. With `--part scales` or `all`, a Fashion-MNIST subset (10 classes) is
   learnt single-scale and multi-scale, with shared and separate weights
   per scale.

Models are the convnet family's (`models/convnet/model.py`, the `smoke`
profile's widths), trained with the Trainer's own pieces (its schedule,
compile, batch-norm recalibration, and `models/transfer.py`), on images
z-scored per channel with the training split's statistics as tf.Transform
does. Prints a table and one JSON line.

Measured (docs/results/model-quality.md, "Transfer and multi-scale"):
the source reached 0.981 test accuracy; on the small set over seeds 0-2,
from scratch 0.707 ± 0.012, transfer with the defaults 0.727 ± 0.007,
fine-tuned at the full rate 0.739 ± 0.008.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from common import environment
from common import names
from common import settings as settings_table

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench import common  # noqa: E402
from bench import small_data  # noqa: E402
from formats import image_formats  # noqa: E402
from pipeline import profiles  # noqa: E402

# The small set holds the four tops, the classes most alike (learnt from
# scratch on 300 images, Shirt, Sneaker, Bag and Ankle boot reached 0.97
# test accuracy, with or without transfer: nothing left to show).
SMALL_CLASSES = (0, 2, 4, 6)
SOURCE_CLASSES = (1, 3, 5, 7, 8, 9)
MULTI_SCALE = {'scales': [1, 2, 4]}
# name -> settings over the convnet's `smoke` profile.
SCALE_VARIANTS = {
    'single-scale': {},
    'multi-scale [1,2,4], separate': {
        **MULTI_SCALE, 'scales_share_weights': False
    },
    'multi-scale [1,2,4], shared': {
        **MULTI_SCALE, 'scales_share_weights': True
    },
}
Arrays = Tuple[np.ndarray, np.ndarray]


def fashion_mnist(split: str, classes: Sequence[int], per_class: int,
                  seed: int) -> Arrays:
    """`per_class` 28x28 images of each of `classes`, labels 0..k-1.

    `per_class` 0: all of them.
    """
    prefix = 'train' if split == 'train' else 't10k'
    path = os.path.join(names.FASHION_MNIST_DIR,
                        f'{prefix}-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        path, image_formats.labels_path_for(path), 10)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == c),
                   per_class or np.count_nonzero(labels == c),
                   replace=False) for c in classes
    ]
    index = np.concatenate(chosen)
    new_labels = np.concatenate(
        [np.full(len(c), i) for i, c in enumerate(chosen)])
    return images[index][..., np.newaxis], new_labels


def class_folders(root: str, split: str) -> Arrays:
    """A class-folder split as gray images and labels (folders sorted)."""
    names = sorted(os.listdir(os.path.join(root, split)))
    images, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(root, split, name)
        for file_name in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file_name)) as image:
                images.append(np.asarray(image.convert('L')))
            labels.append(label)
    return np.stack(images)[..., np.newaxis], np.array(labels)


def z_scored(train: np.ndarray, *others: np.ndarray) -> List[np.ndarray]:
    """Pixels in [0, 1], z-scored per channel with `train`'s statistics.

    As the convnet's preprocessing_fn does.
    """
    scaled = [a.astype('float32') / 255 for a in (train, *others)]
    mean = scaled[0].mean(axis=(0, 1, 2))
    std = scaled[0].std(axis=(0, 1, 2))
    return [(a - mean) / (std + 1e-3) for a in scaled]


def fit(settings: Dict[str, Any],
        train: Arrays,
        test: Arrays,
        epochs: int,
        seed: int,
        save_to: Optional[str] = None,
        test_each_epoch: bool = False) -> Dict[str, Any]:
    """Trains a convnet for `epochs` epochs; returns its test accuracy.

    With `test_each_epoch`, each epoch's too, before batch-norm
    recalibration.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from models import schedule
    from models import training
    from models import transfer
    from models import weights
    from models.convnet import model as convnet
    params = {
        **settings_table.DEFAULTS,
        **profiles.MODELS['convnet'].profiles['smoke'],
        **settings, 'image_shape': list(train[0].shape[1:]),
        'epochs': epochs
    }
    batch = int(params['batch_size'])
    steps = -(-len(train[0]) // batch)
    params['batch_norm_momentum'] = schedule.training_schedule(
        {
            **params, 'min_train_steps': 0
        }, steps)['batch_norm_momentum']
    tf.keras.utils.set_random_seed(seed)
    model = convnet.build_model(params, int(train[1].max()) + 1)
    callbacks = []
    report: Dict[str, Any] = {}
    if params.get('transfer_from'):
        started = transfer.start_from(model, params)
        report = started.report
        callbacks.append(started.callback)
    training.compile_model(model, params)
    data = tf.data.Dataset.from_tensor_slices(train).shuffle(
        len(train[0]), seed=seed).batch(batch)
    began = time.monotonic()
    history = model.fit(data,
                        epochs=epochs,
                        verbose=0,
                        callbacks=callbacks,
                        validation_data=test if test_each_epoch else None,
                        validation_batch_size=256)
    weights.recalibrate_batch_norm(model, data, 100)
    seconds = time.monotonic() - began
    _, accuracy = model.evaluate(*test, batch_size=256, verbose=0)
    if save_to:
        model.save(save_to, save_format='tf', save_traces=False)
    result = {
        'test_accuracy': round(float(accuracy), 4),
        'steps': epochs * steps,
        'weights': model.count_params(),
        'seconds': round(seconds, 1),
        'transferred_layers': len(report.get('layers', []))
    }
    if test_each_epoch:
        result['epoch_test_accuracy'] = [
            round(float(a), 4) for a in history.history['val_accuracy']
        ]
    return result


def source_model(out: str, per_class: int, epochs: int,
                 record: Callable[[str, str, Dict[str, Any]], None]) -> str:
    """The source model's base path, `out/source`, trained if need be.

    Trained on `per_class` training images of each source class (0: all)
    and saved, or the one a run with the same settings saved there before.
    """
    source_dir = os.path.join(out, 'source')
    settings = {
        'classes': list(SOURCE_CLASSES),
        'per_class': per_class,
        'epochs': epochs
    }
    settings_path = os.path.join(source_dir, 'settings.json')
    if os.path.exists(settings_path):
        with open(settings_path, encoding='utf-8') as f:
            saved = json.load(f)
        if saved['settings'] == settings:
            print(f'source model {source_dir}/1 reused', file=sys.stderr)
            record('source: F-MNIST 6 classes', 'single-scale (reused)',
                   saved['result'])
            return source_dir
    shutil.rmtree(source_dir, ignore_errors=True)
    train = fashion_mnist('train', SOURCE_CLASSES, per_class, 0)
    test = fashion_mnist('test', SOURCE_CLASSES, 0, 0)
    train_x, test_x = z_scored(train[0], test[0])
    result = fit({}, (train_x, train[1]), (test_x, test[1]),
                 epochs,
                 0,
                 save_to=os.path.join(source_dir, '1'),
                 test_each_epoch=True)
    result['train_images'] = len(train[1])
    record('source: F-MNIST 6 classes', 'single-scale', result)
    with open(settings_path, 'w', encoding='utf-8') as f:
        json.dump({'settings': settings, 'result': result}, f)
    return source_dir


def summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each small-set variant's test accuracy over its seeds.

    Mean, standard deviation, lowest and highest.
    """
    by_variant: Dict[str, List[float]] = {}
    for row in rows:
        if 'seed' in row:
            by_variant.setdefault(row['variant'],
                                  []).append(row['test_accuracy'])
    return [{
        'variant': variant,
        'seeds': len(values),
        'mean': round(float(np.mean(values)), 4),
        'std': round(float(np.std(values)), 4),
        'min': min(values),
        'max': max(values)
    } for variant, values in by_variant.items()]


def main(argv: Optional[List[str]] = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out',
                        help='folder for the data and the source '
                        'model (default: a temporary one)')
    parser.add_argument('--part',
                        choices=('all', 'transfer', 'scales'),
                        default='all',
                        help='transfer: the source and the small set from '
                        'scratch and transferred; scales: multi-scale '
                        'against single-scale')
    parser.add_argument('--seeds',
                        type=int,
                        default=3,
                        help='seeds per small-set variant')
    parser.add_argument('--source-per-class',
                        type=int,
                        default=0,
                        help='training images of each source class '
                        '(default 0: all, 6000)')
    parser.add_argument('--source-epochs', type=int, default=10)
    parser.add_argument('--small-per-class', type=int, default=75)
    parser.add_argument('--small-size', type=int, default=32)
    parser.add_argument('--small-epochs', type=int, default=40)
    parser.add_argument('--fashion-per-class', type=int, default=300)
    parser.add_argument('--fashion-epochs', type=int, default=5)
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix='bench-transfer-')
    began = time.monotonic()
    rows = []

    def record(data: str, variant: str, result: Dict[str, Any]) -> None:
        rows.append({'data': data, 'variant': variant, **result})
        print(
            f'{data:28s} {variant:40s} {result["test_accuracy"]:.3f} '
            f'({result["steps"]} steps, {result["weights"]} weights, '
            f'{result["seconds"]} s)',
            file=sys.stderr,
            flush=True)

    variants: Dict[str, Dict[str, Any]] = {'from scratch': {}}
    if args.part in ('all', 'transfer'):
        source_dir = source_model(out, args.source_per_class,
                                  args.source_epochs, record)
        variants.update({
            'transfer': {
                'transfer_from': source_dir
            },
            # Without the lower fine-tuning rate (the default's tenth).
            'transfer, fine-tuned at the full rate': {
                'transfer_from': source_dir,
                'transfer_learning_rate_factor': 1.0
            }
        })
    if args.part in ('all', 'scales'):
        variants.update({
            f'{k}, from scratch': v for k, v in SCALE_VARIANTS.items() if v
        })

    small = os.path.join(out, 'small')
    small_data.write_image_folders(small,
                                   args.small_per_class,
                                   args.small_size,
                                   classes=SMALL_CLASSES,
                                   colour=False,
                                   test_per_class=100)
    (train_x, train_y), (test_x, test_y) = (class_folders(small, 'train'),
                                            class_folders(small, 'test'))
    train_x, test_x = z_scored(train_x, test_x)
    name = (f'small: {len(train_y)} train {args.small_size}x'
            f'{args.small_size}')
    for variant, settings in variants.items():
        for seed in range(args.seeds):
            result = fit(settings, (train_x, train_y), (test_x, test_y),
                         args.small_epochs, seed)
            record(name, variant, {**result, 'seed': seed})
    seeds = summary(rows)
    for row in seeds:
        print(
            f'{name:28s} {row["variant"]:40s} {row["mean"]:.3f} '
            f'± {row["std"]:.3f} ({row["seeds"]} seeds, '
            f'{row["min"]:.3f}-{row["max"]:.3f})',
            file=sys.stderr)

    if args.part in ('all', 'scales'):
        train = fashion_mnist('train', range(10), args.fashion_per_class, 1)
        test = fashion_mnist('test', range(10), 100, 1)
        train_x, test_x = z_scored(train[0], test[0])
        for variant, settings in SCALE_VARIANTS.items():
            record(
                f'F-MNIST {len(train[1])} train 28x28', variant,
                fit(settings, (train_x, train[1]), (test_x, test[1]),
                    args.fashion_epochs, 0))
    print(json.dumps({
        'results': rows,
        'small_set_over_seeds': seeds,
        'out': out,
        'load_average': common.load_average(),
        'wall_seconds': round(time.monotonic() - began)
    }),
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
