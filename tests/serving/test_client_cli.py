"""Tests for serving/client.py, serving/cli.py and the serving/deploy files.

One real model server subprocess (`python -m serving serve`, started by the
`start_server` fixture of tests/serving/conftest.py) per module serves two
tiny SavedModels, `convnet` (images) and `rnn` (sequences), from a
models.config made from serving/deploy/config/models.config by
`local-config`. The CLI runs as a subprocess for the main flows and in
process for the error cases (cheaper: no TensorFlow import per call).
"""

import glob
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

from common import signatures
from serving import cli
from serving import client as client_lib
from tests.serving import server_utils
from tests.tiny_models import IMAGE_CLASSES
from tests.tiny_models import SEQUENCE_CLASSES
from tests.tiny_models import image_examples
from tests.tiny_models import png_bytes
from tests.tiny_models import save_image_model
from tests.tiny_models import save_sequence_model

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, 'serving', 'deploy')
CONFIG_DIR = os.path.join(DEPLOY, 'config')

# --- The shared server -------------------------------------------------------


@pytest.fixture(scope='module')
def server(tmp_path_factory, start_server):
    """Serves convnet and rnn as the deploy models.config says: HOST:PORT."""
    tmp = tmp_path_factory.mktemp('served')
    models_dir = tmp / 'serving'
    save_image_model(str(models_dir / 'convnet' / '1'))
    save_sequence_model(str(models_dir / 'rnn' / '1'))
    config = tmp / 'models.config'
    assert cli.main([
        'local-config',
        os.path.join(CONFIG_DIR, 'models.config'), '--models-dir',
        str(models_dir), '--output',
        str(config)
    ]) == 0
    process = start_server([
        f'--model_config_file={config}', '--enable_batching',
        f'--batching_parameters_file={CONFIG_DIR}/batching.config',
        '--max_num_load_retries=0'
    ],
                           rest=False)
    return process.grpc_address


# `python -m serving ARGS`, then a line naming the TensorFlow modules it
# loaded, if any: the client must answer without importing TensorFlow.
_CLI_REPORTING_IMPORTS = """
import sys
from serving.__main__ import main
try:
    code = main(sys.argv[1:])
finally:
    loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')
    if loaded:
        print('loaded TensorFlow:', *loaded[:3], file=sys.stderr)
sys.exit(code)
"""


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', _CLI_REPORTING_IMPORTS, *args],
                          capture_output=True,
                          text=True,
                          env=server_utils.server_env(),
                          cwd=ROOT,
                          timeout=120,
                          check=False)


def _assert_answered_without_tensorflow(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    assert 'loaded TensorFlow' not in result.stderr, result.stderr


# --- Input files -------------------------------------------------------------


@pytest.fixture(scope='module')
def image_files(tmp_path_factory):
    """A dark PNG, a light JPEG and a light BMP (re-encoded by the CLI)."""
    tmp = tmp_path_factory.mktemp('images')
    paths = []
    for name, shade, fmt in (('dark.png', 0, 'PNG'), ('light.jpg', 255, 'JPEG'),
                             ('light.bmp', 250, 'BMP')):
        path = tmp / name
        Image.new('L', (8, 8), shade).save(path, format=fmt)
        paths.append(str(path))
    return paths


TS_TEXT = """\
# Two 2-channel series of different lengths.
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true down flat up
@data
2.0,2.5,3.0:1.5,2.0,2.5:up
-2.0,-2.0,-2.5,-3.0:-1.0,-2.0,-1.5,-2.0:down
"""

CSV_TEXT = """\
series_id,time,label,c0,c1
a,0,flat,0.0,0.1
a,1,flat,-0.1,0.0
b,0,up,3.0,2.0
b,1,up,2.5,2.0
b,2,up,3.0,2.5
"""


@pytest.fixture(scope='module')
def sequence_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sequences')
    ts_path = tmp / 'Tiny_TEST.ts'
    ts_path.write_text(TS_TEXT)
    csv_path = tmp / 'tiny.csv'
    csv_path.write_text(CSV_TEXT)
    return str(ts_path), str(csv_path)


def _blocks(stdout: str):
    """Splits predict's output into {header: [(class, score), ...]}."""
    blocks, header = {}, None
    for line in stdout.splitlines():
        if not line.startswith(' '):
            header = line
            blocks[header] = []
        else:
            _, name, score = line.split()
            blocks[header].append((name, float(score)))
    return blocks


# --- The CLI, as a user runs it ----------------------------------------------


def test_predict_images(server, image_files):
    result = _run_cli('predict', '--server', server, '--model', 'convnet',
                      '--top', '2', *image_files)
    _assert_answered_without_tensorflow(result)
    blocks = _blocks(result.stdout)
    assert list(blocks) == image_files
    for path, pairs in blocks.items():
        assert len(pairs) == 2
        assert pairs[0][1] >= pairs[1][1]
        assert pairs[0][0] == ('dark' if 'dark' in path else 'light')
        assert {name for name, _ in pairs} <= set(IMAGE_CLASSES)


def test_predict_ts_and_csv(server, sequence_files):
    ts_path, csv_path = sequence_files
    result = _run_cli('predict', '--server', server, '--model', 'rnn', ts_path,
                      csv_path)
    _assert_answered_without_tensorflow(result)
    blocks = _blocks(result.stdout)
    headers = list(blocks)
    assert len(headers) == 4
    expected = ['up', 'down', 'flat', 'up']
    for header, label in zip(headers, expected):
        assert header.endswith(f'(true label: {label})'), header
        pairs = blocks[header]
        assert len(pairs) == len(SEQUENCE_CLASSES)
        assert pairs[0][0] == label
        assert abs(sum(score for _, score in pairs) - 1) < 1e-3
    assert headers[0].startswith(ts_path) and headers[2].startswith(csv_path)


def test_status(server):
    result = _run_cli('status', '--server', server, '--model', 'rnn')
    _assert_answered_without_tensorflow(result)
    assert result.stdout.splitlines() == ['model rnn', '  version 1: AVAILABLE']


def test_unknown_model_exits_with_one_line(server, image_files):
    result = _run_cli('predict', '--server', server, '--model', 'nosuch',
                      image_files[0])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:'), result.stderr
    assert 'NOT_FOUND' in lines[0]


# --- Error cases, in process --------------------------------------------------


def _main_error(capsys, *args: str) -> str:
    assert cli.main(list(args)) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), captured.err
    assert 'Traceback' not in captured.err
    return lines[0]


