"""Reads and writes UCR/UEA .ts files of labelled time series.

Semantics of sktime/aeon `load_from_tsfile`: `@tag value` header lines up to
`@data`, then one series per line: channels separated by ':', the values of a
channel by ',', the class label after the last ':', '?' for a missing value.

`read_ts` yields `LabeledSequence`s whose values are float32
[length, channels], NaN where a value is missing. It is a generator that
validates as it goes: every fault in the input raises `InputDataError` naming
the file, the 1-based line and what to fix.
"""

import dataclasses
import os
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from formats.errors import InputDataError
from formats.labeled_sequences import LabeledSequence
from formats.labeled_sequences import check_writable
from formats.labeled_sequences import clip
from formats.labeled_sequences import format_value
from formats.labeled_sequences import parse_value
from formats.labeled_sequences import text_lines

_TRAIN_SUFFIX = '_TRAIN.ts'
_TEST_SUFFIX = '_TEST.ts'
# '%' as well as '#': the archive's UnitTest files carry ARFF-style '%'
# comments.
_COMMENT_PREFIXES = ('#', '%')
_BOOL_TAGS = {
    '@timestamps': 'timestamps',
    '@missing': 'missing',
    '@univariate': 'univariate',
    '@equallength': 'equal_length',
}
_INT_TAGS = {'@serieslength': 'series_length', '@dimensions': 'num_dimensions'}
_TS_MISSING = frozenset({'?'})


@dataclasses.dataclass(frozen=True)
class TsHeader:
    """The header of a .ts file; absent tags take the sktime/aeon defaults."""
    problem_name: str  # The file's stem when @problemName is absent.
    univariate: bool  # Default True.
    equal_length: bool  # Default True: read_ts then checks all lengths match.
    series_length: Optional[int]
    num_dimensions: Optional[int]  # None: inferred from the first series.
    class_labels: Tuple[str, ...]  # In declared order.
    missing: bool  # As declared (default False); '?' reads as NaN regardless.
    timestamps: bool  # Always False: files with timestamps are rejected.


def read_ts_header(path: str) -> TsHeader:
    """Reads and validates the header of a .ts file, up to its @data line.

    Args:
        path: The .ts file.

    Returns:
        The header, with sktime/aeon defaults for absent tags.

    Raises:
        InputDataError: The file is missing, empty or its header is malformed,
            declares timestamps or a regression target, or has no class labels.
    """
    path = os.fspath(path)
    header, _ = _parse_ts_header(path, _ts_content_lines(path))
    return header


def read_ts(path: str,
            max_length: Optional[int] = None) -> Iterator[LabeledSequence]:
    """Yields the series of a .ts classification file, validating as it goes.

    Args:
        path: The .ts file.
        max_length: If given, a longer series raises instead of being truncated.

    Yields:
        One LabeledSequence per data line; series_id is "<file stem>:<index>",
        index counting series from 0.

    Raises:
        InputDataError: Anything read_ts_header rejects, or a malformed series
            line: a value that is not a number, a wrong number of dimensions, a
            label not declared in @classLabel, channels of different lengths, a
            length that breaks @equalLength/@seriesLength or exceeds max_length,
            a header tag after @data, or no series at all.
    """
    path = os.fspath(path)
    if max_length is not None and max_length < 1:
        raise ValueError(f'max_length must be positive, got {max_length}')
    stem = os.path.splitext(os.path.basename(path))[0]
    lines = _ts_content_lines(path)
    header, data_line = _parse_ts_header(path, lines)

    num_dims, dims_source = header.num_dimensions, '@dimensions'
    if num_dims is None and header.univariate:
        num_dims, dims_source = 1, '@univariate true, the default when absent'
    expected_length, length_source = header.series_length, '@seriesLength'
    index = 0
    for line_no, text in lines:
        if text.startswith('@'):
            raise InputDataError(
                path,
                f'header tag {clip(text.split()[0])!r} after @data; move it '
                'above the @data line', line_no)
        values, label = _parse_ts_series(path, text, line_no, header, num_dims,
                                         dims_source)
        if num_dims is None:
            num_dims, dims_source = (values.shape[1],
                                     f'the first series, line {line_no}')
        if header.equal_length:
            if expected_length is None:
                expected_length = len(values)
                length_source = f'the first series, line {line_no}'
            if len(values) != expected_length:
                raise InputDataError(
                    path,
                    f'series of length {len(values)}, but @equalLength is true '
                    '(the default when absent) and the length is '
                    f'{expected_length} (from {length_source}); '
                    'declare @equalLength false for series of '
                    'different lengths', line_no)
        series_id = f'{stem}:{index}'
        if max_length is not None and len(values) > max_length:
            raise InputDataError(
                path, f'series {series_id} has length {len(values)}, above '
                f'max_length {max_length}; raise the limit or shorten the '
                'series', line_no)
        yield LabeledSequence(series_id, values, label)
        index += 1
    if index == 0:
        raise InputDataError(path, f'no series after @data (line {data_line})')


