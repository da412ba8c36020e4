"""Tests for the .ts and long-CSV readers and writers of labelled sequences.

formats/ts_format.py, formats/long_csv_format.py and what they share,
formats/labeled_sequences.py.
"""

import importlib.util
import os
import pickle

import numpy as np
import pytest

from formats import labeled_sequences
from formats import long_csv_format
from formats import ts_format
from formats.errors import InputDataError


def _archive_dir() -> str:
    # sktime is installed --no-deps only for its data files; never import it.
    spec = importlib.util.find_spec('sktime')
    if spec is None or not spec.submodule_search_locations:
        return ''
    return os.path.join(spec.submodule_search_locations[0], 'datasets', 'data')


ARCHIVE = _archive_dir()
needs_archive = pytest.mark.skipif(
    not os.path.isdir(ARCHIVE),
    reason='UCR/UEA .ts files come from `pip install --no-deps sktime==1.2.0`')

CLASSIFICATION_FILES = [
    f'{name}/{name}_{split}.ts' for name in ('ACSF1', 'ArrowHead',
                                             'BasicMotions', 'GunPoint',
                                             'ItalyPowerDemand',
                                             'JapaneseVowels', 'OSULeaf',
                                             'PLAID', 'UnitTest')
    for split in ('TRAIN', 'TEST')
]


def archive(relative: str) -> str:
    return os.path.join(ARCHIVE, relative)


def write(tmp_path, text: str, name: str = 'toy_TRAIN.ts') -> str:
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def ts_text(*data_lines: str, **tags: str) -> str:
    """A .ts file: univariate header (labels a b), tags overridable; data."""
    header = {
        'problemName': 'Toy',
        'timeStamps': 'false',
        'missing': 'false',
        'univariate': 'true',
        'equalLength': 'false',
        'classLabel': 'true a b',
    }
    header.update(tags)
    lines = [
        f'@{tag} {value}' for tag, value in header.items() if value is not None
    ]
    return '\n'.join(lines + ['@data', *data_lines]) + '\n'


