"""A corpus of bad input, one case per format and fault, each run through the
command line: exit 2, one line naming the file (and line or record) and the
fault, nothing pushed, the home's ML Metadata still readable.

The corpus is written by code into a temporary folder. Most faults are caught
before the pipeline starts (data_source.detect and class_check), so most cases
run `pipeline.cli.main` in this process, the same code path as
`python -m pipeline run` without the import; a few, among them one caught
inside ExampleGen on Beam, run the real subprocess.
"""

import glob
import gzip
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from PIL import Image

from common import names
from components.example_gen import data_source
from formats import image_formats
from formats import long_csv_format
from pipeline import cli
from tests import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TS_HEADER = ('@problemName Toy\n@univariate true\n@classLabel true a b c\n'
             '@data\n')
CSV_HEADER = 'series_id,time,v,label\n'


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text)
    return path


def _ts_pair(d, train_rows, test_rows, header=TS_HEADER):
    train = _write(os.path.join(d, 'Toy_TRAIN.ts'), header + train_rows)
    test = _write(os.path.join(d, 'Toy_TEST.ts'), header + test_rows)
    return train, test


GOOD_TS_ROWS = '1,2,3:a\n4,5,6:b\n7,8,9:c\n'


def _csv_rows(labels):
    return ''.join(
        f's{i},{t},{i + t},{label}\n' for i, label in enumerate(labels)
        for t in range(3))


# Each builder writes a case under `d` and returns (model, --data, the file
# the error must name, its line or None, a fragment of the reason).
def empty_folder(d):
    os.makedirs(os.path.join(d, 'data'))
    return 'convnet', os.path.join(d, 'data'), os.path.join(d, 'data'), \
        None, 'no class folders'


def missing_path(d):
    path = os.path.join(d, 'absent')
    return 'rnn', path, path, None, 'not found'


def zero_byte_image(d):
    root = datasets.write_class_folders(os.path.join(d, 'data'), ['cat', 'dog'],
                                        per_class=2)
    path = _write(os.path.join(root, 'train', 'dog', 'empty.png'), '')
    return 'convnet', root, path, None, 'is empty (0 bytes)'


def corrupt_image(d):
    root = datasets.write_class_folders(os.path.join(d, 'data'), ['cat', 'dog'],
                                        per_class=2)
    path = os.path.join(root, 'train', 'cat', 'broken.png')
    with open(path, 'wb') as f:
        f.write(datasets.png_bytes(np.zeros((9, 9), np.uint8))[:40])
    return 'convnet', root, path, None, 'is not an image Pillow can read'


def unlabelled_corrupt_image(d):
    root = datasets.write_class_folders(os.path.join(d, 'data'), ['cat', 'dog'],
                                        per_class=2)
    folder = os.path.join(root, 'train', 'cat')
    # The first file in order: the one read before a run starts.
    path = os.path.join(folder, '0-broken.png')
    with open(path, 'wb') as f:
        f.write(datasets.png_bytes(np.zeros((9, 9), np.uint8))[:40])
    return 'pretrain', folder, path, None, 'is not an image Pillow can read'


def unlabelled_no_images(d):
    path = os.path.dirname(_write(os.path.join(d, 'data', 'notes.txt'), 'x'))
    return 'pretrain', path, path, None, 'holds no image files'


def truncated_idx(d):
    root = datasets.write_idx_dataset(os.path.join(d, 'data'),
                                      train=20,
                                      test=10)
    path = os.path.join(root, 't10k-images-idx3-ubyte.gz')
    with gzip.open(path, 'rb') as f:
        data = f.read()
    with gzip.open(path, 'wb') as f:
        f.write(data[:-100])
    return 'convnet', root, path, None, 'is truncated'


def idx_label_out_of_range(d):
    root = datasets.write_idx_dataset(os.path.join(d, 'data'),
                                      train=20,
                                      test=10,
                                      num_classes=3)
    _write(os.path.join(root, 'class_names.txt'), 'a\nb\n')
    return 'convnet', root, os.path.join(root, 'train-labels-idx1-ubyte.gz'), \
        None, 'has label 2 at index 2, outside [0, 2)'


