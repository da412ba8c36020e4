"""End to end, as a user runs it, for the RNN: `python -m pipeline run` on
small `.ts` files, the DataGate stopping bad spans on its home, the served
model's answers. The convolutional sequence families (FCN with a random
search, InceptionTime): tests/test_pipeline_e2e_convolutional.py; the
convnet's runs: tests/test_pipeline_e2e.py (three modules: the two test
workers share them out).
"""

import glob
import html
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_metadata.proto.v0 import schema_pb2

from common import names
from common import signatures
from models import features
from tests import datasets
from tests import pipeline_runs

# Heavy (tests/conftest.py): the RNN and three runs the DataGate stops.
pytestmark = pytest.mark.heavy(115)


def _signature(model, name):
    return model.signatures[name]


CLASS_INDEX = {'a': 0, 'b': 1, 'c': 2}  # write_ts_dataset's classes


@pytest.fixture(scope='module')
def rnn_run(tmp_path_factory):
    """One run of the RNN pipeline on small sequences (the first span of
    its home, whose schema the data-gate tests curate)."""
    root = tmp_path_factory.mktemp('rnn')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    # 15 epochs of two steps, not the smoke profile's 200 steps: the classes
    # differ in their means, learnt in a few steps.
    summary, log = pipeline_runs.run_pipeline('--model', 'rnn', '--data', data,
                                              '--home', home, '--set',
                                              'epochs=15', '--set',
                                              'min_train_steps=0', '--set',
                                              'units=[8]', '--set',
                                              'learning_rate=0.01')
    assert summary is not None, log
    return summary, data, home, log


def test_rnn_run_pushes_a_model_whose_two_signatures_agree(rnn_run):
    summary, data, _, log = rnn_run
    # The classes differ in their means: chance is 1/3, a trained RNN nears 1.
    assert summary['accuracy'] > 0.6, summary
    assert summary['blessed'] is True, log
    # The Trainer's progress reaches the run's stderr (models/progress.py:
    # plain lines, the output being no terminal): each epoch's header,
    # then its end with the eval metrics.
    assert re.search(r'^Epoch 1/[0-9]+$', log, re.M), log
    assert re.search(r'^\S+ - loss: [0-9.]+ - accuracy: [0-9.]+ - val_loss: ',
                     log, re.M), log
    model = tf.saved_model.load(summary['pushed_model'])

    sequences = pipeline_runs.test_sequences(data)
    from_examples = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant([
            features.sequence_example(s.values, CLASS_INDEX[s.label])
            for s in sequences
        ]))
    from_tensors = _signature(model, signatures.SEQUENCE_SIGNATURE)(**{
        key: tf.constant(value)
        for key, value in pipeline_runs.padded_sequences(sequences).items()
    })
    np.testing.assert_allclose(from_examples[signatures.SCORES_OUTPUT],
                               from_tensors[signatures.SCORES_OUTPUT],
                               rtol=1e-5,
                               atol=1e-6)


def test_rnn_export_keeps_cudnns_kernel_for_a_gpu_to_choose(rnn_run):
    """The RNN trained without cuDNN's kernel (no GPU here:
    tests/test_training.py); its SavedModel has it beside the standard one,
    as tf_keras writes it, so a GPU serving it runs cuDNN."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(rnn_run[0]['pushed_model'], 'saved_model.pb'),
              'rb') as f:
        saved.ParseFromString(f.read())
    ops = {
        node.op
        for function in saved.meta_graphs[0].graph_def.library.function
        for node in function.node_def
    }
    assert any(op.startswith('CudnnRNN') for op in ops)
    assert 'While' in ops or 'StatelessWhile' in ops  # The standard kernel.


def test_served_rnn_answers_equal_the_saved_models_own(rnn_run, e2e_server):
    """The RNN's pushed model over gRPC and REST answers as it does in
    process."""
    summary, data, _, _ = rnn_run
    sequences = pipeline_runs.test_sequences(data)
    pipeline_runs.assert_served_as_in_process(
        e2e_server, summary['pushed_model'], signatures.SEQUENCE_SIGNATURE,
        pipeline_runs.padded_sequences(sequences),
        [features.sequence_example(s.values, 0) for s in sequences])


@pytest.fixture(scope='module')
def e2e_server(rnn_run, tmp_path_factory):
    """A model server for the RNN, pinned to its first run's version."""
    with pipeline_runs.pinned_server(tmp_path_factory.mktemp('e2e_server'),
                                     [rnn_run[0]]) as server:
        yield server


