"""Readers and writers for labelled time series: UCR/UEA .ts files and long CSV.

Both readers yield `LabeledSequence`s whose values are float32
[length, channels], NaN where a value is missing.

* .ts (sktime/aeon `load_from_tsfile` semantics): `@tag value` header lines up
  to `@data`, then one series per line: channels separated by ':', the values
  of a channel by ',', the class label after the last ':', '?' for a missing
  value.
* Long CSV: one row per time step, with a series id, an integer time index, a
  label and one column per channel.

The readers are generators that validate as they go: every fault in the input
raises `InputDataError` naming the file, the 1-based line and what to fix.
"""

import csv
import dataclasses
import math
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from components.errors import InputDataError

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
_CSV_MISSING = frozenset({'', '?'})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


@dataclasses.dataclass(frozen=True)
class LabeledSequence:
    """A labelled series: float32 values [length, channels], NaN if missing."""
    series_id: str
    values: np.ndarray
    label: str


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
                f'header tag {_clip(text.split()[0])!r} after @data; move it '
                'above the @data line', line_no)
        values, label = _parse_ts_series(path, text, line_no, header,
                                         num_dims, dims_source)
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
                path,
                f'series {series_id} has length {len(values)}, above '
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
        names = [n[:-len(_TRAIN_SUFFIX)] for n in ts_files
                 if n.endswith(_TRAIN_SUFFIX)]
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


def read_long_csv(
        path: str,
        id_column: str = 'series_id',
        time_column: str = 'time',
        label_column: str = 'label',
        channel_columns: Optional[Sequence[str]] = None,
) -> Iterator[LabeledSequence]:
    """Yields the series of a long-format CSV: one row per time step.

    The whole file is read and validated before the first series is yielded,
    because the rows of a series may be spread over the file in any order.

    Args:
        path: The CSV file; its first row names the columns.
        id_column: The column holding each row's series id.
        time_column: The integer time index; a series' rows are sorted by it.
        label_column: The class label, the same on every row of a series.
        channel_columns: The value columns, in channel order; None means every
            column other than the three above, in file order.

    Yields:
        One LabeledSequence per series id, in order of first appearance. An
        empty cell, "?" or "NaN" is a missing value (NaN).

    Raises:
        InputDataError: The file is missing or empty, a named column is absent,
            a row has the wrong number of cells, an id, time or label is empty,
            a time index is not an integer or repeats within a series, a value
            is not a number, or the rows of a series disagree on the label.
    """
    path = os.fspath(path)
    rows = _csv_rows(path)
    id_i, time_i, label_i, channel_is, columns = _csv_columns(
        path, next(rows, (1, None))[1], id_column, time_column, label_column,
        channel_columns)
    # Per series: label, the line it was first seen on, and
    # time -> (line, values).
    series: Dict[str, Tuple[str, int, Dict[int, Tuple[int, List[float]]]]] = {}
    for line_no, row in rows:
        if not row:
            continue
        _check_row_width(path, row, columns, line_no)
        series_id = _required_cell(path, row, id_i, columns, line_no)
        label = _required_cell(path, row, label_i, columns, line_no)
        time = _parse_time(path, row[time_i], columns[time_i], line_no)
        values = []
        for i in channel_is:
            try:
                values.append(_parse_value(row[i], _CSV_MISSING))
            except ValueError as e:
                raise InputDataError(
                    path,
                    f'column {columns[i]!r}: {e}; an empty cell, "?" or "NaN" '
                    'marks a missing value', line_no) from None
        first_label, first_line, steps = series.setdefault(series_id,
                                                           (label, line_no, {}))
        if label != first_label:
            raise InputDataError(
                path, f'series {series_id!r} has label {label!r} here but '
                f'{first_label!r} on line {first_line}; all rows of a series '
                'need the same label', line_no)
        if time in steps:
            raise InputDataError(
                path, f'series {series_id!r} has time {time} twice (lines '
                f'{steps[time][0]} and {line_no}); each time step needs one '
                'row',
                line_no)
        steps[time] = (line_no, values)
    if not series:
        raise InputDataError(path, 'no data rows after the header row')
    for series_id, (label, _, steps) in series.items():
        values = [steps[t][1] for t in sorted(steps)]
        yield LabeledSequence(
            series_id,
            np.asarray(values,
                       dtype=np.float32).reshape(len(values), -1), label)


def class_labels_of_csv(path: str,
                        label_column: str = 'label') -> Tuple[str, ...]:
    """Returns the sorted unique labels of a long CSV, streaming it once.

    Args:
        path: The CSV file; its first row names the columns.
        label_column: The column holding the class label.

    Returns:
        The distinct labels, sorted as strings ("10" before "2").

    Raises:
        InputDataError: The file is missing or empty, has no such column, or a
            row has the wrong number of cells or an empty label.
    """
    path = os.fspath(path)
    rows = _csv_rows(path)
    columns = _csv_header(path, next(rows, (1, None))[1])
    label_i = _column_index(path, columns, label_column)
    labels = set()
    for line_no, row in rows:
        if row:
            _check_row_width(path, row, columns, line_no)
            labels.add(_required_cell(path, row, label_i, columns, line_no))
    if not labels:
        raise InputDataError(path, 'no data rows after the header row')
    return tuple(sorted(labels))


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
    num_channels = _check_writable(sequences)
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
            channels = [','.join(_format_value(v, '?') for v in s.values[:, c])
                        for c in range(num_channels)]
            f.write(':'.join(channels) + ':' + s.label + '\n')


