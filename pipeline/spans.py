"""Finding data spans (``span-{SPAN}`` folders) for the new-data trigger."""

import glob
import os
import re
from typing import List, Optional, Union


def _glob_and_regex(text: str) -> tuple:
    """Translates a pattern fragment with ``*`` and ``?`` to glob and regex."""
    glob_parts, regex_parts = [], []
    for char in text:
        if char == '*':
            glob_parts.append('*')
            regex_parts.append('[^/]*')
        elif char == '?':
            glob_parts.append('?')
            regex_parts.append('[^/]')
        else:
            glob_parts.append(glob.escape(char))
            regex_parts.append(re.escape(char))
    return ''.join(glob_parts), ''.join(regex_parts)


_SPAN_TOKEN = re.compile(r'\{SPAN(?::(\d+))?\}')


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

    def __init__(self, data_root: Union[str, os.PathLike],
                 pattern: str = 'span-{SPAN}', poll_seconds: float = 60.0):
        tokens = _SPAN_TOKEN.findall(pattern)
        if len(tokens) != 1:
            raise ValueError(f'span pattern {pattern!r} must contain exactly '
                             'one {SPAN} or {SPAN:N} token')
        if poll_seconds <= 0:
            raise ValueError('poll_seconds must be positive, got '
                             f'{poll_seconds}')
        self.data_root = os.fspath(data_root)
        self.pattern = pattern
        self.poll_seconds = float(poll_seconds)
        match = _SPAN_TOKEN.search(pattern)
        prefix_glob, prefix_regex = _glob_and_regex(pattern[:match.start()])
        suffix_glob, suffix_regex = _glob_and_regex(pattern[match.end():])
        digits = r'(\d{%s})' % match.group(1) if match.group(1) else r'(\d+)'
        self._glob = prefix_glob + '*' + suffix_glob
        self._regex = re.compile(prefix_regex + digits + suffix_regex)

    @property
    def key(self) -> str:
        """Identifies this watcher in the scheduler's state file."""
        return f'{os.path.abspath(self.data_root)}::{self.pattern}'

    def spans(self) -> List[int]:
        """Returns every span number present, ascending."""
        root = os.path.abspath(self.data_root)
        found = set()
        for path in glob.glob(os.path.join(glob.escape(root), self._glob)):
            relative = os.path.relpath(path, root).replace(os.sep, '/')
            match = self._regex.fullmatch(relative)
            if match:
                found.add(int(match.group(1)))
        return sorted(found)

    def latest_span(self) -> Optional[int]:
        """Returns the highest span number present, or None."""
        spans = self.spans()
        return spans[-1] if spans else None

    def describe(self) -> str:
        """A short human description for log lines."""
        return os.path.join(self.data_root, self.pattern)