def _gate_run(home, data, *flags):
    """A run on `home` that the DataGate is to stop: (exit code, stderr)."""
    process = subprocess.run(
        [
            sys.executable,
            '-m',
            'pipeline',
            'run',
            '--model',
            'rnn',
            '--data',
            data,
            '--home',
            home,
            *flags,
            # Short, should the gate let the span through.
            '--set',
            'epochs=1',
            '--set',
            'min_train_steps=0'
        ],
        cwd=pipeline_runs.REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False)
    return process.returncode, process.stderr


def _assert_stopped_at_the_gate(code, log, home, pushed, *words):
    """Exit 2, the last line names the feature and the anomaly (`words`),
    nothing after the DataGate ran, nothing new pushed; the stopped run's
    report says it failed and why."""
    assert code == 2, log
    last = log.strip().splitlines()[-1]
    assert last.startswith('error: data validation found anomalies: '), log
    assert all(word in last for word in words), last
    assert '] DataGate ...' in log and '] Transform ...' not in log, log
    assert os.listdir(os.path.join(home, 'serving',
                                   'rnn')) == [os.path.basename(pushed)]
    [report] = re.findall(r'\] report: (\S+)$', log, re.M)
    with open(report, encoding='utf-8') as f:
        page = html.unescape(f.read())
    assert 'failed' in page and all(word in page for word in words)


def test_a_span_that_breaks_the_curated_schema_stops_before_transform(
        rnn_run, tmp_path):
    """The first span's schema, curated with the sequence values' domain:
    a later span outside it stops the run at the DataGate."""
    summary, _, home, _ = rnn_run
    # The first run's, named by its execution id.
    inferred = min(glob.glob(
        os.path.join(home, 'pipelines', 'rnn-pipeline', 'SchemaGen', 'schema',
                     '*', 'schema.pbtxt')),
                   key=lambda path: int(path.split(os.sep)[-2]))
    schema = tfdv.load_schema_text(inferred)
    # write_ts_dataset's values lie within [-10, 15].
    tfdv.get_feature(schema, names.SEQUENCE_KEY).float_domain.CopyFrom(
        schema_pb2.FloatDomain(min=-20.0, max=20.0))
    curated = str(tmp_path / 'schema.pbtxt')
    tfdv.write_schema_text(schema, curated)
    data = datasets.write_ts_dataset(str(tmp_path / 'data'),
                                     train=30,
                                     test=12,
                                     offset=100.0)
    code, log = _gate_run(home, data, '--set', f'schema_path={curated}')
    _assert_stopped_at_the_gate(code, log, home, summary['pushed_model'],
                                f"feature '{names.SEQUENCE_KEY}'",
                                'Unexpectedly high value')


def test_stop_on_drift_stops_a_drifted_span_before_transform(rnn_run, tmp_path):
    """Values shifted far from the last passed span's: with stop_on_drift
    the run stops at the DataGate, naming the drifted feature. The stopped
    span does not become the baseline: the same span again is stopped
    again."""
    summary, _, home, _ = rnn_run
    data = datasets.write_ts_dataset(str(tmp_path / 'data'),
                                     train=60,
                                     test=30,
                                     offset=30.0)
    for _ in range(2):
        code, log = _gate_run(home, data, '--set', 'stop_on_drift=true')
        _assert_stopped_at_the_gate(code, log, home, summary['pushed_model'],
                                    f"feature '{names.SEQUENCE_KEY}'",
                                    'Jensen-Shannon')
