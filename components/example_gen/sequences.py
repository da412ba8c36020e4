"""Beam readers for sequence data: UCR/UEA `.ts` files and long-format CSV."""

import glob
import itertools
from typing import Any, Dict, Iterator

import apache_beam as beam

from components import sequence_formats
from components.errors import InputDataError
from components.example_gen import reading
from models import features


def _read_sequences(pipeline: beam.Pipeline, settings: Dict[str, Any],
                    pattern: str, parse):
    class_names = settings['class_names']
    limit = reading.first_n(settings) or None
    files = sorted(glob.glob(pattern))
    if not files:
        raise InputDataError(pattern, 'no file matches this pattern')

    def read_file(path: str) -> Iterator[bytes]:
        for sequence in itertools.islice(parse(path, settings), limit):
            label = reading.label_index(class_names, sequence.label, path)
            yield features.sequence_example(sequence.values, label)

    return reading.read_items(pipeline, files, read_file)


def read_ts(pipeline: beam.Pipeline, settings: Dict[str, Any], pattern: str):
    """Reads UCR/UEA `.ts` files matching `pattern`."""
    return _read_sequences(
        pipeline, settings, pattern,
        lambda path, s: sequence_formats.read_ts(
            path, max_length=int(s['max_length']) if s.get('max_length')
            else None))


def read_csv(pipeline: beam.Pipeline, settings: Dict[str, Any], pattern: str):
    """Reads long-format CSV files (one row per time step) matching `pattern`."""
    return _read_sequences(
        pipeline, settings, pattern,
        lambda path, s: sequence_formats.read_long_csv(path))
