"""Reads and writes long-format CSV files of labelled time series.

One row per time step, with a series id, an integer time index, a label and
one column per channel.

`read_long_csv` yields `LabeledSequence`s whose values are float32
[length, channels], NaN where a value is missing. It is a generator that
validates as it goes: every fault in the input raises `InputDataError` naming
the file, the 1-based line and what to fix.
"""

import csv
import math
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from formats.errors import InputDataError
from formats.labeled_sequences import LabeledSequence
from formats.labeled_sequences import check_writable
from formats.labeled_sequences import clip
from formats.labeled_sequences import format_value
from formats.labeled_sequences import parse_value
from formats.labeled_sequences import text_lines

_CSV_MISSING = frozenset({'', '?'})


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
        path,
        next(rows, (1, None))[1], id_column, time_column, label_column,
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
                values.append(parse_value(row[i], _CSV_MISSING))
            except ValueError as e:
                raise InputDataError(
                    path,
                    f'column {columns[i]!r}: {e}; an empty cell, "?" or "NaN" '
                    'marks a missing value', line_no) from None
        first_label, first_line, steps = series.setdefault(
            series_id, (label, line_no, {}))
        if label != first_label:
            raise InputDataError(
                path, f'series {series_id!r} has label {label!r} here but '
                f'{first_label!r} on line {first_line}; all rows of a series '
                'need the same label', line_no)
        if time in steps:
            raise InputDataError(
                path, f'series {series_id!r} has time {time} twice (lines '
                f'{steps[time][0]} and {line_no}); each time step needs '
                'one row', line_no)
        steps[time] = (line_no, values)
    if not series:
        raise InputDataError(path, 'no data rows after the header row')
    for series_id, (label, _, steps) in series.items():
        values = [steps[t][1] for t in sorted(steps)]
        yield LabeledSequence(
            series_id,
            np.asarray(values, dtype=np.float32).reshape(len(values), -1),
            label)


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
    num_channels = check_writable(sequences)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(['series_id', 'time'] +
                        [f'channel_{c}' for c in range(num_channels)] +
                        ['label'])
        for s in sequences:
            for t, step in enumerate(s.values):
                writer.writerow([s.series_id, t] +
                                [format_value(v, '') for v in step] + [s.label])


def _csv_rows(path: str) -> Iterator[Tuple[int, List[str]]]:
    """Yields (line number, cells) of each CSV row, [] for a blank line."""
    reader = csv.reader(text_lines(path))
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
        raise InputDataError(
            path, f'{what}; expected a header row naming the '
            'columns', 1)
    columns = [c.strip() for c in row]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InputDataError(path, 'the header row repeats columns '
                             f'{duplicates}', 1)
    return columns


def _csv_columns(
    path: str, row: Optional[List[str]], id_column: str, time_column: str,
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
        channel_is = [_column_index(path, columns, c) for c in channel_columns]
    if not channel_is:
        raise InputDataError(
            path, 'no channel columns: the header has only '
            f'{columns}', 1)
    return id_i, time_i, label_i, channel_is, columns


def _column_index(path: str, columns: List[str], name: str) -> int:
    if name not in columns:
        raise InputDataError(
            path, f'no column {name!r} in the header row {columns}; rename the '
            'column that holds it (a long-format CSV has the columns '
            'series_id, time, label and one per channel)', 1)
    return columns.index(name)


def _check_row_width(path: str, row: List[str], columns: List[str],
                     line_no: int) -> None:
    if len(row) != len(columns):
        raise InputDataError(
            path,
            f'{len(row)} cells, but the header row has {len(columns)} columns',
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
            f'time index {clip(cell)!r} in column {column!r} is not a whole '
            'number', line_no)
    return int(time)
