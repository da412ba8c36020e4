"""components/example_gen/spans.py reads `{SPAN}` patterns as TFX does.

TFX's own parser (tfx/components/example_gen/utils.py, which a stock
ExampleGen driver runs) is the reference: on the same folders it must pick
the same newest span and resolve the pattern to the same path.
"""

import pytest
from tfx.components.example_gen import utils as tfx_utils
from tfx.proto import example_gen_pb2

from components.example_gen import spans


def _tfx_newest(root, pattern):
    """(newest span, resolved pattern) by TFX's ExampleGen utilities."""
    split = example_gen_pb2.Input.Split(name='train', pattern=pattern)
    _, span, _ = tfx_utils.calculate_splits_fingerprint_span_and_version(
        str(root), [split])
    return span, split.pattern


@pytest.mark.parametrize('names, pattern', [
    (['span-1', 'span-12', 'span-3'], 'span-{SPAN}/data-*'),
    (['span-001', 'span-012', 'span-003'], 'span-{SPAN:3}/data-*'),
    (['a-2-x', 'a-10-x'], 'a-{SPAN}-?/data-*'),
])
def test_newest_span_and_its_path_agree_with_tfx(tmp_path, names, pattern):
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'data-0').write_text('x')
    span = spans.newest_span(tmp_path, pattern)
    assert (span, spans.fill(pattern, span)) == _tfx_newest(tmp_path, pattern)


def test_names_whose_span_is_not_a_number_are_skipped(tmp_path):
    # TFX raises on these; a half-copied `span-3.tmp` must not stop a run.
    for name in ('span-1', 'span-4', 'span-x', 'span-3.tmp', '.span-9'):
        (tmp_path / name).mkdir()
    found = spans.find_spans(tmp_path, 'span-{SPAN}')
    assert list(found) == [1, 4]
    assert found[4] == [str(tmp_path / 'span-4')]
    assert spans.newest_span(tmp_path / 'missing', 'span-{SPAN}') is None
