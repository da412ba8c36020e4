"""Sequence normalization and families on one UCR/UEA set, epoch by epoch.

    python -m bench.sequence_study DIR [--epochs 40] [--every 5]
        [--variant fcn/per_set --variant fcn/per_series ...]
        [--variant 'fcn/per_set+kernel_sizes=[40,20,10]' ...]

Trains each variant (`family/normalization`: a sequence family's `full`
profile, the sequences z-scored per channel over the training split,
`per_set`, or per series over its own steps, `per_series`, by the formulas
of models/rnn/preprocessing.py; then any `+KEY=VALUE` settings of that
variant alone, JSON values or else text, so that one change can be tried
against the same variant without it) on DIR's TRAIN file and scores it on
its TEST file, the variants in turn one epoch each, so that when it is stopped
every variant has trained as many epochs as the others. Without the
pipeline (no eval split carved from train: all training series train), in
one process, for a machine too loaded for whole runs. Adam at the
profile's rate, constant, or along a half cosine over the `--epochs` with
`+learning_rate_decay="cosine"` (models/schedule.py's own schedule; the
pipeline's plateau halving is not reproduced here). `+pool="max"`, a
change of this study's only (not a setting): the global pooling over time
(the layer `pool`, which averages a series' real steps) takes each
channel's largest value over them instead. The batch as the
Trainer fits it (min(batch_size, N/10)), batch-norm momentum from the
steps an epoch. Prints one JSON line per variant every `--every` epochs:
the training loss and accuracy of the epoch and the test accuracy, with
the CPU-seconds it has used.
"""

import argparse
import glob
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from common import environment

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from formats import ts_format  # noqa: E402
from models import families  # noqa: E402
from models import schedule  # noqa: E402
from pipeline import configs  # noqa: E402
from pipeline import setting_checks  # noqa: E402

# The least standard deviation models/rnn/preprocessing.py divides by.
_MIN_STD = 1e-6
# What is left of the batch-norm moving averages an epoch later (the
# Trainer's rule, models/schedule.py), and the most momentum.
_LEFT_AFTER_EPOCH = 0.05
_MAX_MOMENTUM = 0.99


def _read(path: str) -> Tuple[List[np.ndarray], List[str]]:
    """A .ts file's series, as [steps, channels] arrays, and their labels."""
    series = list(ts_format.read_ts(path))
    return [s.values.astype(np.float32) for s in series
           ], [s.label for s in series]


def _per_set(train: List[np.ndarray],
             other: List[np.ndarray]) -> Tuple[List[np.ndarray], ...]:
    """Both lists z-scored per channel by the training series' steps."""
    steps = np.concatenate(train)
    mean = np.nanmean(steps, axis=0)
    std = np.sqrt(np.nanvar(steps, axis=0) + 1e-6)
    return tuple([np.nan_to_num((s - mean) / std)
                  for s in part]
                 for part in (train, other))


def _per_series(train: List[np.ndarray],
                other: List[np.ndarray]) -> Tuple[List[np.ndarray], ...]:
    """Each series z-scored per channel by its own steps."""

    def one(s):
        std = np.nanstd(s, axis=0)
        std = np.where(std < _MIN_STD, 1.0, std)
        return np.nan_to_num((s - np.nanmean(s, axis=0)) / std)

    return tuple([one(s) for s in part] for part in (train, other))


_NORMALIZATIONS = {'per_set': _per_set, 'per_series': _per_series}