def write_long_csv(path: str, sequences: Iterable[LabeledSequence]) -> None:
    """Writes sequences as a long CSV that read_long_csv reads with defaults.

    Columns: series_id, time (0-based), channel_0 ... channel_{C-1}, label; NaN
    is written as an empty cell.

    Args:
        path: The file to write (overwritten).
        sequences: The series; all need the same number of channels.

    Raises:
        ValueError: Nothing to write, channel counts differ or a series is
            empty.
    """
    sequences = list(sequences)
    num_channels = _check_writable(sequences)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(['series_id', 'time']
                        + [f'channel_{c}' for c in range(num_channels)]
                        + ['label'])
        for s in sequences:
            for t, step in enumerate(s.values):
                writer.writerow([s.series_id, t]
                                + [_format_value(v, '') for v in step]
                                + [s.label])


def _text_lines(path: str) -> Iterator[str]:
    """Yields the lines of a UTF-8 file, ends kept, a leading BOM dropped."""
    try:
        f = open(path, 'rb')
    except FileNotFoundError:
        raise InputDataError(path, 'file not found') from None
    except IsADirectoryError:
        raise InputDataError(path, 'is a folder, expected a file') from None
    with f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode('utf-8')
            except UnicodeDecodeError as e:
                raise InputDataError(
                    path,
                    f'not UTF-8 text ({e.reason} at byte {e.start} of the '
                    'line); save the file as UTF-8', line_no) from None
            yield text.lstrip('\ufeff') if line_no == 1 else text


def _ts_content_lines(path: str) -> Iterator[Tuple[int, str]]:
    """Yields (line number, stripped text) of a .ts file's content lines.

    Content lines are those that are neither blank nor comments.
    """
    for line_no, line in enumerate(_text_lines(path), 1):
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
                path,
                f'data before @data: {_clip(text)!r}; the header is "@tag '
                'value" lines and "#" comments, ended by a line '
                '"@data"', line_no)
        # Messages quote the tag as written.
        written_tag, *rest = text.split(None, 1)
        tag, value = written_tag.lower(), rest[0].strip() if rest else ''
        if tag == '@data':
            if value:
                raise InputDataError(path,
                                     '@data takes no value, got '
                                     f'{_clip(value)!r}; put the series on the '
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
            key, parsed = _BOOL_TAGS[tag], _parse_bool(path, written_tag,
                                                       value, line_no)
        elif tag in _INT_TAGS:
            key, parsed = _INT_TAGS[tag], _parse_positive_int(path, written_tag,
                                                              value, line_no)
        elif tag == '@classlabel':
            key, parsed = 'class_labels', _parse_class_labels(path,
                                                              value, line_no)
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
                path,
                f'unknown header tag {_clip(written_tag)!r}; known tags: '
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
        raise InputDataError(path,
                             'the file is empty (or only comments); expected '
                             'a .ts header of "@tag value" lines ended by '
                             '"@data"')
    raise InputDataError(path, 'no @data line: the header must end with a line '
                         '"@data", followed by one series per line')


def _build_header(path: str, fields: Dict[str, object],
                  tag_lines: Dict[str, int],
                  data_line: int) -> TsHeader:
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
        problem_name=fields.get(
            'problem_name', os.path.splitext(os.path.basename(path))[0]),
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
            path,
            f'{tag} needs "true" or "false", got {_clip(value)!r}', line_no)
    return value.lower() == 'true'


def _parse_positive_int(path: str, tag: str, value: str, line_no: int) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise InputDataError(
            path,
            f'{tag} needs a positive whole number, got {_clip(value)!r}',
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
            f'"@classLabel true 1 2 3"; got {_clip(value)!r}', line_no)
    if len(set(labels)) != len(labels):
        raise InputDataError(
            path, f'@classLabel lists a label twice: {labels}', line_no)
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
            path, f'label {_clip(label)!r} is not declared in @classLabel '
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
            raise InputDataError(path,
                                 f'dimension {dim} has no values', line_no)
        channel = []
        for k, token in enumerate(dim_text.split(','), 1):
            try:
                channel.append(_parse_value(token, _TS_MISSING))
            except ValueError as e:
                raise InputDataError(
                    path,
                    f'dimension {dim}, value {k}: {e}; values are numbers '
                    'separated by "," with "?" for a '
                    'missing one', line_no) from None
        channels.append(channel)
    lengths = [len(c) for c in channels]
    if len(set(lengths)) > 1:
        listed = ', '.join(f'dimension {d}: {n}'
                           for d, n in enumerate(lengths, 1))
        raise InputDataError(
            path,
            f'the dimensions of this series have different lengths ({listed}); '
            'each needs one value per time step', line_no)
    return np.asarray(channels, dtype=np.float32).T, label


