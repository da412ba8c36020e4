"""Finds what a data path holds: its format, splits, spans and class names.

This runs in the ExampleGen executor, where the data is, and is the one place
that knows the on-disk layouts this project reads:

Images
  - IDX files (MNIST / Fashion-MNIST): `train-images-idx3-ubyte[.gz]` and
    `t10k-images-idx3-ubyte[.gz]`, with their `*-labels-idx1-*` beside them.
  - Class folders: `<root>/[train|test|eval/]<class name>/<image files>`.
  - TFRecords of tf.Example (`*.tfrecord*`, optionally under `train/`, `test/`)
    with an `image` bytes and a `label` int64 feature.
Clips
  - Class folders of clips: `<root>/[train|test|eval/]<class name>/<clip>`,
    a clip a folder of frame images or a `.npy`/`.npz` array
    (formats/clip_formats.py).
Unlabelled images (pretraining)
  - A folder of image files, `<root>/<image files>`: no labels; or any of
    the image layouts above, its labels not checked (the model reads none).
Sequences
  - UCR/UEA `.ts` files: a `<NAME>_TRAIN.ts` / `<NAME>_TEST.ts` pair (a folder,
    a prefix, or one of the two files).
  - A long-format CSV (one row per time step), or a folder of `train*.csv` /
    `test*.csv` files.

Any of these may sit inside span folders, `<root>/span-<N>/...`: the patterns
then carry TFX's `{SPAN}` placeholder, so ExampleGen reads the newest span (or
a rolling window of them) and records the span in ML Metadata.
"""

import dataclasses
import glob
import os
from typing import Dict, Iterable, List, Optional, Tuple

