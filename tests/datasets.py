"""Small real data sets in every raw layout, written on the fly for tests."""

import gzip
import io
import os
import struct
from typing import Sequence

import numpy as np
from PIL import Image

from formats import labeled_sequences
from formats import ts_format


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array in IDX format (gzipped when `path` ends in .gz)."""
    header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim)
    header += struct.pack(f'>{array.ndim}i', *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(data)


def images_with_labels(count: int,
                       num_classes: int,
                       seed: int = 0,
                       size: int = 28):
    """Images whose class is visible: class k lights up row band k."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    images = rng.integers(0, 60, (count, size, size), dtype=np.uint8)
    band = size // num_classes
    for i, label in enumerate(labels):
        images[i, label * band:(label + 1) * band] += 150
    return images, labels


def write_idx_dataset(folder: str,
                      train: int = 60,
                      test: int = 20,
                      num_classes: int = 10) -> str:
    """A Fashion-MNIST-shaped IDX data set (gzipped) in `folder`."""
    os.makedirs(folder, exist_ok=True)
    for stem, count, seed in (('train', train, 0), ('t10k', test, 1)):
        images, labels = images_with_labels(count, num_classes, seed)
        write_idx(os.path.join(folder, f'{stem}-images-idx3-ubyte.gz'), images)
        write_idx(os.path.join(folder, f'{stem}-labels-idx1-ubyte.gz'), labels)
    return folder


def png_bytes(array: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def write_class_folders(root: str,
                        class_names: Sequence[str],
                        per_class: int = 4,
                        splits=('train', 'test')) -> str:
    """root/<split>/<class>/<n>.png|jpg, mixed sizes, gray and colour."""
    rng = np.random.default_rng(2)
    for split in splits:
        for k, name in enumerate(class_names):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for n in range(per_class):
                size = 20 + 4 * n
                if n % 2:
                    pixels = rng.integers(0, 256, (size, size, 3), np.uint8)
                    Image.fromarray(pixels).save(os.path.join(
                        folder, f'{n}.jpg'),
                                                 format='JPEG')
                else:
                    pixels = rng.integers(0, 256, (size, size), np.uint8)
                    pixels[:, :4 * (k + 1)] = 255
                    Image.fromarray(pixels).save(
                        os.path.join(folder, f'{n}.png'))
    return root


def sequences_with_labels(count: int,
                          class_labels: Sequence[str],
                          channels: int = 3,
                          seed: int = 0,
                          offset: float = 0.0):
    """Variable-length sequences whose class sets their mean (`offset` is
    added to every value)."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        k = i % len(class_labels)
        length = int(rng.integers(5, 12))
        values = rng.normal(size=(length, channels)) + 2.0 * k + offset
        result.append(
            labeled_sequences.LabeledSequence(f'series{i}',
                                              values.astype(np.float32),
                                              class_labels[k]))
    return result


def write_ts_dataset(folder: str,
                     name: str = 'Toy',
                     train: int = 30,
                     test: int = 12,
                     class_labels=('a', 'b', 'c'),
                     offset: float = 0.0) -> str:
    """A <name>_TRAIN.ts / <name>_TEST.ts pair; returns the folder.
    `offset` shifts every value: a drifted (or out-of-domain) span."""
    os.makedirs(folder, exist_ok=True)
    for split, count, seed in (('TRAIN', train, 0), ('TEST', test, 1)):
        ts_format.write_ts(
            os.path.join(folder, f'{name}_{split}.ts'),
            sequences_with_labels(count, class_labels, seed=seed,
                                  offset=offset), name, class_labels)
    return folder