def find_ts_pair(path: str) -> Tuple[str, str]:
    """Finds the <NAME>_TRAIN.ts and <NAME>_TEST.ts files of one problem.

    Args:
        path: A folder holding exactly one such pair, their common prefix
            (".../JapaneseVowels/JapaneseVowels"), or one of the two files.

    Returns:
        (train_path, test_path).

    Raises:
        InputDataError: No pair is found, or a folder holds several pairs.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        ts_files = sorted(n for n in os.listdir(path) if n.endswith('.ts'))
        names = [
            n[:-len(_TRAIN_SUFFIX)]
            for n in ts_files
            if n.endswith(_TRAIN_SUFFIX)
        ]
        pairs = [n for n in names if n + _TEST_SUFFIX in ts_files]
        if not pairs:
            found = ', '.join(ts_files) or 'none'
            raise InputDataError(
                path,
                'no <NAME>_TRAIN.ts and <NAME>_TEST.ts pair in this folder '
                f'(.ts files found: {found})')
        if len(pairs) > 1:
            raise InputDataError(
                path,
                f'several .ts pairs in this folder ({", ".join(pairs)}); pass '
                f'the prefix of one, e.g. {os.path.join(path, pairs[0])}')
        prefix = os.path.join(path, pairs[0])
    elif path.endswith(_TRAIN_SUFFIX):
        prefix = path[:-len(_TRAIN_SUFFIX)]
    elif path.endswith(_TEST_SUFFIX):
        prefix = path[:-len(_TEST_SUFFIX)]
    elif os.path.isfile(path):
        raise InputDataError(
            path, 'not named <NAME>_TRAIN.ts or <NAME>_TEST.ts, so its partner '
            'file cannot be found; pass the folder or the <NAME> prefix')
    else:
        prefix = path
    train, test = prefix + _TRAIN_SUFFIX, prefix + _TEST_SUFFIX
    missing = [p for p in (train, test) if not os.path.isfile(p)]
    if missing:
        raise InputDataError(
            path, f'{" and ".join(missing)} not found; pass a folder holding '
            '<NAME>_TRAIN.ts and <NAME>_TEST.ts, their common prefix, or one '
            'of the two files')
    return train, test


def write_ts(path: str, sequences: Iterable[LabeledSequence], problem_name: str,
             class_labels: Sequence[str]) -> None:
    """Writes sequences as a .ts classification file that read_ts reads back.

    The header declares @dimensions, @missing and, when every series has the
    same length, @equalLength true with @seriesLength. NaN is written as "?".

    Args:
        path: The file to write (overwritten).
        sequences: The series; all need the same number of channels.
        problem_name: The @problemName value.
        class_labels: The @classLabel values, in order; every label used must be
            one of them.

    Raises:
        ValueError: Nothing to write, channel counts differ, a series is empty,
            or a label is undeclared or cannot be written (whitespace, ':').
    """
    sequences = list(sequences)
    class_labels = tuple(class_labels)
    num_channels = check_writable(sequences)
    if not problem_name or len(problem_name.split()) != 1:
        raise ValueError(f'problem_name must be one word, got {problem_name!r}')
    for label in class_labels:
        if not label or len(label.split()) != 1 or ':' in label:
            raise ValueError(f'class label {label!r} cannot go in a .ts file: '
                             'it must be non-empty, without whitespace or ":"')
    if len(set(class_labels)) != len(class_labels):
        raise ValueError(f'class_labels has duplicates: {class_labels}')
    undeclared = sorted({s.label for s in sequences} - set(class_labels))
    if undeclared:
        raise ValueError(f'labels {undeclared} are not in class_labels '
                         f'{class_labels}')
    lengths = {s.values.shape[0] for s in sequences}
    missing = any(np.isnan(s.values).any() for s in sequences)
    header = [
        f'@problemName {problem_name}',
        '@timeStamps false',
        f'@missing {str(missing).lower()}',
        f'@univariate {str(num_channels == 1).lower()}',
        f'@dimensions {num_channels}',
        f'@equalLength {str(len(lengths) == 1).lower()}',
    ]
    if len(lengths) == 1:
        header.append(f'@seriesLength {lengths.pop()}')
    header += [f'@classLabel true {" ".join(class_labels)}', '@data']
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write('\n'.join(header) + '\n')
        for s in sequences:
            channels = [
                ','.join(format_value(v, '?')
                         for v in s.values[:, c])
                for c in range(num_channels)
            ]
            f.write(':'.join(channels) + ':' + s.label + '\n')


def _ts_content_lines(path: str) -> Iterator[Tuple[int, str]]:
    """Yields (line number, stripped text) of a .ts file's content lines.

    Content lines are those that are neither blank nor comments.
    """
    for line_no, line in enumerate(text_lines(path), 1):
        text = line.strip()
        if text and not text.startswith(_COMMENT_PREFIXES):
            yield line_no, text


def _parse_ts_header(path: str,
                     lines: Iterator[Tuple[int, str]]) -> Tuple[TsHeader, int]:
    """Consumes header lines up to @data; returns the header and its line."""
    fields: Dict[str, object] = {}
    tag_lines: Dict[str, int] = {}
    for line_no, text in lines:
        if not text.startswith('@'):
            raise InputDataError(
                path, f'data before @data: {clip(text)!r}; the header is "@tag '
                'value" lines and "#" comments, ended by a line '
                '"@data"', line_no)
        # Messages quote the tag as written.
        written_tag, *rest = text.split(None, 1)
        tag, value = written_tag.lower(), rest[0].strip() if rest else ''
        if tag == '@data':
            if value:
                raise InputDataError(
                    path, '@data takes no value, got '
                    f'{clip(value)!r}; put the series on the '
                    'following lines', line_no)
            return _build_header(path, fields, tag_lines, line_no), line_no
        if tag == '@problemname':
            if not value:
                raise InputDataError(path, '@problemName needs a name', line_no)
            # The first one wins: the archive's UnitTest_TEST.ts names two
            # problems.
            fields.setdefault('problem_name', value)
            continue
        if tag in _BOOL_TAGS:
            key, parsed = _BOOL_TAGS[tag], _parse_bool(path, written_tag, value,
                                                       line_no)
        elif tag in _INT_TAGS:
            key, parsed = _INT_TAGS[tag], _parse_positive_int(
                path, written_tag, value, line_no)
        elif tag == '@classlabel':
            key, parsed = 'class_labels', _parse_class_labels(
                path, value, line_no)
        elif tag == '@targetlabel':
            if _parse_bool(path, written_tag, value, line_no):
                raise InputDataError(
                    path,
                    '@targetLabel true marks a regression problem (numeric '
                    'targets), which is not supported; only classification '
                    'files (@classLabel true <labels>) are', line_no)
            continue
        else:
            raise InputDataError(
                path, f'unknown header tag {clip(written_tag)!r}; known tags: '
                '@problemName, @timeStamps, @missing, @univariate, '
                '@dimensions, @equalLength, @seriesLength, @classLabel, '
                '@targetLabel, @data', line_no)
        if key in fields and fields[key] != parsed:
            raise InputDataError(
                path,
                f'{written_tag} repeats line {tag_lines[key]} with a different '
                'value; keep one', line_no)
        fields[key], tag_lines[key] = parsed, line_no
        if key == 'timestamps' and parsed:
            raise InputDataError(
                path,
                'timestamps are not supported (@timeStamps true); write the '
                'series as plain values with @timeStamps false', line_no)
    if not fields:
        raise InputDataError(
            path, 'the file is empty (or only comments); expected '
            'a .ts header of "@tag value" lines ended by '
            '"@data"')
    raise InputDataError(
        path, 'no @data line: the header must end with a line '
        '"@data", followed by one series per line')


def _build_header(path: str, fields: Dict[str, object],
                  tag_lines: Dict[str, int], data_line: int) -> TsHeader:
    """Checks the header tags against each other and applies the defaults."""
    if 'class_labels' not in fields:
        raise InputDataError(
            path, 'no @classLabel tag before @data; classification needs '
            '"@classLabel true <label> <label> ..."', data_line)
    univariate = fields.get('univariate', True)
    num_dimensions = fields.get('num_dimensions')
    if univariate and num_dimensions not in (None, 1):
        raise InputDataError(
            path,
            f'@dimensions {num_dimensions} contradicts @univariate true (the '
            'default when the tag is absent); declare @univariate false',
            tag_lines['num_dimensions'])
    return TsHeader(
        problem_name=fields.get('problem_name',
                                os.path.splitext(os.path.basename(path))[0]),
        univariate=univariate,
        equal_length=fields.get('equal_length', True),
        series_length=fields.get('series_length'),
        num_dimensions=num_dimensions,
        class_labels=fields['class_labels'],
        missing=fields.get('missing', False),
        timestamps=fields.get('timestamps', False),
    )


def _parse_bool(path: str, tag: str, value: str, line_no: int) -> bool:
    if value.lower() not in ('true', 'false'):
        raise InputDataError(
            path, f'{tag} needs "true" or "false", got {clip(value)!r}',
            line_no)
    return value.lower() == 'true'


def _parse_positive_int(path: str, tag: str, value: str, line_no: int) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise InputDataError(
            path, f'{tag} needs a positive whole number, got {clip(value)!r}',
            line_no)
    return int(value)


def _parse_class_labels(path: str, value: str, line_no: int) -> Tuple[str, ...]:
    flag, *labels = value.split()
    if flag.lower() == 'false':
        raise InputDataError(
            path, '@classLabel false: the series carry no class labels, and '
            'classification needs them ("@classLabel true <label> ...")',
            line_no)
    if flag.lower() != 'true' or not labels:
        raise InputDataError(
            path, '@classLabel needs "true" followed by the class labels, e.g. '
            f'"@classLabel true 1 2 3"; got {clip(value)!r}', line_no)
    if len(set(labels)) != len(labels):
        raise InputDataError(path, f'@classLabel lists a label twice: {labels}',
                             line_no)
    return tuple(labels)


def _parse_ts_series(path: str, text: str, line_no: int, header: TsHeader,
                     num_dims: Optional[int],
                     dims_source: str) -> Tuple[np.ndarray, str]:
    """Parses a data line into float32 values [length, channels] and a label.

    num_dims, when known, is the expected number of dimensions and dims_source
    where that expectation comes from, for the error message.
    """
    body, sep, label = text.rpartition(':')
    label = label.strip()
    if not sep or not label:
        raise InputDataError(
            path,
            'no class label: a series line is the values of each dimension, '
            '":"-separated, then ":" and the label', line_no)
    if label not in header.class_labels:
        raise InputDataError(
            path, f'label {clip(label)!r} is not declared in @classLabel '
            f'({" ".join(header.class_labels)})', line_no)
    dim_texts = body.split(':')
    if num_dims is not None and len(dim_texts) != num_dims:
        raise InputDataError(
            path, f'{len(dim_texts)} dimensions, expected {num_dims} (from '
            f'{dims_source}); dimensions are separated by ":" and the label '
            'follows the last ":"', line_no)
    channels = []
    for dim, dim_text in enumerate(dim_texts, 1):
        if not dim_text.strip():
            raise InputDataError(path, f'dimension {dim} has no values',
                                 line_no)
        channel = []
        for k, token in enumerate(dim_text.split(','), 1):
            try:
                channel.append(parse_value(token, _TS_MISSING))
            except ValueError as e:
                raise InputDataError(
                    path,
                    f'dimension {dim}, value {k}: {e}; values are numbers '
                    'separated by "," with "?" for a missing one',
                    line_no) from None
        channels.append(channel)
    lengths = [len(c) for c in channels]
    if len(set(lengths)) > 1:
        listed = ', '.join(
            f'dimension {d}: {n}' for d, n in enumerate(lengths, 1))
        raise InputDataError(
            path,
            f'the dimensions of this series have different lengths ({listed}); '
            'each needs one value per time step', line_no)
    return np.asarray(channels, dtype=np.float32).T, label
