"""Watching for new data spans: the new-data trigger.

Watching for new data spans (``span-{SPAN}`` folders): the new-data trigger. The
patterns are parsed in components/example_gen/spans.py.
"""

import os
from typing import List, Optional, Union

from components.example_gen import spans


class SpanWatcher:
    """Finds the newest data span under a root directory.

    Args:
        data_root: Directory the pattern is relative to.
        pattern: Relative path of a span with exactly one ``{SPAN}`` (any
            number of digits) or ``{SPAN:N}`` (exactly N digits) token, and
            optionally ``*``/``?`` wildcards, e.g. ``span-{SPAN}`` or
            ``span-{SPAN}/_SUCCESS`` (point it at a marker written last if
            spans are copied in slowly, so a half-copied span does not
            trigger a run). Matches files and directories.
        poll_seconds: How often the scheduler checks.
    """

    def __init__(self,
                 data_root: Union[str, os.PathLike],
                 pattern: str = 'span-{SPAN}',
                 poll_seconds: float = 60.0):
        spans.check_pattern(pattern)
        if poll_seconds <= 0:
            raise ValueError('poll_seconds must be positive, got '
                             f'{poll_seconds}')
        self.data_root = os.fspath(data_root)
        self.pattern = pattern
        self.poll_seconds = float(poll_seconds)

    @property
    def key(self) -> str:
        """Identifies this watcher in the scheduler's state file."""
        return f'{os.path.abspath(self.data_root)}::{self.pattern}'

    def spans(self) -> List[int]:
        """Returns every span number present, ascending."""
        return list(spans.find_spans(self.data_root, self.pattern))

    def latest_span(self) -> Optional[int]:
        """Returns the highest span number present, or None."""
        return spans.newest_span(self.data_root, self.pattern)

    def describe(self) -> str:
        """A short human description for log lines."""
        return os.path.join(self.data_root, self.pattern)