def _padded(series: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """The model's inputs: the series zero-padded, and their lengths."""
    longest = max(len(s) for s in series)
    values = np.zeros((len(series), longest, series[0].shape[1]), np.float32)
    for i, s in enumerate(series):
        values[i, :len(s)] = s
    return {
        'sequence': values,
        'length': np.array([len(s) for s in series], np.int64)
    }


# Variant changes that are not settings: `pool` ('average' or 'max').
_POOL = 'pool'


class _MaskedMaxPool(tf.keras.layers.Layer):
    """Each channel's largest value over a series' real steps."""

    def call(self, x, mask=None):
        lowest = tf.fill(tf.shape(x), x.dtype.min)
        return tf.reduce_max(tf.where(mask[..., tf.newaxis], x, lowest), axis=1)


def _max_pooled(model: tf.keras.Model) -> tf.keras.Model:
    """The model, its weights too, with the `pool` layer a masked max."""

    def clone(layer):
        if layer.name == _POOL:
            return _MaskedMaxPool(name=_POOL)
        return layer.__class__.from_config(layer.get_config())

    pooled = tf.keras.models.clone_model(model, clone_function=clone)
    pooled.set_weights(model.get_weights())
    return pooled


class _Variant:
    """One family and normalization, trained an epoch at a time."""

    def __init__(self, name: str, data: Dict[str, tuple], classes: int,
                 overrides: Sequence[Tuple[str, object]], epochs: int):
        base, *changes = name.split('+')
        family, normalization = base.split('/')
        self.name = name
        train, test = _NORMALIZATIONS[normalization](data['train'][0],
                                                     data['test'][0])
        self.train = _padded(train)
        self.train_labels = data['train'][1]
        self.test = _padded(test)
        self.test_labels = data['test'][1]
        own = dict(setting_checks.parse_setting(text) for text in changes)
        pool = own.pop(_POOL, 'average')
        if pool not in ('average', 'max'):
            raise ValueError(f'{name}: pool {pool!r}, not average or max')
        params = configs.RunConfig(model=family,
                                   profile='full',
                                   overrides=tuple(overrides) +
                                   tuple(own.items())).hyperparameters
        params['num_channels'] = int(train[0].shape[1])
        self.batch = schedule.fitted_batch_size(params, len(train))
        steps = -(-len(train) // self.batch)
        params['batch_norm_momentum'] = min(_MAX_MOMENTUM,
                                            _LEFT_AFTER_EPOCH**(1 / steps))
        tf.keras.utils.set_random_seed(int(params['seed']))
        self.model = families.recipe(family).build_model(params, classes)
        if pool == 'max':
            self.model = _max_pooled(self.model)
        params['epochs'] = epochs
        rate = schedule.decayed_learning_rate(params,
                                              float(params['learning_rate']),
                                              steps)
        self.model.compile(tf.keras.optimizers.Adam(rate),
                           loss='sparse_categorical_crossentropy',
                           metrics=['accuracy'])
        self.epochs = 0
        self.cpu = 0.0

    def epoch(self) -> Dict[str, float]:
        """Trains one epoch; its training loss and accuracy."""
        start = time.process_time()
        history = self.model.fit(self.train,
                                 self.train_labels,
                                 batch_size=self.batch,
                                 epochs=1,
                                 shuffle=True,
                                 verbose=0)
        self.cpu += time.process_time() - start
        self.epochs += 1
        return {k: float(v[-1]) for k, v in history.history.items()}

    def test_accuracy(self) -> float:
        """The accuracy on the TEST file's series."""
        start = time.process_time()
        scores = self.model.predict(self.test, batch_size=50, verbose=0)
        self.cpu += time.process_time() - start
        return float(np.mean(np.argmax(scores, axis=1) == self.test_labels))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Trains the variants in turn and prints their JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('data',
                        help='a UCR/UEA set: NAME_TRAIN.ts, NAME_TEST.ts')
    parser.add_argument('--epochs', type=int, default=40)
    parser.add_argument('--every', type=int, default=5)
    parser.add_argument('--variant', action='append')
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        help='KEY=VALUE for every variant (JSON values)')
    args = parser.parse_args(argv)
    [train_path] = glob.glob(os.path.join(args.data, '*_TRAIN.ts'))
    [test_path] = glob.glob(os.path.join(args.data, '*_TEST.ts'))
    train, train_labels = _read(train_path)
    test, test_labels = _read(test_path)
    names = sorted(set(train_labels))
    index = {name: i for i, name in enumerate(names)}
    data = {
        'train': (train, np.array([index[x] for x in train_labels])),
        'test': (test, np.array([index[x] for x in test_labels]))
    }
    overrides = [setting_checks.parse_setting(text) for text in args.set]
    variants = [
        _Variant(name, data, len(names), overrides, args.epochs)
        for name in (args.variant or ['fcn/per_set', 'fcn/per_series'])
    ]
    for epoch in range(1, args.epochs + 1):
        for variant in variants:
            metrics = variant.epoch()
            if epoch % args.every == 0 or epoch == args.epochs:
                print(json.dumps({
                    'variant': variant.name,
                    'epoch': epoch,
                    'batch': variant.batch,
                    'loss': round(metrics['loss'], 4),
                    'accuracy': round(metrics['accuracy'], 4),
                    'test_accuracy': round(variant.test_accuracy(), 4),
                    'cpu_s': round(variant.cpu, 1)
                }),
                      flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
