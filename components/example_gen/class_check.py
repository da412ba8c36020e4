"""Checks the labels of a data set against its classes, before any Beam work.

A data set a classifier can learn from has at least two classes, every
label names one of them, the training split holds at least two of them, and
the test and eval splits hold no class the training split lacks. Anything
else stops the run with an `InputDataError` naming the file, the record or
line, and the label; it never reaches a model.

These checks read labels only (IDX label files, class folder names, the
labels of `.ts` and CSV files), so they cost little next to ExampleGen, and
they run where the data layout is detected: before the pipeline starts.
"""

import glob
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from formats import image_formats
from formats import long_csv_format
from formats import ts_format
from formats.errors import InputDataError

MIN_CLASSES = 2

# (label, path, where in the file) of the first record carrying each label.
_FirstSeen = Dict[str, Tuple[str, str]]


def idx_class_names(train_labels_path: str) -> Tuple[str, ...]:
    """The class names of IDX data without a class names file: '0'..'K-1'.

    The classes are the label values of the training split, which must run
    from 0 without a gap: a stray label (say 200 among 0..9) would otherwise
    make a model of 201 classes.

    Raises:
        InputDataError: naming the labels file, the first offending label and
            its record, if the labels leave a gap or hold one class only.
    """
    labels = image_formats.read_idx(train_labels_path).astype(np.int64)
    present = np.unique(labels)
    if present.size and present[0] >= 0:
        # The first value above the first unused one is the stray label.
        gaps = np.flatnonzero(present != np.arange(present.size))
        if gaps.size:
            stray = int(present[gaps[0]])
            record = int(np.flatnonzero(labels == stray)[0])
            raise InputDataError(
                train_labels_path, f'label {stray} at record {record} leaves '
                f'labels {int(gaps[0])}..{stray - 1} unused: without '
                'class_names.txt the classes are the labels 0..K-1, each '
                'present in training; fix the label or add class_names.txt')
    elif present.size:
        record = int(np.flatnonzero(labels == present[0])[0])
        raise InputDataError(
            train_labels_path, f'label {int(present[0])} at record {record} '
            'is negative; labels are class indices 0..K-1')
    names = tuple(str(i) for i in range(present.size))
    _check_count(train_labels_path, names, 'in its labels')
    return names


def check(source) -> None:
    """Checks the labels of a detected data set (a data_source.DataSource).

    Raises:
        InputDataError: fewer than two classes, a label that is not one of
            the class names, a training split with one class only, or a test
            or eval label that no training record carries.
    """
    _check_count(source.root, source.class_names, 'in this data set')
    by_split = _FIRST_SEEN.get(source.format, lambda s: {})(source)
    if not by_split:
        return
    train = by_split.pop('train', None)
    if train is None:
        return
    train_path = next(iter(train.values()), (source.root, ''))[0]
    _check_count(train_path, sorted(train), 'in the training records')
    for seen in by_split.values():
        for label, (path, where) in sorted(seen.items()):
            if label not in train:
                raise InputDataError(
                    path, f'{where}has label {label!r}, which no training '
                    'record has: the model cannot learn it; add training '
                    'records of that class or drop these')


def _check_count(path: str, names: Sequence[str], where: str) -> None:
    if len(names) < MIN_CLASSES:
        found = ', '.join(map(repr, names)) or 'none'
        raise InputDataError(
            path, f'{len(names)} class{"" if len(names) == 1 else "es"} '
            f'({found}) {where}; a classifier needs at least {MIN_CLASSES}')


def _files(source, split: str) -> List[str]:
    pattern = source.split_patterns.get(split)
    return sorted(glob.glob(os.path.join(source.root, pattern))) if pattern \
        else []


def _idx_first_seen(source) -> Dict[str, _FirstSeen]:
    """Reads every IDX split, checking images against labels and classes."""
    result = {}
    for split in source.split_patterns:
        seen: _FirstSeen = {}
        for images_path in _files(source, split):
            labels_path = image_formats.labels_path_for(images_path)
            _, labels = image_formats.read_idx_dataset(images_path, labels_path,
                                                       len(source.class_names))
            values, first = np.unique(labels, return_index=True)
            for value, record in zip(values, first):
                seen.setdefault(source.class_names[value],
                                (labels_path, f'record {record} '))
        result[split] = seen
    return result


def _class_folders_first_seen(source) -> Dict[str, _FirstSeen]:
    """Empty image files fail here; damaged ones when ExampleGen decodes."""
    for split in source.split_patterns:
        for path in _files(source, split):
            if (path.lower().endswith(image_formats.IMAGE_EXTENSIONS) and
                    os.path.getsize(path) == 0):
                raise InputDataError(
                    path, 'is empty (0 bytes); replace or '
                    'remove it')
    # scan_class_folders already checked that test classes are train's.
    return {}


def _sequences_first_seen(source, read) -> Dict[str, _FirstSeen]:
    result = {}
    for split in source.split_patterns:
        seen: _FirstSeen = {}
        for path in _files(source, split):
            for sequence in read(path):
                seen.setdefault(sequence.label,
                                (path, f'series {sequence.series_id!r} '))
        result[split] = seen
    return result


def _ts_first_seen(source) -> Dict[str, _FirstSeen]:
    return _sequences_first_seen(source, ts_format.read_ts)


def _csv_first_seen(source) -> Dict[str, _FirstSeen]:
    if 'train' not in source.split_patterns:
        return {}
    return _sequences_first_seen(source, long_csv_format.read_long_csv)


_FIRST_SEEN = {
    'idx': _idx_first_seen,
    'class_folders': _class_folders_first_seen,
    'ts': _ts_first_seen,
    'csv': _csv_first_seen,
}