def test_server_down(capsys, image_files):
    address = f'127.0.0.1:{server_utils.free_port()}'
    message = _main_error(capsys, 'status', '--server', address, '--model',
                          'convnet', '--timeout', '5')
    assert 'cannot reach the model server' in message


def test_rest_port_hint(capsys):
    """A gRPC call to an HTTP/1 port (the REST API's) says so."""

    class QuietHandler(http.server.BaseHTTPRequestHandler):

        def log_message(self, *args):  # Keeps stderr to the CLI's line.
            pass

    web = http.server.HTTPServer(('127.0.0.1', 0), QuietHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        message = _main_error(capsys, 'status', '--server',
                              f'127.0.0.1:{web.server_port}', '--model',
                              'convnet', '--timeout', '5')
    finally:
        web.shutdown()
    assert 'HTTP/1 port (the REST API?)' in message


def test_unknown_version(server, capsys, image_files):
    message = _main_error(capsys, 'predict', '--server', server, '--model',
                          'convnet', '--version', '7', image_files[0])
    assert 'Servable not found for request: Specific(convnet, 7)' in message, \
        message


def test_version_and_label_flags(server, capsys, image_files):
    assert cli.main([
        'predict', '--server', server, '--model', 'convnet', '--version', '1',
        '--top', '1', image_files[0]
    ]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[1] == 'dark'
    with pytest.raises(SystemExit) as exit_info:
        cli.main([
            'predict', '--server', server, '--model', 'convnet', '--version',
            '1', '--label', 'stable', image_files[0]
        ])
    assert exit_info.value.code == 2


def test_unreadable_files(capsys, tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('not an image')
    assert 'neither an image' in _main_error(capsys, 'predict', '--server',
                                             '127.0.0.1:1', '--model', 'm',
                                             str(text))
    assert 'no such file' in _main_error(capsys, 'predict', '--server',
                                         '127.0.0.1:1', '--model', 'm',
                                         str(tmp_path / 'missing.png'))
    bad_ts = tmp_path / 'bad.ts'
    bad_ts.write_text('@data\n1,2,x:up\n')
    assert 'bad.ts' in _main_error(capsys, 'predict', '--server', '127.0.0.1:1',
                                   '--model', 'm', str(bad_ts))


# --- The client library ------------------------------------------------------


def test_client_classify_and_metadata(server):
    with client_lib.ModelServerClient(server) as client:
        examples = image_examples(3)
        results = client.classify_examples('convnet', examples, top_k=1)
        assert [r.top_class for r in results] == ['dark', 'mid', 'light']
        metadata = client.model_metadata('convnet')
        assert set(metadata) >= {
            signatures.DEFAULT_SIGNATURE, signatures.IMAGE_SIGNATURE
        }
        images = client.predict_images(
            'convnet', [png_bytes(0), png_bytes(255)])
        assert [r.top_class for r in images] == ['dark', 'light']
        assert len(images[0].classes) == 3


def test_client_sequences_follow_declared_dtypes(server):
    with client_lib.ModelServerClient(server) as client:
        dtypes = client.input_dtypes('rnn', signatures.SEQUENCE_SIGNATURE)
        assert dtypes[signatures.LENGTH_INPUT].name == 'int32'
        results = client.predict_sequences(
            'rnn', [np.full(
                (4, 2), 3.0), np.full((2, 2), -3.0)], top_k=None)
        assert [r.top_class for r in results] == ['up', 'down']
        outputs = client.predict('rnn', {
            signatures.SEQUENCE_INPUT: np.zeros((1, 3, 2), np.float32),
            signatures.LENGTH_INPUT: np.array([3], np.int32)
        },
                                 signature=signatures.SEQUENCE_SIGNATURE)
        assert outputs[signatures.SCORES_OUTPUT].shape == (1, 3)


def test_client_errors_carry_grpc_code(server):
    with client_lib.ModelServerClient(server) as client:
        with pytest.raises(client_lib.ServingError) as error:
            client.model_status('nosuch')
        assert error.value.code.name == 'NOT_FOUND'
        with pytest.raises(client_lib.ModelNotAvailableError) as error:
            client.wait_until_available('convnet', timeout=1, version=9)
        assert 'not available' in str(error.value)
        statuses = client.wait_until_available('convnet', timeout=5)
        assert [str(s) for s in statuses] == ['version 1: AVAILABLE']


def test_wrong_signature_names_the_right_ones(server):
    with client_lib.ModelServerClient(server) as client:
        with pytest.raises(client_lib.ServingError) as error:
            client.predict('convnet', {signatures.IMAGE_INPUT: [png_bytes(0)]},
                           signature='serving_imag')
    assert (f'the model has: {signatures.DEFAULT_SIGNATURE}, '
            f'{signatures.IMAGE_SIGNATURE}') in str(error.value)


def test_pad_sequences():
    padded, lengths = client_lib.pad_sequences(
        [np.ones((2, 3)), np.ones((4, 3))])
    assert padded.shape == (2, 4, 3) and lengths.tolist() == [2, 4]
    assert padded[0, 2:].sum() == 0
    with pytest.raises(ValueError, match='channels'):
        client_lib.pad_sequences([np.ones((2, 3)), np.ones((2, 2))])


def test_make_prediction_sorts():
    prediction = client_lib.make_prediction([b'a', b'b', b'c'], [0.2, 0.5, 0.3],
                                            top_k=2)
    assert prediction.pairs() == [('b', 0.5), ('c', 0.3)]


# --- The deployment files ----------------------------------------------------


def _parse(path: str, message):
    with open(path, encoding='utf-8') as f:
        return text_format.Parse(f.read(), message)


def test_models_config_parses():
    config = _parse(os.path.join(CONFIG_DIR, 'models.config'),
                    model_server_config_pb2.ModelServerConfig())
    models = {m.name: m for m in config.model_config_list.config}
    assert set(models) == {'convnet', 'rnn'}
    for name, model in models.items():
        assert model.base_path == f'/models/{name}'
        assert model.model_platform == 'tensorflow'
        assert model.model_version_policy.WhichOneof(
            'policy_choice') == 'latest'


def test_batching_and_monitoring_configs_parse():
    from serving import extra_protos  # pylint: disable=import-outside-toplevel
    batching = _parse(os.path.join(CONFIG_DIR, 'batching.config'),
                      extra_protos.BatchingParameters())
    assert batching.max_batch_size.value > 0
    assert batching.pad_variable_length_inputs
    monitoring = _parse(os.path.join(CONFIG_DIR, 'monitoring.config'),
                        extra_protos.MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path.startswith('/')


def test_yaml_files_parse_and_agree():
    paths = sorted(
        glob.glob(os.path.join(DEPLOY, '**', '*.yaml'), recursive=True) +
        glob.glob(os.path.join(DEPLOY, '*.yml')))
    docs = {}
    for path in paths:
        with open(path, encoding='utf-8') as f:
            docs[os.path.relpath(path, DEPLOY)] = yaml.safe_load(f)
    assert set(docs) >= {
        'docker-compose.yml', 'kustomization.yaml', 'k8s/deployment.yaml',
        'k8s/service.yaml', 'k8s/pvc.yaml'
    }
    kustomization = docs['kustomization.yaml']
    for resource in kustomization['resources']:
        assert resource in docs
    generated = kustomization['configMapGenerator'][0]['files']
    assert sorted(os.path.basename(f) for f in generated) == sorted(
        os.listdir(CONFIG_DIR))
    for name in generated:
        assert os.path.exists(os.path.join(DEPLOY, name))
    container = docs['k8s/deployment.yaml']['spec']['template']['spec'][
        'containers'][0]
    compose = docs['docker-compose.yml']['services']['tf-serving']
    assert container['args'] == compose['command']
    readiness = container['readinessProbe']['httpGet']
    assert readiness['path'] == '/v1/models/convnet'
    ports = {p['port'] for p in docs['k8s/service.yaml']['spec']['ports']}
    assert ports == {8500, 8501}


def test_local_config_rewrites_base_paths(tmp_path, capsys):
    assert cli.main([
        'local-config',
        os.path.join(CONFIG_DIR, 'models.config'), '--models-dir',
        str(tmp_path / 'serving')
    ]) == 0
    config = text_format.Parse(capsys.readouterr().out,
                               model_server_config_pb2.ModelServerConfig())
    serving = tmp_path / 'serving'
    assert sorted(m.base_path for m in config.model_config_list.config) == [
        str(serving / 'convnet'),
        str(serving / 'rnn')
    ]
