"""Beam readers for sequence data: UCR/UEA `.ts` files and long-format CSV."""

import itertools
from typing import Any, Dict, Iterator, List

import apache_beam as beam

from components.example_gen import reading
from formats import long_csv_format
from formats import ts_format
from models import features


def _read_sequences(pipeline: beam.Pipeline, settings: Dict[str, Any],
                    patterns: List[str], parse):
    class_names = settings['class_names']
    limit = reading.first_n(settings) or None
    files = reading.glob_files(patterns)

    def read_file(path: str) -> Iterator[bytes]:
        for sequence in itertools.islice(parse(path, settings), limit):
            label = reading.label_index(class_names, sequence.label, path)
            yield features.sequence_example(sequence.values, label)

    return reading.read_items(pipeline, files, read_file)


def read_ts(pipeline: beam.Pipeline, settings: Dict[str, Any],
            patterns: List[str]):
    """Reads UCR/UEA `.ts` files matching `patterns`."""
    return _read_sequences(
        pipeline, settings, patterns,
        lambda path, s: ts_format.read_ts(path,
                                          max_length=int(s['max_length'])
                                          if s.get('max_length') else None))


def read_csv(pipeline: beam.Pipeline, settings: Dict[str, Any],
             patterns: List[str]):
    """Reads long-format CSV files (a row per time step) matching `patterns`."""
    return _read_sequences(pipeline, settings, patterns,
                           lambda path, s: long_csv_format.read_long_csv(path))
