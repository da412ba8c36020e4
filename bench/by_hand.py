"""The same job as the pipeline, done by hand: numpy in, Keras fit, evaluate.

    python -m bench.by_hand --model convnet|rnn --profile smoke|full
                            [--data PATH] [--set key=value ...]

Reads the raw files with the project's own readers
(`image_formats.read_idx_dataset`, `ts_format.read_ts`), z-scores them
with numpy exactly as the Transform does (per channel, statistics of the
training split; missing sequence values become 0), holds out the same share
of the training split for validation, builds the SAME model
(`models.<model>.model.build_model`, compiled by
`models.training.compile_model`, under the same distribution strategy),
trains it with the batch size and epochs the Trainer's schedule fits to the
data (`models.schedule`; `--epochs` to train exactly as many as a Trainer
did), evaluates it on the test split and saves it. Keras's and TensorFlow's
defaults otherwise: the plain script a user would write. Prints one JSON
line: phase timings, accuracy and `wall_seconds` from interpreter start.
"""

import time

from common import names

_STARTED = time.monotonic()  # Before TensorFlow's import, as pipeline/cli.py.

# E402: every import below follows the start-time mark on purpose (the
# timings count from interpreter start), and TensorFlow's after the environment
# set-up.
# pylint: disable=wrong-import-position
import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Tuple  # noqa: E402

from common import environment  # noqa: E402
from common import settings  # noqa: E402

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore', category=FutureWarning)

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from components.example_gen import data_source  # noqa: E402
from formats import image_formats  # noqa: E402
from formats import ts_format  # noqa: E402
from pipeline import configs  # noqa: E402
from pipeline import profiles  # noqa: E402
from pipeline import setting_checks  # noqa: E402

Arrays = Dict[str, np.ndarray]
EPSILON = 1e-6  # As the preprocessing_fns add to the variance.


