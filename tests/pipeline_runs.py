"""What the end-to-end modules share (tests/test_pipeline_e2e.py, the
convnet's runs; tests/test_pipeline_e2e_sequences.py, the RNN's;
tests/test_pipeline_e2e_convolutional.py, the FCN's and InceptionTime's):
`python -m pipeline run` as a user runs it, a model server for the models a
module's runs pushed, and the served answers compared with the SavedModel's
own."""

import base64
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from common import signatures
from formats import ts_format
from serving import client as client_lib
from tests.serving import server_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pipeline(*args):
    """Runs the CLI; returns (summary dict or None, stderr)."""
    process = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'run', *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # Bounds a hang only.
        check=False)
    lines = [
        line for line in process.stdout.splitlines() if line.startswith('{')
    ]
    if process.returncode != 0 or not lines:
        return None, process.stderr
    return json.loads(lines[-1]), process.stderr


def test_sequences(data, count=6):
    """The first `count` test sequences of tests/datasets.py's .ts set."""
    return list(ts_format.read_ts(os.path.join(data, 'Toy_TEST.ts')))[:count]


def padded_sequences(sequences):
    """The serving_sequence inputs: values zero-padded to the longest."""
    longest = max(len(s.values) for s in sequences)
    padded = np.zeros((len(sequences), longest, 3), np.float32)
    for i, s in enumerate(sequences):
        padded[i, :len(s.values)] = s.values
    return {
        signatures.SEQUENCE_INPUT:
            padded,
        signatures.LENGTH_INPUT:
            np.array([len(s.values) for s in sequences], np.int64)
    }


def rest_value(value):
    """One instance's input as TF Serving's REST API takes it."""
    if isinstance(value, bytes):
        return {'b64': base64.b64encode(value).decode()}
    return value.tolist()


@contextlib.contextmanager
def pinned_server(workdir, summaries):
    """One model server for the models the runs `summaries` pushed, each
    pinned to the version its run pushed (later runs push more)."""
    entries = []
    for summary in summaries:
        base, version = os.path.split(summary['pushed_model'])
        entries.append(f"""
          config {{
            name: "{os.path.basename(base)}"
            base_path: "{base}"
            model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: {version} }} }}
          }}""")
    config = workdir / 'models.config'
    config.write_text('model_config_list {%s\n}\n' % ''.join(entries))
    server = server_utils.start_model_server(workdir,
                                             [f'--model_config_file={config}'],
                                             timeout=600)
    try:
        yield server
    finally:
        server.stop()


def assert_served_as_in_process(server, pushed, signature, inputs, examples):
    """The pushed model answers over gRPC (Predict by `signature` on
    `inputs`, numpy arrays by input name; Classify on `examples`) and REST
    (predict) from `server` as it does in process, to float tolerance."""
    name = os.path.basename(os.path.dirname(pushed))
    model = tf.saved_model.load(pushed)
    own = model.signatures[signature](**{
        key: tf.constant(value) for key, value in inputs.items()
    })[signatures.SCORES_OUTPUT].numpy()
    own_default = model.signatures[signatures.DEFAULT_SIGNATURE](
        inputs=tf.constant(examples))
    classes = [
        n.decode() for n in own_default[signatures.CLASSES_OUTPUT].numpy()[0]
    ]
    with client_lib.ModelServerClient(server.grpc_address) as client:
        client.wait_until_available(name, timeout=600)
        outputs = client.send_predict(
            client_lib.build_predict_request(name, inputs, signature))
        classified = client.send_classify(
            client_lib.build_classification_request(
                name, examples, signatures.DEFAULT_SIGNATURE),
            top_k=None)
    code, body = server.http(
        'POST', f'/v1/models/{name}:predict', {
            'signature_name':
                signature,
            'instances': [{
                key: rest_value(value[i]) for key, value in inputs.items()
            } for i in range(len(own))]
        })
    np.testing.assert_allclose(outputs[signatures.SCORES_OUTPUT],
                               own,
                               rtol=1e-5,
                               atol=1e-6)
    assert code == 200, body
    np.testing.assert_allclose(
        [p[signatures.SCORES_OUTPUT] for p in body['predictions']],
        own,
        rtol=1e-5,
        atol=1e-6)
    np.testing.assert_allclose(
        [[dict(p.pairs())[n] for n in classes] for p in classified],
        own_default[signatures.SCORES_OUTPUT],
        rtol=1e-5,
        atol=1e-6)
