"""Spans: the one parser of `{SPAN}` patterns.

ExampleGen and the new-data trigger both read spans through it.

The patterns are TFX's (`tfx/components/example_gen/utils.py`): a path
relative to a root with one `{SPAN}` (any number of digits) or `{SPAN:N}`
(exactly N digits, zero-padded) token, and optionally `*`/`?` wildcards, e.g.
`span-{SPAN}` or `span-{SPAN}/_SUCCESS`. Spans are found as TFX finds them
(the token globbed as `*`, then captured), except that a name whose token is
not a number is skipped rather than an error, so `span-x` or a `span-3.tmp`
being copied in never stops a run. TFX's module is not imported here: it
loads TensorFlow, and the data is checked before TensorFlow loads
(tests/test_spans.py checks that both read the same spans).
"""

import glob
import os
import re
from typing import Dict, List, Optional, Tuple, Union

# TFX's SPAN_FULL_REGEX, with the width a number.
_SPAN_TOKEN = re.compile(r'\{SPAN(?::(\d+))?\}')


def check_pattern(pattern: str) -> None:
    """Raises ValueError unless `pattern` has exactly one span token."""
    if len(_SPAN_TOKEN.findall(pattern)) != 1:
        raise ValueError(f'span pattern {pattern!r} must contain exactly '
                         'one {SPAN} or {SPAN:N} token')


def _glob_and_regex(text: str) -> Tuple[str, str]:
    """Translates a pattern fragment with `*` and `?` to glob and regex."""
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


def find_spans(root: Union[str, os.PathLike],
               pattern: str) -> Dict[int, List[str]]:
    """Every span under `root`: {span number: the paths that match}.

    Args:
        root: The directory the pattern is relative to (missing: no spans).
        pattern: A span pattern (see the module docstring). Matches files
            and directories.

    Raises:
        ValueError: The pattern has no span token, or more than one.
    """
    check_pattern(pattern)
    match = _SPAN_TOKEN.search(pattern)
    prefix_glob, prefix_regex = _glob_and_regex(pattern[:match.start()])
    suffix_glob, suffix_regex = _glob_and_regex(pattern[match.end():])
    digits = r'(\d{%s})' % match.group(1) if match.group(1) else r'(\d+)'
    regex = re.compile(prefix_regex + digits + suffix_regex)
    root = os.path.abspath(root)
    found: Dict[int, List[str]] = {}
    for path in sorted(
            glob.glob(
                os.path.join(glob.escape(root),
                             prefix_glob + '*' + suffix_glob))):
        relative = os.path.relpath(path, root).replace(os.sep, '/')
        matched = regex.fullmatch(relative)
        if matched:
            found.setdefault(int(matched.group(1)), []).append(path)
    return dict(sorted(found.items()))


def newest_span(root: Union[str, os.PathLike], pattern: str) -> Optional[int]:
    """The highest span number under `root`, or None if there is none."""
    spans = find_spans(root, pattern)
    return max(spans) if spans else None


def fill(pattern: str, span: int) -> str:
    """The pattern with its span token replaced by `span`.

    Zero-padded to a `{SPAN:N}` width, as TFX resolves it.
    """
    return _SPAN_TOKEN.sub(lambda m: str(span).zfill(int(m.group(1) or 0)),
                           pattern)
