"""Small data sets, and a plain Keras script to compare the pipeline with.

They check the defaults that adapt to the data's size.

    python -m bench.small_data images DIR [--per-class 150] [--size 32]
    python -m bench.small_data sequences NAME DIR [--train 100]
    python -m bench.small_data by-hand DIR [--epochs 40]
    python -m bench.small_data kept HOME [--model convnet]

`images` writes a class-folder set (`DIR/train/<class>/*.png`,
`DIR/test/<class>/*.png`) of Fashion-MNIST images resized to SIZE x SIZE RGB:
another size and colour than the 28x28 gray the convnet's profiles assume.
`sequences` writes the first TRAIN training series of a UCR/UEA set from the
sktime wheel with its whole test split. `by-hand` is the plain Keras script
for an image set: `image_dataset_from_directory` at the profile's
`image_shape`, the same convnet (`models.convnet.model.build_model`), Adam,
a fixed number of epochs, no early stopping and no schedule; it prints one
JSON line with the test accuracy and each epoch's eval accuracy. `kept`
reads a pipeline run's Trainer output in HOME: the exported model (batch-norm
statistics recalibrated) is scored on the run's eval and test splits through
its `serving_default` signature, beside its training report's best epoch.
"""

import argparse
import glob
import json
import os
import sys
from typing import List, Optional, Sequence

from common import environment
from common import names

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from formats import image_formats  # noqa: E402
from formats import ts_format  # noqa: E402
from pipeline import configs  # noqa: E402
from pipeline import profiles  # noqa: E402

FASHION_NAMES = ('T-shirt_top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle_boot')


