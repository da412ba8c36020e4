"""The labelled series that the .ts and long-CSV formats read and write.

Also what the two format modules share: reading a UTF-8 file's lines, parsing
and formatting values, and checking what a writer is given.
"""

import dataclasses
import math
from typing import Iterator, List

import numpy as np

from formats.errors import InputDataError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class LabeledSequence:
    """A labelled series: float32 values [length, channels], NaN if missing."""
    series_id: str
    values: np.ndarray
    label: str


def text_lines(path: str) -> Iterator[str]:
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


def parse_value(token: str, missing: frozenset) -> float:
    """The number in token, NaN for a missing marker; ValueError otherwise."""
    token = token.strip()
    if token in missing:
        return math.nan
    try:
        value = float(token)  # Also reads "nan"/"NaN" as missing.
    except ValueError:
        raise ValueError(f'{clip(token)!r} is not a number') from None
    if abs(value) > _FLOAT32_MAX:
        raise ValueError(f'{clip(token)!r} is infinite or too large for '
                         'float32')
    return value


def check_writable(sequences: List[LabeledSequence]) -> int:
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


def format_value(value: float, missing: str) -> str:
    """`value` as its shortest float32 text, `missing` if it is NaN."""
    # str() of a float32 is its shortest round-tripping form ("0.1", "1e+20").
    return missing if np.isnan(value) else str(np.float32(value))


def clip(text: str, limit: int = 40) -> str:
    """Shortens text quoted in an error message (a line can be megabytes)."""
    return text if len(text) <= limit else text[:limit] + '...'