def idx_stray_label(d):
    root = datasets.write_idx_dataset(os.path.join(d, 'data'),
                                      train=20,
                                      test=10,
                                      num_classes=10)
    path = os.path.join(root, 'train-labels-idx1-ubyte.gz')
    labels = np.arange(20) % 10
    labels[13] = 200
    datasets.write_idx(path, labels)
    return 'convnet', root, path, None, 'label 200 at record 13'


def idx_test_label_unseen(d):
    root = datasets.write_idx_dataset(os.path.join(d, 'data'),
                                      train=20,
                                      test=10,
                                      num_classes=3)
    _write(os.path.join(root, 'class_names.txt'), 'a\nb\nc\nd\n')
    path = os.path.join(root, 't10k-labels-idx1-ubyte.gz')
    datasets.write_idx(path, np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2]))
    return 'convnet', root, path, None, "record 3 has label 'd', which no " \
        'training record has'


def one_class_folder(d):
    root = datasets.write_class_folders(os.path.join(d, 'data'), ['cat'],
                                        per_class=2,
                                        splits=('train',))
    return 'convnet', root, root, None, "1 class ('cat') in this data set"


def ts_one_class_in_train(d):
    train, _ = _ts_pair(d, '1,2,3:a\n4,5,6:a\n', GOOD_TS_ROWS)
    return 'rnn', d, train, None, "1 class ('a') in the training records"


def ts_bad_header(d):
    train, _ = _ts_pair(d,
                        GOOD_TS_ROWS,
                        GOOD_TS_ROWS,
                        header=TS_HEADER.replace('true a b c', 'maybe'))
    return 'rnn', d, train, 3, '@classLabel'


def ts_bad_row(d):
    train, _ = _ts_pair(d, GOOD_TS_ROWS + '1,2,3\n', GOOD_TS_ROWS)
    return 'rnn', d, train, 8, 'no class label'


def ts_bad_value(d):
    _, test = _ts_pair(d, GOOD_TS_ROWS, '1,2,3:a\n1,x,3:b\n')
    return 'rnn', d, test, 6, "dimension 1, value 2: 'x' is not a number"


def ts_test_label_unseen(d):
    _, test = _ts_pair(d, '1,2,3:a\n4,5,6:b\n', GOOD_TS_ROWS)
    return 'rnn', d, test, None, "series 'Toy_TEST:2' has label 'c', which " \
        'no training record has'


def csv_missing_column(d):
    path = _write(os.path.join(d, 'data.csv'),
                  'series_id,time,v,class\ns0,0,1,x\n')
    return 'rnn', path, path, 1, "no column 'label'"


def csv_non_numeric_time(d):
    path = _write(os.path.join(d, 'data.csv'),
                  CSV_HEADER + _csv_rows('xyxy') + 's9,noon,1,x\n')
    return 'rnn', path, path, 14, "time index 'noon'"


def csv_duplicate_time(d):
    path = _write(os.path.join(d, 'data.csv'),
                  CSV_HEADER + _csv_rows('xyxy') + 's1,2,5,y\n')
    return 'rnn', path, path, 14, "series 's1' has time 2 twice"


def csv_test_label_unseen(d):
    _write(os.path.join(d, 'data', 'train.csv'), CSV_HEADER + _csv_rows('xy'))
    path = _write(os.path.join(d, 'data', 'test.csv'),
                  CSV_HEADER + _csv_rows('xyz'))
    return 'rnn', os.path.join(d, 'data'), path, None, \
        "series 's2' has label 'z', which no training record has"


IN_PROCESS = [
    empty_folder, missing_path, zero_byte_image, unlabelled_corrupt_image,
    unlabelled_no_images, truncated_idx, idx_label_out_of_range,
    idx_test_label_unseen, ts_one_class_in_train, ts_bad_header, ts_bad_row,
    ts_bad_value, ts_test_label_unseen, csv_missing_column,
    csv_non_numeric_time, csv_duplicate_time, csv_test_label_unseen
]
SUBPROCESS = [corrupt_image, idx_stray_label, one_class_folder]