def _parse_value(token: str, missing: frozenset) -> float:
    """The number in token, NaN for a missing marker; ValueError otherwise."""
    token = token.strip()
    if token in missing:
        return math.nan
    try:
        value = float(token)  # Also reads "nan"/"NaN" as missing.
    except ValueError:
        raise ValueError(f'{_clip(token)!r} is not a number') from None
    if abs(value) > _FLOAT32_MAX:
        raise ValueError(f'{_clip(token)!r} is infinite or too large for '
                         'float32')
    return value


def _csv_rows(path: str) -> Iterator[Tuple[int, List[str]]]:
    """Yields (line number, cells) of each CSV row, [] for a blank line."""
    reader = csv.reader(_text_lines(path))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputDataError(path, f'malformed CSV: {e}',
                                 reader.line_num) from None
        # line_num counts the lines read so far: a quoted cell can span several.
        yield reader.line_num, row


def _csv_header(path: str, row: Optional[List[str]]) -> List[str]:
    if not row:
        what = 'the file is empty' if row is None else 'the first line is blank'
        raise InputDataError(path, f'{what}; expected a header row naming the '
                                   'columns', 1)
    columns = [c.strip() for c in row]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InputDataError(path, 'the header row repeats columns '
                                   f'{duplicates}', 1)
    return columns


def _csv_columns(path: str, row: Optional[List[str]], id_column: str,
                 time_column: str,
                 label_column: str, channel_columns: Optional[Sequence[str]]
                 ) -> Tuple[int, int, int, List[int], List[str]]:
    """Resolves the column names of a long CSV's header row to indices."""
    columns = _csv_header(path, row)
    id_i = _column_index(path, columns, id_column)
    time_i = _column_index(path, columns, time_column)
    label_i = _column_index(path, columns, label_column)
    keys = {id_column, time_column, label_column}
    if channel_columns is None:
        channel_is = [i for i, c in enumerate(columns) if c not in keys]
    else:
        clash = sorted(keys.intersection(channel_columns))
        if clash:
            raise ValueError('channel_columns includes id/time/label columns '
                             f'{clash}')
        channel_is = [_column_index(path, columns, c)
                      for c in channel_columns]
    if not channel_is:
        raise InputDataError(path, 'no channel columns: the header has only '
                                   f'{columns}', 1)
    return id_i, time_i, label_i, channel_is, columns


def _column_index(path: str, columns: List[str], name: str) -> int:
    if name not in columns:
        raise InputDataError(
            path, f'no column {name!r} in the header row {columns}; rename the '
            'column that holds it (a long-format CSV has the columns '
            'series_id, time, label and one per channel)', 1)
    return columns.index(name)


def _check_row_width(path: str, row: List[str],
                     columns: List[str], line_no: int) -> None:
    if len(row) != len(columns):
        raise InputDataError(
            path, f'{len(row)} cells, but the header row has {len(columns)} '
                  'columns',
            line_no)


def _required_cell(path: str, row: List[str], i: int, columns: List[str],
                   line_no: int) -> str:
    value = row[i].strip()
    if not value:
        raise InputDataError(path, f'empty {columns[i]!r} cell', line_no)
    return value


def _parse_time(path: str, cell: str, column: str, line_no: int) -> int:
    """Parses a time index: a whole number, written as "3" or "3.0"."""
    cell = cell.strip()
    try:
        time = float(cell)
    except ValueError:
        time = math.nan
    if not time.is_integer():
        raise InputDataError(
            path,
            f'time index {_clip(cell)!r} in column {column!r} is not a whole '
            'number', line_no)
    return int(time)


def _check_writable(sequences: List[LabeledSequence]) -> int:
    """Returns the channel count shared by all sequences; ValueError if none."""
    if not sequences:
        raise ValueError('no sequences to write')
    num_channels = sequences[0].values.shape[-1]
    for s in sequences:
        if s.values.ndim != 2 or s.values.shape[1] != num_channels:
            raise ValueError(f'series {s.series_id!r} has shape '
                             f'{s.values.shape}; expected [length, '
                             f'{num_channels}]')
        if s.values.shape[0] == 0:
            raise ValueError(f'series {s.series_id!r} is empty')
    return num_channels


def _format_value(value: float, missing: str) -> str:
    # str() of a float32 is its shortest round-tripping form ("0.1", "1e+20").
    return missing if np.isnan(value) else str(np.float32(value))


def _clip(text: str, limit: int = 40) -> str:
    """Shortens text quoted in an error message (a line can be megabytes)."""
    return text if len(text) <= limit else text[:limit] + '...'