def raises_at(line, *fragments):
    """Asserts InputDataError at `line` whose reason has all `fragments`."""

    class _Check:

        def __enter__(self):
            self._ctx = pytest.raises(InputDataError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._ctx.__exit__(*exc)
            error = self.info.value
            assert error.line == line, str(error)
            for fragment in fragments:
                assert fragment in error.reason, str(error)
            return suppressed

    return _Check()


# --- Real archive files -------------------------------------------------------


@needs_archive
def test_gunpoint_univariate_counts_shapes_and_values():
    train = list(ts_format.read_ts(archive('GunPoint/GunPoint_TRAIN.ts')))
    test = list(ts_format.read_ts(archive('GunPoint/GunPoint_TEST.ts')))
    assert (len(train), len(test)) == (50, 150)
    assert {s.values.shape for s in train + test} == {(150, 1)}
    assert {s.values.dtype for s in train} == {np.dtype(np.float32)}
    first = train[0]
    assert first.series_id == 'GunPoint_TRAIN:0'
    assert first.label == '2'
    # The first and last values of line 20, the first series, as in the file.
    assert first.values[0, 0] == np.float32(-0.6478854)
    assert first.values[1, 0] == np.float32(-0.64199155)
    assert first.values[-1, 0] == np.float32(-0.63865722)
    assert [s.series_id for s in test[:2]
           ] == ['GunPoint_TEST:0', 'GunPoint_TEST:1']
    assert sum(s.label == '1' for s in test) == 76


@needs_archive
def test_gunpoint_header():
    header = ts_format.read_ts_header(archive('GunPoint/GunPoint_TEST.ts'))
    assert header == ts_format.TsHeader(problem_name='GunPoint',
                                        univariate=True,
                                        equal_length=True,
                                        series_length=150,
                                        num_dimensions=None,
                                        class_labels=('1', '2'),
                                        missing=False,
                                        timestamps=False)


@needs_archive
def test_japanese_vowels_multivariate_unequal_length():
    header = ts_format.read_ts_header(
        archive('JapaneseVowels/JapaneseVowels_TRAIN.ts'))
    assert header.num_dimensions == 12 and not header.univariate
    assert not header.equal_length and header.series_length is None
    assert header.class_labels == tuple('123456789')
    train = list(
        ts_format.read_ts(archive('JapaneseVowels/JapaneseVowels_TRAIN.ts')))
    test = list(
        ts_format.read_ts(archive('JapaneseVowels/JapaneseVowels_TEST.ts')))
    assert (len(train), len(test)) == (270, 370)
    lengths = [len(s.values) for s in train + test]
    assert (min(lengths), max(lengths)) == (7, 29)
    assert {s.values.shape[1] for s in train + test} == {12}
    assert {s.label for s in train} == set('123456789')
    assert {s.label for s in test} == set('123456789')
    first = train[0]
    assert (first.series_id, first.label,
            first.values.shape) == ('JapaneseVowels_TRAIN:0', '1', (20, 12))
    # Time step 0 of dimensions 1-3, and the end of dimension 1, as in the file.
    np.testing.assert_array_equal(first.values[0, :3],
                                  np.float32([1.860936, -0.207383, 0.261557]))
    assert first.values[-1, 0] == np.float32(1.261441)
    assert first.values[-1, 11] == np.float32(-0.175986)
    assert test[-1].label == '9'
    assert test[-1].values[-1, -1] == np.float32(0.224688)


@needs_archive
def test_plaid_unequal_length_univariate():
    header = ts_format.read_ts_header(archive('PLAID/PLAID_TRAIN.ts'))
    assert header.univariate and not header.equal_length
    assert header.class_labels == tuple(str(i) for i in range(11))
    train = list(ts_format.read_ts(archive('PLAID/PLAID_TRAIN.ts')))
    lengths = [len(s.values) for s in train]
    assert len(train) == 537
    assert (min(lengths), max(lengths)) == (100, 1344)
    assert train[0].values[0, 0] == np.float32(0.17339)


@needs_archive
def test_basic_motions_declares_dimensions_and_word_labels():
    header = ts_format.read_ts_header(
        archive('BasicMotions/BasicMotions_TRAIN.ts'))
    assert header.problem_name == 'BasicMotions'
    assert header.num_dimensions == 6 and header.series_length == 100
    assert header.class_labels == ('Standing', 'Running', 'Walking',
                                   'Badminton')
    series = list(
        ts_format.read_ts(archive('BasicMotions/BasicMotions_TRAIN.ts')))
    assert len(series) == 40 and {s.values.shape for s in series} == {(100, 6)}
    assert {s.label for s in series} == set(header.class_labels)


@needs_archive
def test_arrowhead_absent_tags_take_defaults():
    # ArrowHead has no @equalLength/@seriesLength, its TEST file no @missing,
    # and a blank line inside the header.
    header = ts_format.read_ts_header(archive('ArrowHead/ArrowHead_TEST.ts'))
    assert header.equal_length and header.series_length is None
    assert not header.missing
    series = list(ts_format.read_ts(archive('ArrowHead/ArrowHead_TRAIN.ts')))
    assert len(series) == 36 and {s.values.shape for s in series} == {(251, 1)}


@needs_archive
def test_unittest_percent_comments_and_repeated_problem_name():
    # UnitTest_TEST.ts opens with '%' comments and has two @problemName lines.
    header = ts_format.read_ts_header(archive('UnitTest/UnitTest_TEST.ts'))
    assert header.problem_name == 'UnitTest'
    series = list(ts_format.read_ts(archive('UnitTest/UnitTest_TEST.ts')))
    assert len(series) == 22


@needs_archive
@pytest.mark.parametrize('relative', CLASSIFICATION_FILES)
def test_every_archive_classification_file_reads(relative):
    header = ts_format.read_ts_header(archive(relative))
    series = list(ts_format.read_ts(archive(relative)))
    assert series
    assert {s.label for s in series} <= set(header.class_labels)
    # All declare @missing false.
    assert all(np.isfinite(s.values).all() for s in series)
    if header.equal_length:
        assert len({len(s.values) for s in series}) == 1


@needs_archive
@pytest.mark.parametrize(
    'relative, line',
    [
        ('Tecator/Tecator_TRAIN.ts', 16),
        ('Covid3Month/Covid3Month_TEST.ts',
         12),  # Lower-case tags: @targetlabel.
    ])
def test_archive_regression_files_are_rejected(relative, line):
    with raises_at(line, 'regression'):
        ts_format.read_ts_header(archive(relative))


# --- .ts parsing --------------------------------------------------------------


def test_missing_values_read_as_nan(tmp_path):
    path = write(tmp_path, ts_text('1,?,3:a', 'NaN,2, nan :b', missing='true'))
    first, second = ts_format.read_ts(path)
    np.testing.assert_array_equal(first.values[:, 0], [1, np.nan, 3])
    np.testing.assert_array_equal(second.values[:, 0], [np.nan, 2, np.nan])
    assert ts_format.read_ts_header(path).missing


def test_comments_blank_lines_crlf_bom_and_tag_case(tmp_path):
    text = ('\ufeff# a comment\r\n\r\n@PROBLEMNAME '
            'Toy\r\n@univariate\tfalse\r\n@EqualLength FALSE\r\n@classlabel '
            'true x y\r\n% another comment\r\n@DATA\r\n\r\n1.5,2:3,4:x\r\n# '
            'comment among the data\r\n5:6:y\r\n')
    path = write(tmp_path, text)
    header = ts_format.read_ts_header(path)
    assert (header.problem_name, header.univariate,
            header.equal_length) == ('Toy', False, False)
    assert header.class_labels == ('x', 'y')
    first, second = ts_format.read_ts(path)
    np.testing.assert_array_equal(first.values, np.float32([[1.5, 3], [2, 4]]))
    assert (second.label, second.values.tolist()) == ('y', [[5, 6]])


def test_unequal_multivariate_without_dimensions_tag_is_inferred(tmp_path):
    path = write(tmp_path, ts_text('1,2,3:4,5,6:a', '7:8:b',
                                   univariate='false'))
    header = ts_format.read_ts_header(path)
    assert header.num_dimensions is None
    shapes = [s.values.shape for s in ts_format.read_ts(path)]
    assert shapes == [(3, 2), (1, 2)]


def test_problem_name_defaults_to_file_stem(tmp_path):
    path = write(tmp_path,
                 ts_text('1:a', problemName=None),
                 name='Stem_TEST.ts')
    assert ts_format.read_ts_header(path).problem_name == 'Stem_TEST'


def test_series_are_yielded_before_a_later_fault(tmp_path):
    path = write(tmp_path, ts_text('1,2:a', '3,x:b'))
    series = ts_format.read_ts(path)
    assert next(series).values.tolist() == [[1], [2]]
    with raises_at(9, "value 2: 'x' is not a number"):
        next(series)


def test_max_length_rejects_longer_series_without_truncating(tmp_path):
    path = write(tmp_path, ts_text('1,2:a', '1,2,3:b'))
    assert len(list(ts_format.read_ts(path, max_length=3))) == 2
    with raises_at(9, 'series toy_TRAIN:1 has length 3, above max_length 2'):
        list(ts_format.read_ts(path, max_length=2))


# Header rows: problemName, timeStamps, missing, univariate, equalLength,
# classLabel
# on lines 1-6, @data on line 7, series from line 8.
@pytest.mark.parametrize(
    'text, line, fragments',
    [
        # Malformed series lines.
        (ts_text('1,abc,3:a'), 8,
         ["dimension 1, value 2: 'abc' is not a number"]),
        (ts_text('1,,3:a'), 8, ["value 2: '' is not a number"]),
        (ts_text('1,2:a', '(0,1),(1,2):a'), 9, ["'(0' is not a number"]),
        (ts_text('1,inf:a'), 8, ["'inf' is infinite or too large for float32"]),
        (ts_text('1e39:a'), 8, ['too large for float32']),
        (ts_text('1,2:c'), 8,
         ["label 'c' is not declared in @classLabel (a b)"]),
        (ts_text('1,2:'), 8, ['no class label']),
        (ts_text('1,2'), 8, ['no class label']),
        (ts_text('1,2:3:a'), 8,
         ['2 dimensions, expected 1 (from @univariate true']),
        (ts_text('1:2:a', '1:2:3:a', univariate='false'), 9,
         ['3 dimensions, expected 2 (from the first series, line 8)']),
        (ts_text('1:2:a', univariate='false', dimensions='3'), 9,
         ['2 dimensions, expected 3 (from @dimensions)']),
        (ts_text('1,2:3:a', univariate='false'), 8,
         ['different lengths (dimension 1: 2, dimension 2: 1)']),
        (ts_text('1,2::a',
                 univariate='false'), 8, ['dimension 2 has no values']),
        # Lengths against @equalLength / @seriesLength.
        (ts_text('1,2,3:a', equalLength='true', seriesLength='2'), 9,
         ['series of length 3', 'length is 2 (from @seriesLength)']),
        (ts_text('1:a', equalLength='true',
                 seriesLength='2'), 9, ['series of length 1']),
        (ts_text('1,2:a', '1,2:b', '1:a', equalLength='true'), 10,
         ['length is 2 (from the first series, line 8)']),
        # Header faults.
        (ts_text('1:a', univariate='yes'), 4,
         ['@univariate needs "true" or "false", got \'yes\'']),
        (ts_text('1:a', missing=''), 3, ['@missing needs "true" or "false"']),
        (ts_text('1:a', seriesLength='ten'), 7,
         ["@seriesLength needs a positive whole number, got 'ten'"]),
        (ts_text('1:a', seriesLength='0'), 7, ['positive whole number']),
        (ts_text('1:a', seriesLength='²'), 7, ['positive whole number']),
        (ts_text('1:a', univariate='false',
                 dimensions='-2'), 7, ['positive whole number']),
        (ts_text('1:a', dimensions='3'), 7,
         ['@dimensions 3 contradicts '
          '@univariate true']),
        (ts_text('1:a', classLabel='false'), 6,
         ['@classLabel false', 'classification needs']),
        (ts_text('1:a', classLabel='true'), 6,
         ['"true" followed by the class '
          'labels']),
        (ts_text('1:a', classLabel='maybe a b'), 6,
         ['"true" followed by the '
          'class labels']),
        (ts_text('1:a', classLabel='true a b a'), 6, ['lists a label twice']),
        (ts_text('1:a',
                 classLabel=None), 6, ['no @classLabel tag before @data']),
        (ts_text('1:a', targetLabel='true'), 7, ['regression']),
        (ts_text('1:a', targetLabel='maybe'), 7,
         ['@targetLabel needs "true" or '
          '"false"']),
        (ts_text('(0,1):a',
                 timeStamps='true'), 2, ['timestamps are not supported']),
        (ts_text('1:a',
                 seriesLenght='2'), 7, ["unknown header tag '@seriesLenght'"]),
        (ts_text('1:a', problemName=''), 1, ['@problemName needs a name']),
        ('@problemName Toy\n@univariate true\n'
         '@UNIVARIATE false\n@classLabel true a\n@data\n', 3,
         ['@UNIVARIATE repeats line 2 with a different value']),
        ('@problemName Toy\n1,2:a\n@classLabel true a\n@data\n', 2,
         ["data before @data: '1,2:a'"]),
        ('@problemName Toy\n@classLabel true a\n@data now\n1:a\n', 3,
         ['@data takes no value']),
        (ts_text('1:a') + '@missing true\n', 9,
         ["header tag '@missing' after @data"]),
        (ts_text(), None, ['no series after @data (line 7)']),
        ('@problemName Toy\n@classLabel true a\n1:a\n', 3,
         ['data before @data']),
        ('@problemName Toy\n@classLabel true a\n', None, ['no @data line']),
        ('', None, ['the file is empty']),
        ('# only\n\n% comments\n', None,
         ['the file is empty (or only comments)']),
    ])
def test_malformed_ts_raises_with_line_and_reason(tmp_path, text, line,
                                                  fragments):
    path = write(tmp_path, text)
    with raises_at(line, *fragments):
        list(ts_format.read_ts(path))


def test_equal_length_is_the_default_and_checked(tmp_path):
    path = write(tmp_path, ts_text('1,2:a', '1,2,3:b', equalLength=None))
    assert ts_format.read_ts_header(path).equal_length
    with raises_at(8, 'the default when absent',
                   'from the first series, line 7'):
        list(ts_format.read_ts(path))


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / 'latin1.ts'
    path.write_bytes(ts_text('1:a').encode() + b'# caf\xe9\n')
    with raises_at(9, 'not UTF-8 text'):
        list(ts_format.read_ts(str(path)))
    with raises_at(None, 'file not found'):
        ts_format.read_ts_header(str(tmp_path / 'absent.ts'))
    with raises_at(None, 'is a folder'):
        ts_format.read_ts_header(str(tmp_path))


def test_error_names_the_file_and_line_in_its_message(tmp_path):
    path = write(tmp_path, ts_text('1,2:c'))
    with pytest.raises(InputDataError) as info:
        list(ts_format.read_ts(path))
    assert str(info.value).startswith(f'{path}:8: label ')
    assert pickle.loads(pickle.dumps(info.value)).line == 8


# --- find_ts_pair -------------------------------------------------------------


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text('')
    return str(folder)


@needs_archive
def test_find_ts_pair_forms_on_the_archive():
    folder = archive('JapaneseVowels')
    expected = (os.path.join(folder, 'JapaneseVowels_TRAIN.ts'),
                os.path.join(folder, 'JapaneseVowels_TEST.ts'))
    assert ts_format.find_ts_pair(folder) == expected
    assert ts_format.find_ts_pair(os.path.join(folder,
                                               'JapaneseVowels')) == expected
    assert ts_format.find_ts_pair(expected[0]) == expected
    assert ts_format.find_ts_pair(expected[1]) == expected


def test_find_ts_pair_folder_ignores_other_files(tmp_path):
    folder = _touch(tmp_path / 'p', 'P_TRAIN.ts', 'P_TEST.ts', 'README.md',
                    'Q_TRAIN.ts')
    assert ts_format.find_ts_pair(folder) == (os.path.join(
        folder, 'P_TRAIN.ts'), os.path.join(folder, 'P_TEST.ts'))


def test_find_ts_pair_errors(tmp_path):
    with raises_at(None, 'no <NAME>_TRAIN.ts and <NAME>_TEST.ts pair',
                   'found: none'):
        ts_format.find_ts_pair(_touch(tmp_path / 'empty'))
    with raises_at(None, 'found: Half_TRAIN.ts'):
        ts_format.find_ts_pair(_touch(tmp_path / 'half', 'Half_TRAIN.ts'))
    two = _touch(tmp_path / 'two', 'A_TRAIN.ts', 'A_TEST.ts', 'B_TRAIN.ts',
                 'B_TEST.ts')
    with raises_at(None, 'several .ts pairs in this folder (A, B)'):
        ts_format.find_ts_pair(two)
    assert (ts_format.find_ts_pair(os.path.join(two, 'B'))[1] == os.path.join(
        two, 'B_TEST.ts'))
    half = str(tmp_path / 'half' / 'Half')
    with raises_at(None, f'{half}_TEST.ts not found'):
        ts_format.find_ts_pair(half + '_TRAIN.ts')
    with raises_at(None, f'{half}_TEST.ts not found'):
        ts_format.find_ts_pair(half)
    with raises_at(None, 'not found'):
        ts_format.find_ts_pair(str(tmp_path / 'nowhere' / 'X'))
    odd = _touch(tmp_path / 'odd', 'odd.ts')
    with raises_at(None, 'not named <NAME>_TRAIN.ts or <NAME>_TEST.ts'):
        ts_format.find_ts_pair(os.path.join(odd, 'odd.ts'))


# --- Long CSV -----------------------------------------------------------------


def test_long_csv_shuffled_interleaved_rows_are_sorted_by_time(tmp_path):
    path = write(tmp_path, ('series_id,time,x,label,y\n'
                            's2,1,20.5,dog,-1\n'
                            's1,2,3,cat,30\n'
                            's1,0,1,cat,10\n'
                            '\n'
                            's2,0,10.25,dog,-2\n'
                            's1,1,2,cat,20\n'),
                 name='long.csv')
    # In order of first appearance.
    s2, s1 = long_csv_format.read_long_csv(path)
    assert ((s2.series_id, s2.label, s1.series_id, s1.label) == ('s2', 'dog',
                                                                 's1', 'cat'))
    assert s1.values.dtype == np.float32
    np.testing.assert_array_equal(s1.values, [[1, 10], [2, 20], [3, 30]])
    np.testing.assert_array_equal(s2.values, [[10.25, -2], [20.5, -1]])


def test_long_csv_missing_cells_are_nan(tmp_path):
    path = write(tmp_path, 'series_id,time,a,b,label\n'
                 'k,0,,?,z\nk,1,NaN,nan,z\nk,2," 4 ",5,z\n',
                 name='m.csv')
    (series,) = long_csv_format.read_long_csv(path)
    np.testing.assert_array_equal(series.values,
                                  [[np.nan, np.nan], [np.nan, np.nan], [4, 5]])


def test_long_csv_named_columns_gaps_and_float_times(tmp_path):
    path = write(tmp_path,
                 'id,t,noise,b,a,y\nq,5.0,x,2,1,u\nq,1,x,4,3,u\nq,-3,x,6,5,u\n',
                 name='n.csv')
    (series,) = long_csv_format.read_long_csv(path,
                                              id_column='id',
                                              time_column='t',
                                              label_column='y',
                                              channel_columns=['a', 'b'])
    np.testing.assert_array_equal(series.values, [[5, 6], [3, 4], [1, 2]])
    assert long_csv_format.class_labels_of_csv(path, label_column='y') == ('u',)


def test_class_labels_of_csv_sorted_unique(tmp_path):
    path = write(tmp_path,
                 'series_id,time,v,label\na,0,1,b\na,1,1,b\nc,0,1,10\n'
                 'd,0,1,2\n',
                 name='l.csv')
    assert long_csv_format.class_labels_of_csv(path) == ('10', '2', 'b')


HEADER = 'series_id,time,v,label\n'


@pytest.mark.parametrize('text, kwargs, line, fragments', [
    ('id,time,v,label\na,0,1,x\n', {}, 1, [
        "no column 'series_id' in the header row ['id', 'time', 'v', 'label']",
        'rename the column'
    ]),
    ('series_id,t,v,label\na,0,1,x\n', {}, 1,
     ["no column 'time'", 'rename the column']),
    ('series_id,time,v,class\na,0,1,x\n', {}, 1,
     ["no column 'label'", 'rename the column']),
    (HEADER + 'a,0,1,x\n', {
        'channel_columns': ['v', 'w']
    }, 1, ["no column 'w'"]),
    ('series_id,time,label\na,0,x\n', {}, 1, ['no channel columns']),
    ('series_id,time,v,v,label\n', {}, 1, ["repeats columns ['v']"]),
    ('', {}, 1, ['the file is empty']),
    ('\nseries_id,time,v,label\n', {}, 1, ['the first line is blank']),
    (HEADER, {}, None, ['no data rows after the header row']),
    (HEADER + 'a,0,1,x\na,1,one,x\n', {}, 3,
     ["column 'v': 'one' is not a "
      "number"]),
    (HEADER + 'a,0,-inf,x\n', {}, 2, ["column 'v': '-inf' is infinite"]),
    (HEADER + 'a,1.5,1,x\n', {}, 2,
     ["time index '1.5' in column 'time' is "
      "not a whole number"]),
    (HEADER + 'a,,1,x\n', {}, 2, ["time index '' in column 'time'"]),
    (HEADER + 'a,0,1,x\nb,0,1,x\na,0,2,x\n', {}, 4,
     ["series 'a' has time 0 twice (lines 2 and 4)"]),
    (HEADER + 'a,0,1,x\nb,0,1,y\na,1,2,y\n', {}, 4,
     ["series 'a' has label 'y' here but 'x' on line 2"]),
    (HEADER + 'a,0,1,x\na,1,2\n', {}, 3,
     ['3 cells, but the header row has 4 '
      'columns']),
    (HEADER + 'a,0,1,x,extra\n', {}, 2, ['5 cells']),
    (HEADER + ' ,0,1,x\n', {}, 2, ["empty 'series_id' cell"]),
    (HEADER + 'a,0,1,x\nb,0,1\r2,x\n', {}, 3,
     ['malformed CSV: new-line '
      'character']),
    (HEADER + 'a,0,1,x\nb,0,1,x\0\n', {}, 3,
     ['malformed CSV: line contains NUL']),
    (HEADER + 'a,0,1,\n', {}, 2, ["empty 'label' cell"]),
])
def test_malformed_csv_raises_with_line_and_reason(tmp_path, text, kwargs, line,
                                                   fragments):
    path = write(tmp_path, text, name='bad.csv')
    with raises_at(line, *fragments):
        list(long_csv_format.read_long_csv(path, **kwargs))


def test_csv_line_numbers_count_quoted_multiline_cells(tmp_path):
    path = write(tmp_path, HEADER + '"a\nb",0,1,x\nc,0,oops,x\n', name='q.csv')
    with raises_at(4, "'oops' is not a number"):
        list(long_csv_format.read_long_csv(path))


def test_class_labels_of_csv_errors(tmp_path):
    with raises_at(1, "no column 'label'"):
        long_csv_format.class_labels_of_csv(
            write(tmp_path, 'series_id,time,v\na,0,1\n', name='a.csv'))
    with raises_at(3, "empty 'label' cell"):
        long_csv_format.class_labels_of_csv(
            write(tmp_path, HEADER + 'a,0,1,x\na,1,1,\n', name='b.csv'))
    with raises_at(None, 'file not found'):
        long_csv_format.class_labels_of_csv(str(tmp_path / 'absent.csv'))


def test_channel_columns_must_not_name_key_columns(tmp_path):
    path = write(tmp_path, HEADER + 'a,0,1,x\n', name='k.csv')
    with pytest.raises(ValueError, match='id/time/label'):
        list(long_csv_format.read_long_csv(path, channel_columns=['v', 'time']))


# --- Writers and round trips --------------------------------------------------


def _sequences():
    rng = np.random.default_rng(0)
    out = []
    for i, (length, label) in enumerate([(5, 'up'), (3, 'down'), (1, 'up')]):
        values = (rng.normal(size=(length, 2)).astype(np.float32) *
                  10.0**(i * 3 - 3))
        out.append(labeled_sequences.LabeledSequence(f'seq{i}', values, label))
    out[0].values[2, 1] = np.nan
    return out


def _assert_same(read, written, ids=None):
    assert [s.label for s in read] == [s.label for s in written]
    assert ([s.series_id for s in read] == (ids or
                                            [s.series_id for s in written]))
    for r, w in zip(read, written):
        assert r.values.dtype == np.float32
        # Exact; NaN == NaN here.
        np.testing.assert_array_equal(r.values, w.values)


def test_ts_round_trip_multivariate_unequal_with_missing(tmp_path):
    written = _sequences()
    path = str(tmp_path / 'rt_TRAIN.ts')
    ts_format.write_ts(path, iter(written), 'RoundTrip', ['up', 'down'])
    header = ts_format.read_ts_header(path)
    assert header == ts_format.TsHeader(problem_name='RoundTrip',
                                        univariate=False,
                                        equal_length=False,
                                        series_length=None,
                                        num_dimensions=2,
                                        class_labels=('up', 'down'),
                                        missing=True,
                                        timestamps=False)
    _assert_same(list(ts_format.read_ts(path)), written,
                 ['rt_TRAIN:0', 'rt_TRAIN:1', 'rt_TRAIN:2'])


def test_ts_round_trip_equal_length_univariate(tmp_path):
    written = [
        labeled_sequences.LabeledSequence(str(i),
                                          np.float32([[0.1], [i], [-1e-7]]),
                                          'c') for i in range(3)
    ]
    path = str(tmp_path / 'eq.ts')
    ts_format.write_ts(path, written, 'Eq', ['c'])
    header = ts_format.read_ts_header(path)
    assert (header.univariate, header.equal_length,
            header.series_length) == (True, True, 3)
    assert not header.missing
    last_line = (tmp_path / 'eq.ts').read_text().splitlines()[-1]
    assert last_line == '0.1,2.0,-1e-07:c'
    _assert_same(list(ts_format.read_ts(path)), written,
                 ['eq:0', 'eq:1', 'eq:2'])


@needs_archive
def test_ts_round_trip_of_an_archive_file(tmp_path):
    original = list(
        ts_format.read_ts(archive('JapaneseVowels/JapaneseVowels_TRAIN.ts')))
    path = str(tmp_path / 'JapaneseVowels_TRAIN.ts')
    ts_format.write_ts(path, original, 'JapaneseVowels', list('123456789'))
    _assert_same(list(ts_format.read_ts(path)), original)


def test_long_csv_round_trip(tmp_path):
    written = _sequences()
    path = str(tmp_path / 'rt.csv')
    long_csv_format.write_long_csv(path, iter(written))
    assert (tmp_path / 'rt.csv').read_text().splitlines()[0] == (
        'series_id,time,channel_0,channel_1,label')
    _assert_same(list(long_csv_format.read_long_csv(path)), written)
    assert long_csv_format.class_labels_of_csv(path) == ('down', 'up')


def test_csv_round_trip_quotes_awkward_ids(tmp_path):
    written = [
        labeled_sequences.LabeledSequence('a,"b"', np.float32([[1], [2]]),
                                          'x y')
    ]
    path = str(tmp_path / 'odd.csv')
    long_csv_format.write_long_csv(path, written)
    _assert_same(list(long_csv_format.read_long_csv(path)), written)


def _one(label='a', shape=(2, 1), series_id='s'):
    return labeled_sequences.LabeledSequence(series_id,
                                             np.zeros(shape, np.float32), label)


@pytest.mark.parametrize('sequences, labels, message', [
    ([], ['a'], 'no sequences'),
    ([_one('b')], ['a'], "labels ['b'] are not in class_labels"),
    ([_one('a b')], ['a b'], 'without whitespace'),
    ([_one('a:b')], ['a:b'], 'without whitespace or ":"'),
    ([_one()], ['a', 'a'], 'duplicates'),
    ([_one(), _one(shape=(2, 3), series_id='t')], ['a'
                                                  ], "'t' has shape (2, 3)"),
    ([_one(shape=(0, 1))], ['a'], "'s' is empty"),
    ([_one(shape=(3,))], ['a'], 'expected [length, 3]'),
])
def test_write_ts_rejects_what_it_cannot_write(tmp_path, sequences, labels,
                                               message):
    with pytest.raises(ValueError) as info:
        ts_format.write_ts(str(tmp_path / 'w.ts'), sequences, 'W', labels)
    assert message in str(info.value)