def write_image_folders(root: str,
                        per_class: int,
                        size: int,
                        seed: int = 0,
                        classes: Sequence[int] = range(10),
                        colour: bool = True,
                        test_per_class: Optional[int] = None) -> None:
    """Writes training and test images of each of `classes`, RGB or gray.

    `per_class` training and `test_per_class` (default `per_class // 3`)
    test images of each of `classes` (Fashion-MNIST label indices).
    """
    rng = np.random.default_rng(seed)
    for split, prefix, count in (('train', 'train', per_class),
                                 ('test', 't10k', test_per_class or
                                  max(per_class // 3, 1))):
        images_path = os.path.join(names.FASHION_MNIST_DIR,
                                   f'{prefix}-images-idx3-ubyte.gz')
        images, labels = image_formats.read_idx_dataset(
            images_path, image_formats.labels_path_for(images_path), 10)
        for label in classes:
            folder = os.path.join(root, split, FASHION_NAMES[label])
            os.makedirs(folder, exist_ok=True)
            chosen = rng.choice(np.flatnonzero(labels == label),
                                count,
                                replace=False)
            for index in chosen:
                Image.fromarray(
                    images[index]).convert('RGB' if colour else 'L').resize(
                        (size, size), Image.BILINEAR).save(
                            os.path.join(folder, f'{index}.png'))


def write_sequence_cut(name: str, root: str, train: int) -> None:
    """The first `train` training series of a sktime UCR/UEA set."""
    source = profiles.MODELS['rnn'].default_data.replace('JapaneseVowels', name)
    os.makedirs(root, exist_ok=True)
    for split, limit in (('TRAIN', train), ('TEST', 0)):
        path = os.path.join(source, f'{name}_{split}.ts')
        series = list(ts_format.read_ts(path))
        labels = sorted({s.label for s in series})
        ts_format.write_ts(os.path.join(root, f'{name}_{split}.ts'),
                           series[:limit] if limit else series, name, labels)


def by_hand(root: str, epochs: int, seed: int = 42) -> dict:
    """Plain Keras on a class-folder image set (see the module docstring)."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from models import training
    from models.convnet import model as convnet
    params = configs.RunConfig(model='convnet', profile='full').hyperparameters
    height, width, channels = params['image_shape']
    tf.keras.utils.set_random_seed(seed)

    def load(split, subset=None):
        return tf.keras.utils.image_dataset_from_directory(
            os.path.join(root, split),
            image_size=(height, width),
            color_mode='grayscale' if channels == 1 else 'rgb',
            batch_size=params['batch_size'],
            seed=seed,
            subset=subset,
            validation_split=(configs.EVAL_PERCENT / 100 if subset else None))

    train, held, test = load('train',
                             'training'), load('train',
                                               'validation'), load('test')
    scale = tf.keras.layers.Rescaling(1 / 255)
    normalize = tf.keras.layers.Normalization()
    normalize.adapt(train.map(lambda x, _: scale(x)))
    model = convnet.build_model(params, len(FASHION_NAMES))
    inputs = tf.keras.Input((height, width, channels))
    wrapped = tf.keras.Model(inputs, model(normalize(scale(inputs))))
    training.compile_model(wrapped, params)
    history = wrapped.fit(train, validation_data=held, epochs=epochs, verbose=0)
    _, accuracy = wrapped.evaluate(test, verbose=0)
    return {
        'test_accuracy':
            round(float(accuracy), 4),
        'eval_accuracy_by_epoch': [
            round(a, 4) for a in history.history['val_accuracy']
        ]
    }


def _newest(pattern: str) -> str:
    """The artifact folder of the newest execution among `pattern`'s."""
    found = [p for p in glob.glob(pattern) if os.path.basename(p).isdigit()]
    if not found:
        raise FileNotFoundError(f'nothing at {pattern}')
    return max(found, key=lambda p: int(os.path.basename(p)))


def kept_model_accuracy(home: str, model: str) -> dict:
    """The exported model's accuracy on the eval and test splits.

    Of the newest run, beside the eval accuracy of the epoch whose weights
    it kept.

    The end of training is the exported model: the kept epoch's weights
    with batch-norm statistics recomputed (models/weights.py), which can
    score otherwise than that epoch did.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from common import signatures
    root = os.path.join(home, 'pipelines',
                        configs.RunConfig(model=model).pipeline_name)
    serve = tf.saved_model.load(
        os.path.join(_newest(os.path.join(root, 'Trainer', 'model', '*')),
                     'Format-Serving')).signatures[signatures.DEFAULT_SIGNATURE]
    with open(os.path.join(
            _newest(os.path.join(root, 'Trainer', 'model_run', '*')),
            names.TRAINING_REPORT),
              encoding='utf-8') as f:
        report = json.load(f)
    examples = _newest(
        os.path.join(root, 'FileBasedExampleGen', 'examples', '*'))
    result = {
        'epochs_run': len(report['val_accuracy']),
        'kept_epoch': report['kept_epoch'],
        'kept_epoch_eval_accuracy': round(report['best_val_accuracy'], 4),
        'best_eval_accuracy': max(report['val_accuracy'])
    }
    for split in ('eval', 'test'):
        records = list(
            tf.data.TFRecordDataset(
                glob.glob(os.path.join(examples, f'Split-{split}', '*')),
                'GZIP').batch(256))
        right = total = 0
        for batch in records:
            labels = [
                tf.train.Example.FromString(r).features.feature[
                    names.LABEL_KEY].int64_list.value[0] for r in batch.numpy()
            ]
            scores = serve(**{signatures.EXAMPLES_INPUT: batch})[
                signatures.SCORES_OUTPUT].numpy()
            right += int(np.sum(scores.argmax(axis=1) == labels))
            total += len(labels)
        result[f'exported_{split}_accuracy'] = round(right / total, 4)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    images = commands.add_parser('images')
    images.add_argument('root')
    images.add_argument('--per-class', type=int, default=150)
    images.add_argument('--size', type=int, default=32)
    sequences = commands.add_parser('sequences')
    sequences.add_argument('name')
    sequences.add_argument('root')
    sequences.add_argument('--train', type=int, default=100)
    hand = commands.add_parser('by-hand')
    hand.add_argument('root')
    hand.add_argument('--epochs', type=int, default=40)
    kept = commands.add_parser('kept')
    kept.add_argument('home')
    kept.add_argument('--model', default='convnet', choices=profiles.MODELS)
    args = parser.parse_args(argv)
    if args.command == 'images':
        write_image_folders(args.root, args.per_class, args.size)
    elif args.command == 'sequences':
        write_sequence_cut(args.name, args.root, args.train)
    elif args.command == 'kept':
        print(json.dumps(kept_model_accuracy(args.home, args.model)),
              flush=True)
    else:
        print(json.dumps(by_hand(args.root, args.epochs)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