from common import names
from components.example_gen import class_check
from components.example_gen import spans
from formats import clip_formats
from formats import image_formats
from formats import long_csv_format
from formats import ts_format
from formats.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A data set as ExampleGen reads it.

    Attributes:
        kind: `images`, `unlabelled_images` or `sequences`.
        format: `idx`, `class_folders`, `tfrecord`, `unlabelled_folder`,
            `ts` or `csv`.
        root: The ExampleGen `input_base`.
        split_patterns: Split name -> file pattern relative to `root`; may
            hold `{SPAN}`. Splits missing here (eval, test) are carved from
            train by a stable hash.
        class_names: Names of the classes; a label is an index into them
            (none for an unlabelled folder).
        num_channels: Channels per time step (sequences only).
        clip_shape: [frames, height, width, channels] of every clip (clips
            only).
    """

    kind: str
    format: str
    root: str
    split_patterns: Dict[str, str]
    class_names: Tuple[str, ...]
    num_channels: Optional[int] = None
    clip_shape: Optional[Tuple[int, ...]] = None

    @property
    def has_spans(self) -> bool:
        """Whether the data is laid out in `span-{SPAN}` folders."""
        return any('{SPAN}' in p for p in self.split_patterns.values())


def detect(path: str, kind: str) -> DataSource:
    """Inspects `path` and returns the DataSource ExampleGen should read.

    Args:
        path: A data folder, a file, or (for `.ts`) a TRAIN/TEST prefix.
        kind: `images`, `unlabelled_images` or `sequences`.

    Raises:
        InputDataError: if nothing readable of that kind is found there.
    """
    path = os.path.abspath(os.path.expanduser(path))
    numbers = span_numbers(path)
    if numbers:
        newest = os.path.join(path,
                              spans.fill(names.SPAN_DIR_PATTERN, numbers[-1]))
        inner = detect(newest, kind)
        return dataclasses.replace(
            inner,
            root=path,
            split_patterns={
                s: os.path.join(names.SPAN_DIR_PATTERN, p)
                for s, p in inner.split_patterns.items()
            })
    if kind == names.IMAGES:
        source = _detect_images(path)
    elif kind == names.SEQUENCES:
        source = _detect_sequences(path)
    elif kind == names.CLIPS:
        source = _detect_clips(path)
    elif kind == names.UNLABELLED_IMAGES:
        # Labels, where the data has them, are not read: not checked.
        return _detect_unlabelled_images(path)
    else:
        raise ValueError(f'unknown data kind {kind!r}')
    class_check.check(source)
    return source


def newest_span(path: str) -> int:
    """The highest N of the `span-N` folders in `path` (0 if none)."""
    numbers = span_numbers(path)
    return numbers[-1] if numbers else 0


def span_numbers(path: str) -> List[int]:
    """The N of the `span-N` folders in `path`, ascending."""
    return [
        number for number, found in spans.find_spans(
            path, names.SPAN_DIR_PATTERN).items() if any(
                os.path.isdir(p) for p in found)
    ]


def _detect_images(path: str) -> DataSource:
    if not os.path.isdir(path):
        raise InputDataError(path, 'not a folder of images, IDX or TFRecord '
                             'files')
    idx = _idx_patterns(path)
    if idx:
        return DataSource(names.IMAGES, 'idx', path, idx,
                          _idx_class_names(path))
    records = _tfrecord_patterns(path)
    if records:
        return DataSource(names.IMAGES, 'tfrecord', path, records,
                          _class_names_file(path, required=True))
    dataset = image_formats.scan_class_folders(path)
    return DataSource(names.IMAGES, 'class_folders', path,
                      _class_folder_patterns(path, dataset.files),
                      dataset.class_names)


def _detect_clips(path: str) -> DataSource:
    dataset = clip_formats.scan_clip_folders(path)
    return DataSource(names.CLIPS,
                      'clip_folders',
                      path,
                      _class_folder_patterns(path, dataset.files),
                      dataset.class_names,
                      clip_shape=dataset.shape)


def _detect_unlabelled_images(path: str) -> DataSource:
    """A folder of image files, or a labelled image set read as images."""
    if (not os.path.isdir(path) or image_formats.holds_images(path) or
            not (_idx_patterns(path) or _tfrecord_patterns(path) or any(
                os.path.isdir(os.path.join(path, name))
                for name in os.listdir(path)))):
        # Raises if there is no image file.
        image_formats.scan_unlabelled_folder(path)
        return DataSource(names.UNLABELLED_IMAGES, 'unlabelled_folder', path,
                          {names.TRAIN: '*'}, ())
    return dataclasses.replace(_detect_images(path),
                               kind=names.UNLABELLED_IMAGES)


def _split_dirs(path: str) -> Dict[str, str]:
    """Split name -> sub-folder name, for the split folders present."""
    return {
        image_formats.SPLIT_FOLDERS[d]: d
        for d in os.listdir(path)
        if d in image_formats.SPLIT_FOLDERS and
        os.path.isdir(os.path.join(path, d))
    }


def _class_folder_patterns(path: str, splits: Iterable[str]) -> Dict[str, str]:
    """Split name -> file pattern of its class folders' files.

    A split's files are in its split folder (`validation/` holds split
    'eval'), or, without split folders, in the class folders at the top.
    """
    split_dirs = _split_dirs(path)
    return {
        split: f'{split_dirs[split]}/*/*' if split in split_dirs else '*/*'
        for split in splits
    }


def _idx_patterns(path: str) -> Dict[str, str]:
    patterns = {}
    for split, stem in ((names.TRAIN, 'train'), (names.TEST, 't10k')):
        if glob.glob(os.path.join(path, f'{stem}-images-idx*-ubyte*')):
            patterns[split] = f'{stem}-images-idx*-ubyte*'
    return patterns


def _idx_class_names(path: str) -> Tuple[str, ...]:
    class_names = _class_names_file(path, required=False)
    if class_names:
        return class_names
    if os.path.realpath(path) == names.FASHION_MNIST_DIR:
        return image_formats.FASHION_MNIST_CLASS_NAMES
    return class_check.idx_class_names(
        image_formats.labels_path_for(
            glob.glob(os.path.join(path, 'train-images-idx*-ubyte*'))[0]))


def _tfrecord_patterns(path: str) -> Dict[str, str]:
    split_dirs = _split_dirs(path)
    patterns = {
        split: f'{d}/*.tfrecord*'
        for split, d in split_dirs.items()
        if glob.glob(os.path.join(path, d, '*.tfrecord*'))
    }
    if not patterns and glob.glob(os.path.join(path, '*.tfrecord*')):
        patterns = {names.TRAIN: '*.tfrecord*'}
    return patterns


def _class_names_file(path: str, required: bool) -> Tuple[str, ...]:
    names_path = os.path.join(path, names.CLASS_NAMES_FILE)
    if not os.path.exists(names_path):
        if required:
            raise InputDataError(
                path,
                f'TFRecord data needs a {names.CLASS_NAMES_FILE} beside it, '
                'one class name per line, in label order')
        return ()
    with open(names_path, encoding='utf-8') as f:
        class_names = tuple(line.strip() for line in f if line.strip())
    if not class_names:
        raise InputDataError(names_path, 'holds no class names')
    return class_names


def _detect_sequences(path: str) -> DataSource:
    if path.endswith('.csv') and os.path.isfile(path):
        root, name = os.path.split(path)
        return DataSource(
            names.SEQUENCES, 'csv', root, {names.TRAIN: name},
            long_csv_format.class_labels_of_csv(path),
            _num_channels(long_csv_format.read_long_csv(path), path))
    if os.path.isdir(path) and not glob.glob(os.path.join(path, '*.ts')):
        csv_files = {
            split: sorted(glob.glob(os.path.join(path, f'{split}*.csv')))
            for split in (names.TRAIN, names.TEST, names.EVAL)
        }
        csv_files = {
            split: files for split, files in csv_files.items() if files
        }
        if csv_files:
            labels = set()
            for files in csv_files.values():
                for csv_path in files:
                    labels.update(long_csv_format.class_labels_of_csv(csv_path))
            first = next(iter(csv_files.values()))[0]
            return DataSource(
                names.SEQUENCES, 'csv', path,
                {split: f'{split}*.csv' for split in csv_files},
                tuple(sorted(labels)),
                _num_channels(long_csv_format.read_long_csv(first), first))
    train_path, test_path = ts_format.find_ts_pair(path)
    header = ts_format.read_ts_header(train_path)
    test_header = ts_format.read_ts_header(test_path)
    if set(test_header.class_labels) - set(header.class_labels):
        raise InputDataError(
            test_path, 'declares class labels that '
            f'{os.path.basename(train_path)} does not')
    return DataSource(
        names.SEQUENCES, 'ts', os.path.dirname(train_path), {
            names.TRAIN: os.path.basename(train_path),
            names.TEST: os.path.basename(test_path)
        }, header.class_labels,
        _num_channels(ts_format.read_ts(train_path), train_path))


def _num_channels(sequences, path: str) -> int:
    first = next(iter(sequences), None)
    if first is None:
        raise InputDataError(path, 'holds no sequences')
    return int(first.values.shape[1])


def check_first_records(source: DataSource) -> None:
    """Reads the first records of each split, before a run starts.

    Reads the first records of each split of `source`, without Beam or
    TensorFlow, so that unreadable data is reported before a run starts.

    IDX splits are read whole (images and labels, labels checked against the
    class names: a file of either is one split); class folders decode each
    split's first image; `.ts` and CSV files were read by `detect` already.
    TFRecords need TensorFlow to read and are left to ExampleGen.

    Raises:
        InputDataError: naming the file and the fault.
    """
    root = source.root
    numbers = span_numbers(root) if source.has_spans else []
    for pattern in source.split_patterns.values():
        if numbers:
            pattern = spans.fill(pattern, numbers[-1])
        files = sorted(glob.glob(os.path.join(root, pattern)))
        if not files:
            raise InputDataError(os.path.join(root, pattern),
                                 'matches no files')
        if source.format == 'idx':
            for images in files:
                image_formats.read_idx_dataset(
                    images, image_formats.labels_path_for(images),
                    len(source.class_names))
        elif source.format in ('class_folders', 'unlabelled_folder'):
            images = [
                f for f in files
                if f.lower().endswith(image_formats.IMAGE_EXTENSIONS)
            ]
            if images:
                image_formats.decode_image_file(images[0])
        elif source.format == 'clip_folders':
            clips = [f for f in files if clip_formats.is_clip(f)]
            if clips:
                clip_formats.read_clip(clips[0])
