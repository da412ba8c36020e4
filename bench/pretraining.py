"""Pretraining without labels against from scratch and supervised transfer.

    python -m bench.pretraining [--out DIR] [--seeds 3] [--steps 200]
        [--full-rate]

The small labelled target set is bench/transfer.py's: the 4 tops of
Fashion-MNIST (T-shirt, Pullover, Coat, Shirt) as 32x32 gray PNGs, 300
training (75 a class) and 400 test images, learnt for 200 steps (40
epochs) by the convnet's `smoke` widths with the Trainer's own pieces. Its
filter banks start:

1. from scratch;
2. from a masked denoising autoencoder (models/convnet/pretraining.py)
   pretrained on the training images of the 6 other classes (36,000),
   labels ignored;
3. the same, pretrained on the training images of the 4 tops themselves
   (23,700: all but the 300 of the small set), labels ignored;
4. from a supervised source (bench/transfer.py `source_model`) trained on
   the 6 other classes with their labels.

Each source gets the same steps (`--steps` of 64 28x28 images; the
supervised source's images are `--steps` batches of its classes, one
epoch); each transfer takes the filter banks with the defaults of
`transfer_from` (frozen a quarter of the epochs, then a tenth of the
rate) and, with `--full-rate`, also fine-tuned at the full rate. Seed by
seed, every variant runs once (`--seeds` seeds): a run stopped early has
whole seeds. Prints a line a run, a table and one JSON line.

Measured (docs/pretraining.md): 3 seeds, from scratch 0.707 ± 0.013,
pretrained on the other classes 0.705 ± 0.011, on the same classes 0.713
± 0.003, supervised transfer from a 200-step source 0.682 ± 0.002.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Set

from common import environment

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench import small_data  # noqa: E402
from bench import transfer  # noqa: E402
from common import names  # noqa: E402
from common import settings  # noqa: E402
from formats import image_formats  # noqa: E402
from pipeline import profiles  # noqa: E402

BATCH = 64


def unlabelled_images(classes: Sequence[int], exclude: Set[int]) -> np.ndarray:
    """The training images of `classes`, less the indices in `exclude`."""
    path = os.path.join(names.FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        path, image_formats.labels_path_for(path), 10)
    index = [
        i for i in np.flatnonzero(np.isin(labels, classes)) if i not in exclude
    ]
    return images[index][..., np.newaxis]


def pretrained_trunk(out: str, name: str, images: np.ndarray, steps: int,
                     record) -> str:
    """Pretrains the autoencoder on `images`; its model base path.

    Reused when a run with the same `--out` and steps saved it.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from models.convnet import pretraining
    base = os.path.join(out, f'pretrained-{name}')
    done = os.path.join(base, 'result.json')
    if os.path.exists(done):
        with open(done, encoding='utf-8') as f:
            saved = json.load(f)
        if saved['steps'] == steps:
            record(f'pretrain: {name}', 'autoencoder (reused)', saved)
            return base
    (train_x,) = transfer.z_scored(images)
    params = {
        **profiles.MODELS['pretrain'].profiles['smoke'], 'image_shape':
            list(train_x.shape[1:])
    }
    tf.keras.utils.set_random_seed(0)
    model = pretraining.build_autoencoder(params)
    pretraining.compile_autoencoder(
        model, float(settings.value(params, 'learning_rate')))
    data = pretraining.images_dataset(train_x, BATCH, 0)
    began = time.monotonic()
    epochs = 10
    losses = pretraining.pretrain(model, data, -(-steps // epochs), epochs)
    pretraining.recalibrate_on_clean_images(model, data, 100)
    result = {
        'loss_by_tenth': [round(v, 4) for v in losses],
        'steps': epochs * -(-steps // epochs),
        'images': len(train_x),
        'weights': model.count_params(),
        'seconds': round(time.monotonic() - began, 1)
    }
    pretraining.save_trunk(model, base)
    with open(done, 'w', encoding='utf-8') as f:
        json.dump(result, f)
    record(f'pretrain: {name}', 'autoencoder', result)
    return base


def main(argv: Optional[List[str]] = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='folder for the data and the sources')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--steps',
                        type=int,
                        default=200,
                        help='steps of 64 images for each source')
    parser.add_argument('--small-epochs', type=int, default=40)
    parser.add_argument('--full-rate',
                        action='store_true',
                        help='also fine-tune each transfer at the full rate')
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix='bench-pretraining-')
    began = time.monotonic()
    rows: List[Dict[str, Any]] = []

    def record(data: str, variant: str, result: Dict[str, Any]) -> None:
        rows.append({'data': data, 'variant': variant, **result})
        score = (f'{result["test_accuracy"]:.3f}' if 'test_accuracy' in result
                 else f'loss {result["loss_by_tenth"]}')
        print(
            f'{data:28s} {variant:44s} {score} '
            f'({result["steps"]} steps, {result["seconds"]} s)',
            file=sys.stderr,
            flush=True)

    small = os.path.join(out, 'small')
    if not os.path.isdir(small):
        small_data.write_image_folders(small,
                                       75,
                                       32,
                                       classes=transfer.SMALL_CLASSES,
                                       colour=False,
                                       test_per_class=100)
    in_small = {
        int(name.split('.')[0])
        for folder in os.listdir(os.path.join(small, 'train'))
        for name in os.listdir(os.path.join(small, 'train', folder))
    }
    sources = {
        'other classes': unlabelled_images(transfer.SOURCE_CLASSES, set()),
        'same classes': unlabelled_images(transfer.SMALL_CLASSES, in_small),
    }
    trunks = {
        name:
            pretrained_trunk(out, name.replace(' ', '-'), images, args.steps,
                             record) for name, images in sources.items()
    }
    supervised = transfer.source_model(
        out, args.steps * BATCH // len(transfer.SOURCE_CLASSES), 1, record)
    starts = {
        'pretrained, other classes (unlabelled)': trunks['other classes'],
        'pretrained, same classes (unlabelled)': trunks['same classes'],
        'supervised transfer, other classes': supervised,
    }
    variants: Dict[str, Dict[str, Any]] = {'from scratch': {}}
    variants.update({k: {'transfer_from': v} for k, v in starts.items()})
    if args.full_rate:
        variants.update({
            f'{k}, full rate': {
                'transfer_from': v,
                'transfer_learning_rate_factor': 1.0
            } for k, v in starts.items()
        })
    (train_x, train_y), (test_x,
                         test_y) = (transfer.class_folders(small, 'train'),
                                    transfer.class_folders(small, 'test'))
    train_x, test_x = transfer.z_scored(train_x, test_x)
    name = f'small: {len(train_y)} train 32x32'
    for seed in range(args.seeds):
        for variant, overrides in variants.items():
            result = transfer.fit(overrides, (train_x, train_y),
                                  (test_x, test_y), args.small_epochs, seed)
            record(name, variant, {**result, 'seed': seed})
    seeds = transfer.summary(rows)
    for row in seeds:
        print(
            f'{name:28s} {row["variant"]:44s} {row["mean"]:.3f} '
            f'± {row["std"]:.3f} ({row["seeds"]} seeds, '
            f'{row["min"]:.3f}-{row["max"]:.3f})',
            file=sys.stderr)
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