def load_idx_split(images_path: str,
                   num_classes: int,
                   limit: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """One IDX split as (uint8 images [N, H, W, C], int64 labels [N]).

    Args:
        images_path: The IDX images file; its labels file lies beside it.
        num_classes: Labels must lie in [0, num_classes).
        limit: Keep only the first `limit` examples (0: all), as the
            pipeline's `max_examples_per_split`.
    """
    images, labels = image_formats.read_idx_dataset(
        images_path, image_formats.labels_path_for(images_path), num_classes)
    if limit:
        images, labels = images[:limit], labels[:limit]
    if images.ndim == 3:
        images = images[..., np.newaxis]
    return images, labels


def zscore_images(train: np.ndarray, *others: np.ndarray) -> List[np.ndarray]:
    """Scales uint8 images to [0, 1], then z-scores each channel.

    The mean and variance come from `train` alone, over every pixel, as the
    convnet's preprocessing_fn computes them with tft.mean and tft.var.

    Returns:
        float32 arrays: train first, then each of `others`.
    """
    scaled = [
        np.asarray(a, np.float32) / np.float32(255.0) for a in (train, *others)
    ]
    pixels = scaled[0].reshape(-1, scaled[0].shape[-1])
    mean = pixels.mean(axis=0, dtype=np.float64).astype(np.float32)
    var = pixels.var(axis=0, dtype=np.float64).astype(np.float32)
    scale = np.float32(1.0) / np.sqrt(var + np.float32(EPSILON))
    return [(a - mean) * scale for a in scaled]


def holdout(count: int, percent: int,
            seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of a random `percent`% held out for validation, and the rest.

    The pipeline carves its eval split out of train by a hash; a seeded
    permutation gives the same sizes.

    Returns:
        (train indices, held-out indices), each sorted.
    """
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * percent / 100))
    return np.sort(order[held:]), np.sort(order[:held])


def load_ts_split(path: str,
                  class_names: Sequence[str],
                  limit: int = 0) -> Tuple[List[np.ndarray], np.ndarray]:
    """A .ts split as a list of float32 [length, channels] and label indices."""
    values, labels = [], []
    for index, sequence in enumerate(ts_format.read_ts(path)):
        if limit and index >= limit:
            break
        values.append(sequence.values)
        labels.append(list(class_names).index(sequence.label))
    return values, np.asarray(labels, np.int64)


def zscore_sequences(train: List[np.ndarray], *others:
                     List[np.ndarray]) -> List[List[np.ndarray]]:
    """Z-scores each channel over the present (non-NaN) training steps.

    As the RNN's preprocessing_fn: missing values become 0, the mean.
    """
    steps = np.concatenate(train, axis=0)
    mean = np.nanmean(steps, axis=0)
    std = np.sqrt(np.nanvar(steps, axis=0) + EPSILON)
    mean = np.nan_to_num(mean).astype(np.float32)
    std = np.nan_to_num(std, nan=1.0).astype(np.float32)
    return [[np.nan_to_num((s - mean) / std).astype(np.float32)
             for s in split]
            for split in (train, *others)]


def pad_sequences(
        sequences: List[np.ndarray],
        length: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """[length, channels] sequences -> zero-padded [N, T, C] and lengths [N]."""
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    length = length or int(lengths.max())
    channels = sequences[0].shape[1]
    padded = np.zeros((len(sequences), length, channels), np.float32)
    for row, sequence in enumerate(sequences):
        padded[row, :len(sequence)] = sequence
    return padded, lengths


def _split_paths(source: data_source.DataSource) -> Dict[str, str]:
    paths = {}
    for split, pattern in source.split_patterns.items():
        matches = sorted(glob.glob(os.path.join(source.root, pattern)))
        if len(matches) != 1:
            raise ValueError(f'expected one file for {split} at {pattern}, '
                             f'found {len(matches)}')
        paths[split] = matches[0]
    return paths


def load_data(
    config: configs.RunConfig
) -> Tuple[Dict[str, Tuple[Arrays, np.ndarray]], Dict[str, Any]]:
    """Reads, normalizes and splits the run's data with numpy.

    Returns:
        ({'train'|'eval'|'test': (model inputs, labels)}, extra model
        parameters such as `num_channels`), plus the phases' timings under
        the key `_seconds` of the second dict.
    """
    params = config.hyperparameters
    limit = int(params.get('max_examples_per_split') or 0)
    watch = common.Stopwatch()
    source = data_source.detect(config.data_path, config.family.kind)
    paths = _split_paths(source)
    seed = int(settings.value(params, 'seed'))
    extra: Dict[str, Any] = {}
    if source.kind == names.IMAGES:
        num_classes = len(source.class_names)
        with watch('load'):
            train_x, train_y = load_idx_split(paths['train'], num_classes,
                                              limit)
            test_x, test_y = load_idx_split(paths['test'], num_classes, limit)
        with watch('normalize'):
            keep, held = holdout(len(train_x), configs.EVAL_PERCENT, seed)
            train_n, eval_n, test_n = zscore_images(train_x[keep],
                                                    train_x[held], test_x)
        splits = {
            'train': ({
                names.IMAGE_KEY: train_n
            }, train_y[keep]),
            'eval': ({
                names.IMAGE_KEY: eval_n
            }, train_y[held]),
            'test': ({
                names.IMAGE_KEY: test_n
            }, test_y),
        }
    else:
        with watch('load'):
            train_s, train_y = load_ts_split(paths['train'], source.class_names,
                                             limit)
            test_s, test_y = load_ts_split(paths['test'], source.class_names,
                                           limit)
        with watch('normalize'):
            keep, held = holdout(len(train_s), configs.EVAL_PERCENT, seed)
            train_n, eval_n, test_n = zscore_sequences(
                [train_s[i] for i in keep], [train_s[i] for i in held], test_s)
            length = max(len(s) for s in train_n + eval_n + test_n)
            splits = {}
            for name, seqs, labels in (('train', train_n, train_y[keep]),
                                       ('eval', eval_n, train_y[held]),
                                       ('test', test_n, test_y)):
                padded, lengths = pad_sequences(seqs, length)
                splits[name] = ({
                    names.SEQUENCE_KEY: padded,
                    names.LENGTH_KEY: lengths
                }, labels)
        extra['num_channels'] = int(train_s[0].shape[1])
    extra['num_classes'] = len(source.class_names)
    extra['_seconds'] = watch.seconds
    return splits, extra


def train_and_evaluate(config: configs.RunConfig,
                       verbose: int = 0,
                       epochs: Optional[int] = None) -> Dict[str, Any]:
    """The by-hand job: load, normalize, build, fit, evaluate, save.

    Args:
        config: The run's model, profile, data and settings.
        verbose: Keras's `fit` verbosity.
        epochs: Train exactly this many epochs (e.g. as many as a Trainer
            did before early stopping); default the schedule's budget.

    Returns:
        `phase_seconds` (load, normalize, build, fit, evaluate, save), the
        split sizes, epochs, batch size and test accuracy.
    """
    from models import distribute  # pylint: disable=import-outside-toplevel
    from models import schedule  # pylint: disable=import-outside-toplevel
    from models import training  # pylint: disable=import-outside-toplevel
    module = __import__(f'models.{config.model}.model', fromlist=['model'])

    splits, extra = load_data(config)
    watch = common.Stopwatch()
    watch.seconds.update(extra.pop('_seconds'))
    num_classes = extra.pop('num_classes')
    params = {**config.hyperparameters, **extra}
    (train_x, train_y), evaluation = splits['train'], splits['eval']
    # The Trainer's own: a small data set trains with a smaller batch, for
    # at least `min_train_steps` steps (up to `max_train_steps` when its
    # eval split is tiny), with batch-norm momentum fitted to its steps an
    # epoch. `epochs` is the Trainer's budget: it may stop before (early
    # stopping).
    batch_size, _, fitted = schedule.fitted_to_data(params, len(train_y),
                                                    len(evaluation[1]))
    params.update(fitted)  # As the Trainer (batch-norm momentum too).
    epochs = int(epochs or params['epochs'])
    with watch('build'):
        strategy = distribute.make_strategy(settings.value(params, 'strategy'))
        with strategy.scope():
            model = module.build_model(params, num_classes)
            training.compile_model(model, params)
    with watch('fit'):
        model.fit(train_x,
                  train_y,
                  batch_size=batch_size,
                  epochs=epochs,
                  validation_data=evaluation,
                  shuffle=True,
                  verbose=verbose)
    with watch('evaluate'):
        _, accuracy = model.evaluate(*splits['test'],
                                     batch_size=batch_size,
                                     verbose=0)
    with watch('save'), tempfile.TemporaryDirectory() as folder:
        # As models/export.py saves (without Keras's layer traces).
        model.save(os.path.join(folder, 'model'),
                   save_format='tf',
                   save_traces=False)
    return {
        'model': config.model,
        'profile': config.profile,
        'epochs': epochs,
        'batch_size': batch_size,
        'examples': {
            name: int(len(labels)) for name, (_, labels) in splits.items()
        },
        'accuracy': round(float(accuracy), 4),
        'phase_seconds': watch.seconds,
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: runs the by-hand job and prints its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model',
                        required=True,
                        choices=sorted(profiles.MODELS))
    parser.add_argument('--profile', default='smoke', choices=profiles.PROFILES)
    parser.add_argument('--data')
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        type=setting_checks.parse_setting,
                        dest='overrides',
                        metavar='KEY=VALUE')
    parser.add_argument('--epochs',
                        type=int,
                        help='train exactly this many epochs (default: as '
                        'many as the Trainer\'s schedule allows)')
    parser.add_argument('--verbose', type=int, default=0)
    args = parser.parse_args(argv)
    config = configs.RunConfig(model=args.model,
                               profile=args.profile,
                               data=args.data,
                               overrides=tuple(args.overrides))
    result = train_and_evaluate(config,
                                verbose=args.verbose,
                                epochs=args.epochs)
    result['wall_seconds'] = round(time.monotonic() - _STARTED, 1)
    result['startup_seconds'] = round(
        result['wall_seconds'] - sum(result['phase_seconds'].values()), 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
