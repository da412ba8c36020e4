"""Beam's multi_processing mode gives what in_memory gives: the pipeline's
ingest (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator, DataGate,
Transform; bench/scaling.py's driver, each run in its own process) on tiny
IDX data, once per mode, compared statistic by statistic and transformed
example by transformed example."""

import glob
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2

from bench import common
from tests import datasets

# Heavy (tests/conftest.py): two ingests, one on multi-processing Beam.
pytestmark = pytest.mark.heavy(110)

MODES = ('in_memory', 'multi_processing')


@pytest.fixture(scope='module')
def ingests(tmp_path_factory):
    root = tmp_path_factory.mktemp('beam')
    data = datasets.write_idx_dataset(str(root / 'data'), train=120, test=40)
    homes = {}
    for mode in MODES:
        home = str(root / mode)
        started = time.monotonic()
        common.run_json([
            '-m', 'bench.scaling', '--data', data, '--home', home,
            '--beam-arg=--runner=FnApiRunner',
            f'--beam-arg=--direct_running_mode={mode}',
            '--beam-arg=--direct_num_workers=2'
        ],
                        timeout=1800)
        print(f'{mode}: ingest {time.monotonic() - started:.1f} s wall')
        homes[mode] = os.path.join(home, 'pipelines', 'convnet-pipeline')
    return homes


def _statistics(pipeline_root):
    stats = {}
    for path in glob.glob(
            os.path.join(pipeline_root, 'StatisticsGen', 'statistics', '*',
                         'Split-*', 'FeatureStats.pb')):
        proto = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, 'rb') as f:
            proto.ParseFromString(f.read())
        stats[os.path.basename(os.path.dirname(path))] = proto
    return stats


def _transformed(pipeline_root, split):
    files = glob.glob(
        os.path.join(pipeline_root, 'Transform', 'transformed_examples', '*',
                     f'Split-{split}', '*'))
    rows = []
    for record in tf.data.TFRecordDataset(files, 'GZIP'):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        rows.append((feature['label'].int64_list.value[0],
                     tuple(np.round(feature['image'].float_list.value, 4))))
    return sorted(rows)


def test_multi_processing_computes_the_same_statistics(ingests):
    expected, actual = (_statistics(ingests[mode]) for mode in MODES)
    assert sorted(expected) == sorted(actual) == [
        'Split-eval', 'Split-test', 'Split-train'
    ]
    for split, stats in expected.items():
        [want], [got] = stats.datasets, actual[split].datasets
        assert got.num_examples == want.num_examples > 0
        assert sorted(f.path.step[0] for f in got.features) == sorted(
            f.path.step[0] for f in want.features)
        for mine, theirs in zip(sorted(got.features,
                                       key=lambda f: f.path.step[0]),
                                sorted(want.features,
                                       key=lambda f: f.path.step[0]),
                                strict=True):
            assert mine.path == theirs.path
            if theirs.HasField('num_stats'):
                for field in ('mean', 'std_dev', 'min', 'max'):
                    assert getattr(mine.num_stats,
                                   field) == pytest.approx(getattr(
                                       theirs.num_stats, field),
                                                           rel=1e-6)
            assert (mine.num_stats.common_stats.num_non_missing ==
                    theirs.num_stats.common_stats.num_non_missing)
            assert (mine.bytes_stats.common_stats.num_non_missing ==
                    theirs.bytes_stats.common_stats.num_non_missing)


def test_multi_processing_transforms_every_example_alike(ingests):
    for split in ('train', 'eval'):
        expected, actual = (
            _transformed(ingests[mode], split) for mode in MODES)
        assert len(actual) == len(expected) > 0
        assert ([label for label, _ in actual
                ] == [label for label, _ in expected])
        np.testing.assert_allclose([image for _, image in actual],
                                   [image for _, image in expected],
                                   atol=2e-4)
