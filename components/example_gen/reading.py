"""Beam plumbing shared by format readers: fan out, read, divert bad input."""

import glob
import os
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Sequence,
    Tuple,
)

import apache_beam as beam

from common import names
from formats.errors import InputDataError

_BAD = 'bad'


class _ReadDoFn(beam.DoFn):
    """Applies a reader to one work item; bad input goes to a side output."""

    def __init__(self, read_fn: Callable[[Any], Iterator[bytes]]):
        super().__init__()
        self._read_fn = read_fn

    def process(self, item: Any) -> Iterator[Any]:
        # Which worker process read it: on an engine, evidence that the
        # items were spread over two or more SDK workers.
        beam.metrics.Metrics.counter(names.WORKER_PID_COUNTERS,
                                     str(os.getpid())).inc()
        try:
            yield from self._read_fn(item)
        except InputDataError as error:
            yield beam.pvalue.TaggedOutput(_BAD, {
                'path': error.path,
                'reason': error.reason,
                'line': error.line
            })


def read_items(
    pipeline: beam.Pipeline, items: Sequence[Any],
    read_fn: Callable[[Any], Iterable[bytes]]
) -> Tuple[beam.pvalue.PCollection, beam.pvalue.PCollection]:
    """Spreads `items` over Beam workers and reads each with `read_fn`.

    Args:
        pipeline: The Beam pipeline.
        items: Work items (file paths, file chunks), picklable.
        read_fn: Yields serialized tf.Examples for one item; raises
            InputDataError for bad input.

    Returns:
        (serialized examples, bad records as dicts with path, reason, line).
    """
    results = (pipeline | 'Items' >> beam.Create(list(items)) |
               'Spread' >> beam.Reshuffle() | 'Read' >> beam.ParDo(
                   _ReadDoFn(read_fn)).with_outputs(_BAD, main='examples'))
    return results.examples, results[_BAD]


def label_index(class_names: Sequence[str],
                label: str,
                path: str,
                line: Any = None) -> int:
    """The index of `label` among the class names, or an InputDataError."""
    try:
        return list(class_names).index(label)
    except ValueError:
        raise InputDataError(
            path, f'label {label!r} is not one of the {len(class_names)} '
            f'classes of this data set', line) from None


def first_n(settings: Dict[str, Any]) -> int:
    """How many examples a reader may take from one input split (0: all)."""
    return int(settings.get('max_examples_per_split') or 0)


def glob_files(patterns: Sequence[str]) -> List[str]:
    """The sorted files matching any of `patterns`; InputDataError if none."""
    files = sorted({f for p in patterns for f in glob.glob(p)})
    if not files:
        raise InputDataError(patterns[0], 'no file matches this pattern')
    return files
