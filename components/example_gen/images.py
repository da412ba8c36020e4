"""Beam readers for image data: IDX, class folders, TFRecords, unlabelled."""

import functools
import hashlib
from typing import Any, Dict, Iterator, List, Tuple

import apache_beam as beam
import numpy as np

from common import names
from components.example_gen import reading
from formats import image_formats
from formats.errors import InputDataError
from models import features

# IDX files hold a whole split in one file: it is read in this many chunks,
# so that PNG encoding spreads over the Beam workers.
_IDX_CHUNKS = 16


@functools.lru_cache(maxsize=2)
def _load_idx(images_path: str,
              num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    labels_path = image_formats.labels_path_for(images_path)
    return image_formats.read_idx_dataset(images_path, labels_path, num_classes)


def read_idx(pipeline: beam.Pipeline, settings: Dict[str, Any],
             patterns: List[str]):
    """Reads IDX image files (and their label files) matching `patterns`."""
    num_classes = len(settings['class_names'])
    limit = reading.first_n(settings)

    def read_chunk(item: Tuple[str, int]) -> Iterator[bytes]:
        path, chunk = item
        images, labels = _load_idx(path, num_classes)
        count = min(len(images), limit) if limit else len(images)
        bounds = np.linspace(0, count, _IDX_CHUNKS + 1).astype(int)
        for i in range(bounds[chunk], bounds[chunk + 1]):
            yield features.image_example(image_formats.encode_png(images[i]),
                                         int(labels[i]))

    items = [(path, chunk)
             for path in reading.glob_files(patterns)
             for chunk in range(_IDX_CHUNKS)]
    return reading.read_items(pipeline, items, read_chunk)


def _stable_order(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def _image_files(settings: Dict[str, Any], patterns: List[str]) -> List[str]:
    """The image files matching `patterns`, at most the settings' limit."""
    files = [
        f for f in reading.glob_files(patterns)
        if f.lower().endswith(image_formats.IMAGE_EXTENSIONS)
    ]
    limit = reading.first_n(settings)
    if limit:
        # A hash order, so that a limited read still spans every class.
        files = sorted(sorted(files, key=_stable_order)[:limit])
    return files


def read_class_folders(pipeline: beam.Pipeline, settings: Dict[str, Any],
                       patterns: List[str]):
    """Reads `<class name>/<image file>` paths matching `patterns`."""
    class_names = settings['class_names']
    files = _image_files(settings, patterns)

    def read_file(path: str) -> Iterator[bytes]:
        class_name = path.replace('\\', '/').split('/')[-2]
        label = reading.label_index(class_names, class_name, path)
        yield features.image_example(image_formats.decode_image_file(path),
                                     label)

    return reading.read_items(pipeline, files, read_file)


def read_unlabelled_folder(pipeline: beam.Pipeline, settings: Dict[str, Any],
                           patterns: List[str]):
    """Reads the image files matching `patterns` as examples without label."""
    files = _image_files(settings, patterns)

    def read_file(path: str) -> Iterator[bytes]:
        yield features.image_example(image_formats.decode_image_file(path))

    return reading.read_items(pipeline, files, read_file)


def read_tfrecords(pipeline: beam.Pipeline, settings: Dict[str, Any],
                   patterns: List[str]):
    """Reads TFRecord files of tf.Example, checking their image and label."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    num_classes = len(settings['class_names'])
    limit = reading.first_n(settings)

    def read_file(path: str) -> Iterator[bytes]:
        for index, record in enumerate(
                tf.data.TFRecordDataset(
                    path,
                    compression_type=_compression(path)).as_numpy_iterator()):
            if limit and index >= limit:
                return
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            image = feature[names.IMAGE_KEY].bytes_list.value
            label = feature[names.LABEL_KEY].int64_list.value
            if len(image) != 1 or len(label) != 1:
                raise InputDataError(
                    path, f'record {index} needs one '
                    f'{names.IMAGE_KEY!r} bytes value and '
                    f'one {names.LABEL_KEY!r} int64 value')
            if not 0 <= label[0] < num_classes:
                raise InputDataError(
                    path, f'record {index} has label '
                    f'{label[0]}, outside [0, {num_classes})')
            yield features.image_example(image[0], int(label[0]))

    return reading.read_items(pipeline, reading.glob_files(patterns), read_file)


def _compression(path: str) -> str:
    with open(path, 'rb') as f:
        return 'GZIP' if f.read(2) == b'\x1f\x8b' else ''