def _check_one_line_naming_the_fault(code, stderr, home, path, line, fragment):
    assert code == cli.EXIT_BAD_DATA, stderr
    errors = [
        line for line in stderr.splitlines() if line.startswith('error: ')
    ]
    assert len(errors) == 1, stderr
    where = f'{path}:{line}: ' if line is not None else f'{path}: '
    assert errors[0].startswith(f'error: {where}'), (errors[0], where)
    assert fragment in errors[0], errors[0]
    assert 'more bad records' not in errors[0]
    assert 'Traceback' not in stderr, stderr
    serving = os.path.join(home, 'serving')
    assert not os.path.isdir(serving) or not any(
        os.listdir(os.path.join(serving, m)) for m in os.listdir(serving))
    metadata = os.path.join(home, 'metadata.sqlite')
    if os.path.exists(metadata):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = metadata
        store = metadata_store.MetadataStore(config)
        executions = store.get_executions()
        # Nothing got as far as training.
        assert not [e for e in executions if 'Trainer' in e.type], executions
        sqlite3.connect(metadata).execute('PRAGMA integrity_check').fetchall()


@pytest.mark.parametrize('case', IN_PROCESS, ids=lambda c: c.__name__)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    model, data, path, line, fragment = case(str(tmp_path / 'in put'))
    home = str(tmp_path / 'home')
    code = cli.main(['run', '--model', model, '--data', data, '--home', home])
    _check_one_line_naming_the_fault(code,
                                     capsys.readouterr().err, home, path, line,
                                     fragment)


@pytest.mark.parametrize('case', SUBPROCESS, ids=lambda c: c.__name__)
def test_bad_input_through_the_real_command(case, tmp_path):
    model, data, path, line, fragment = case(str(tmp_path / 'in put'))
    home = str(tmp_path / 'home')
    process = subprocess.run([
        sys.executable, '-m', 'pipeline', 'run', '--model', model, '--data',
        data, '--home', home
    ],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             timeout=600,
                             check=False)
    _check_one_line_naming_the_fault(process.returncode, process.stderr, home,
                                     path, line, fragment)


def test_inputs_that_must_work(tmp_path):
    """Mixed image sizes and modes, a BOM, CRLF line ends, spaces in paths."""
    root = str(tmp_path / 'with space')
    images = datasets.write_class_folders(os.path.join(root, 'my images'),
                                          ['cat', 'dog'],
                                          per_class=4)
    for mode, name in (('RGBA', 'a.png'), ('P', 'p.gif'), ('LA', 'la.png')):
        Image.new(mode, (7 + len(name), 5)).save(
            os.path.join(images, 'train', 'dog', name))
    source = data_source.detect(images, names.IMAGES)
    assert source.class_names == ('cat', 'dog')
    files = glob.glob(os.path.join(images, '*', '*', '*'))
    assert len(files) == 19
    for path in files:
        assert image_formats.decode_image_file(path)

    text = '\ufeff' + (CSV_HEADER + _csv_rows('xyxy')).replace('\n', '\r\n')
    csv_path = _write(os.path.join(root, 'my series.csv'), text)
    source = data_source.detect(csv_path, names.SEQUENCES)
    assert source.class_names == ('x', 'y') and source.num_channels == 1
    assert len(list(long_csv_format.read_long_csv(csv_path))) == 4

    ts_dir = os.path.join(root, 'my ts')
    for split in ('TRAIN', 'TEST'):
        _write(os.path.join(ts_dir, f'Toy_{split}.ts'),
               '\ufeff' + (TS_HEADER + GOOD_TS_ROWS).replace('\n', '\r\n'))
    source = data_source.detect(ts_dir, names.SEQUENCES)
    assert source.class_names == ('a', 'b', 'c')
