"""Model lifecycle against a real server: hot loading, failures, reloads.

One server for the module polls the file system every second and the config
file every second. Tests do not depend on each other or on their order: each
changes only models of its own (`hot`, `growing`, `corrupted`; config tests
add and remove others), and each config test starts and ends with the base
config (BASE_MODELS) written and reloaded.
"""

import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import server_utils
from tests.serving import testmodels

ROWS = [[0.1, 0.2, 0.3, 0.4]]
# A bad command line ends the server before it loads a model; the deadline
# only bounds a hang (a busy machine takes a minute to import the server).
_EXIT_DEADLINE = 600
# Served from start-up on, version 1 each; `steady` never changes.
BASE_MODELS = ('hot', 'growing', 'corrupted', 'steady')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('lifecycle')


@pytest.fixture(scope='module')
def models(workdir, add_version) -> Path:
    root = workdir / 'models'
    for name in BASE_MODELS:
        add_version(root / name, 1, 0.0)
    add_version(root / 'second', 1, 1.0)
    add_version(root / 'polled', 1, 1.0)
    add_version(root / 'labelled', 1, 0.0)
    add_version(root / 'labelled', 2, 1.0)
    (root / 'broken' / '1').mkdir(parents=True)
    (root / 'broken' / '1' / 'saved_model.pb').write_bytes(b'not a proto' * 10)
    return root


def _config_text(models: Path, *entries: str) -> str:
    blocks = []
    for entry in entries:
        name, _, extra = entry.partition(':')
        blocks.append(f'config {{ name: "{name}" base_path: '
                      f'"{models / name}" model_platform: "tensorflow" '
                      f'{extra} }}')
    return 'model_config_list { ' + ' '.join(blocks) + ' }\n'


@pytest.fixture(scope='module')
def config_file(workdir, models) -> Path:
    path = workdir / 'models.config'
    path.write_text(_config_text(models, *BASE_MODELS))
    return path


@pytest.fixture(scope='module')
def server(start_server, config_file):
    return start_server([
        f'--model_config_file={config_file}',
        '--model_config_file_poll_wait_seconds=1',
        '--file_system_poll_wait_seconds=1',
        '--version_settle_seconds=0.5',
        '--max_num_load_retries=0',
    ])


@pytest.fixture(scope='module')
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield channel


@pytest.fixture(scope='module')
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope='module')
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture
def base_config(server, models, config_file, model_stub) -> str:
    """Serves the base config (file and reload) before and after a test."""
    text = _config_text(models, *BASE_MODELS)

    def restore():
        config_file.write_text(text)
        assert _reload(model_stub, text).status.error_code == 0

    restore()
    yield text
    restore()


def _predict_version(stub, name='hot', **spec) -> int:
    request = testmodels.float_predict_request(ROWS, name)
    if 'version_label' in spec:
        request.model_spec.version_label = spec['version_label']
    return stub.Predict(request, timeout=30).model_spec.version.value


def _wait_until(condition, what, timeout=120.0):
    """Polls `condition`; the deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def test_hot_swap_under_load_loses_no_request(server, models, add_version,
                                              predict_stub):
    assert server.model_states('hot') == [(1, 'AVAILABLE')]
    stop = threading.Event()
    versions, failures = [], []

    def client():
        while not stop.is_set():
            try:
                versions.append(_predict_version(predict_stub))
            except grpc.RpcError as e:  # pragma: no cover - reported below
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        # Requests answered by version 1, then the swap, then requests
        # answered by version 2: counted, not timed.
        _wait_until(lambda: versions.count(1) >= 20, 'answers of version 1')
        add_version(models / 'hot', 2, 1.0)
        server.wait_for_states('hot', [(2, 'AVAILABLE'), (1, 'END')])
        after_swap = len(versions)
        _wait_until(lambda: versions[after_swap:].count(2) >= 20,
                    'answers of version 2')
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:3]
    assert versions[0] == 1 and versions[-1] == 2
    assert set(versions) == {1, 2}
    log = server.log()
    assert log.index('Successfully loaded servable version {name: hot '
                     'version: 2}') < log.index(
                         'Quiescing servable version {name: hot version: 1}')
    assert 'Done unloading servable version {name: hot version: 1}' in log
    assert server.model_states('hot') == [(2, 'AVAILABLE'), (1, 'END')]


def test_incomplete_and_changing_version_dirs_are_not_loaded(
        server, models, add_version, model_source, predict_stub):
    half = models / 'growing' / '6'
    (half / 'variables').mkdir(parents=True)
    shutil.copy(model_source[0.0] / 'saved_model.pb', half)
    scratch = half / 'variables' / 'partial'
    # A pusher still writing: the directory keeps changing for 3 s.
    for i in range(15):
        scratch.write_bytes(b'x' * i)
        time.sleep(0.2)
        assert 6 not in dict(server.model_states('growing'))
    scratch.unlink()
    shutil.copytree(model_source[0.0], half, dirs_exist_ok=True)
    server.wait_for_states('growing', [(6, 'AVAILABLE'), (1, 'END')])
    assert _predict_version(predict_stub, 'growing') == 6
    # No saved_model.pb at all: not a version, so 7 (created after it) is
    # the latest, and loads.
    (models / 'growing' / '8' / 'variables').mkdir(parents=True)
    add_version(models / 'growing', 7)
    server.wait_for_states('growing', [(7, 'AVAILABLE'), (6, 'END')])
    assert 8 not in dict(server.model_states('growing'))
    assert _predict_version(predict_stub, 'growing') == 7


def test_corrupt_version_is_reported_and_old_keeps_serving(
        server, models, model_stub, predict_stub):
    corrupt = models / 'corrupted' / '9'
    corrupt.mkdir()
    (corrupt / 'saved_model.pb').write_bytes(b'\x08\xff\xff garbage' * 50)
    server.wait_for_states('corrupted', [(9, 'END'), (1, 'AVAILABLE')])
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'corrupted'
    request.model_spec.version.value = 9
    status = model_stub.GetModelStatus(request, timeout=30)
    entry = status.model_version_status[0]
    assert entry.state == get_model_status_pb2.ModelVersionStatus.END
    assert entry.status.error_code != 0
    assert entry.status.error_message
    assert _predict_version(predict_stub, 'corrupted') == 1
    assert ('Loading servable: {name: corrupted version: 9} failed'
            in server.log())
    code, body = server.http('GET', '/v1/models/corrupted/versions/9')
    assert code == 200
    assert body['model_version_status'][0]['status']['error_code'] != 'OK'
    shutil.rmtree(corrupt)
    assert _predict_version(predict_stub, 'corrupted') == 1
    assert (1, 'AVAILABLE') in server.model_states('corrupted')


def _reload(model_stub, text: str):
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    return model_stub.HandleReloadConfigRequest(request, timeout=60)


def test_reload_config_adds_labels_and_removes_models(server, models,
                                                      config_file, model_stub,
                                                      predict_stub,
                                                      base_config):
    text = _config_text(models, *BASE_MODELS, 'second')
    # The polled file must say the same, or its next poll would undo this.
    config_file.write_text(text)
    response = _reload(model_stub, text)
    assert response.status.error_code == 0
    # The reload returns only once the new model is available.
    assert server.model_states('second') == [(1, 'AVAILABLE')]
    assert _predict_version(predict_stub, 'second') == 1

    labelled = _config_text(
        models, *BASE_MODELS, 'second',
        'labelled:model_version_policy { all {} } '
        'version_labels { key: "stable" value: 1 }')
    with pytest.raises(grpc.RpcError) as info:
        _reload(model_stub, labelled)  # Version 1 of labelled not loaded yet.
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ('Request to assign label to version 1 of model labelled, which '
            'is not currently available for inference') in info.value.details()
    assert server.model_states('labelled') == []

    unlabelled = _config_text(models, *BASE_MODELS, 'second',
                              'labelled:model_version_policy { all {} }')
    config_file.write_text(unlabelled)
    _reload(model_stub, unlabelled)
    server.wait_for_states('labelled', [(1, 'AVAILABLE'), (2, 'AVAILABLE')])
    config_file.write_text(labelled)
    _reload(model_stub, labelled)
    assert _predict_version(predict_stub, 'labelled',
                            version_label='stable') == 1

    text = _config_text(
        models, *BASE_MODELS, 'labelled:model_version_policy { all {} } '
        'version_labels { key: "stable" value: 2 }')
    config_file.write_text(text)
    _reload(model_stub, text)
    assert _predict_version(predict_stub, 'labelled',
                            version_label='stable') == 2
    server.wait_for_states('second', [(1, 'END')])
    with pytest.raises(grpc.RpcError) as info:
        _predict_version(predict_stub, 'second')
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize('text, code, message', [
    ('model_config_list { config { name: "a" base_path: "/x" '
     'model_platform: "tensorflow" } config { name: "a" base_path: "/y" '
     'model_platform: "tensorflow" } }', grpc.StatusCode.INVALID_ARGUMENT,
     'Illegal to list model a multiple times'),
    ('model_config_list { config { name: "a" base_path: "relative" '
     'model_platform: "tensorflow" } }', grpc.StatusCode.INVALID_ARGUMENT,
     'to have an absolute path'),
    ('model_config_list { config { name: "a" base_path: "/x" '
     'model_platform: "pytorch" } }', grpc.StatusCode.FAILED_PRECONDITION,
     'unsupported platform'),
    ('', grpc.StatusCode.INVALID_ARGUMENT, 'Only ModelConfigList'),
])
def test_reload_config_rejects_bad_configs(server, model_stub, predict_stub,
                                           base_config, text, code, message):
    with pytest.raises(grpc.RpcError) as info:
        _reload(model_stub, text)
    assert info.value.code() == code
    assert message in info.value.details()
    assert _predict_version(predict_stub, 'steady') == 1


def test_reload_with_model_that_fails_to_load(server, models, model_stub,
                                              predict_stub, base_config):
    text = _config_text(models, *BASE_MODELS, 'broken')
    with pytest.raises(grpc.RpcError) as info:
        _reload(model_stub, text)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert '1 model(s) did not become available' in info.value.details()
    assert server.model_states('broken') == [(1, 'END')]
    assert _predict_version(predict_stub, 'steady') == 1


def test_config_file_poll_applies_changes(server, models, config_file,
                                          predict_stub, base_config):
    config_file.write_text(_config_text(models, *BASE_MODELS, 'polled'))
    server.wait_for_states('polled', [(1, 'AVAILABLE')], timeout=60)
    assert _predict_version(predict_stub, 'polled') == 1
    config_file.write_text(base_config)
    server.wait_for_states('polled', [(1, 'END')], timeout=60)


def test_sigterm_stops_the_server(start_server, models):
    server = start_server(
        ['--model_name=steady', f'--model_base_path={models / "steady"}'],
        rest=False)
    assert server.stop() == 0
    assert 'shutting down' in server.log()


# ------------------------------------------------------ startup behaviour


def test_startup_fails_when_a_model_does_not_load(tmp_path, models):
    with pytest.raises(RuntimeError) as info:
        server_utils.start_model_server(tmp_path, [
            '--model_name=broken', f'--model_base_path={models / "broken"}',
            '--max_num_load_retries=0'
        ])
    assert ('Failed to start server. Error: UNKNOWN: 1 model(s) did not '
            'become available') in str(info.value)


def test_startup_labels_need_allow_flag(tmp_path, models):
    config = tmp_path / 'labels.config'
    config.write_text(
        _config_text(models,
                     'labelled:version_labels { key: "stable" value: 1 }'))
    server = server_utils.launch(tmp_path, [f'--model_config_file={config}'])
    assert server.process.wait(_EXIT_DEADLINE) == 255
    assert ('Failed to start server. Error: FAILED_PRECONDITION: Request to '
            'assign label to version 1 of model labelled, which is not '
            'currently available for inference') in server.log()


@pytest.mark.parametrize('args, message', [
    (['--model_base_path=/x', '--no_such_flag=1'
     ], 'unknown argument: --no_such_flag=1'),
    (['--model_base_path=/x', '--port=abc'], 'Illegal value for flag --port'),
    (['--rest_api_port=0'], 'Both --model_base_path and --model_config_file '
     'are empty!'),
    (['--model_base_path=relative/path'], 'to have an absolute path'),
    (['--model_base_path=/x', '--ssl_config_file=/ssl'
     ], 'TLS is not supported'),
])
def test_bad_command_lines_fail_fast(tmp_path, args, message):
    server = server_utils.launch(tmp_path, args)
    assert server.process.wait(_EXIT_DEADLINE) == 255
    assert message in server.log()
    assert 'Running gRPC ModelServer' not in server.log()


def test_flags_accept_space_separated_values(tmp_path):
    server = server_utils.launch(tmp_path, [
        '--model_base_path', 'rel', '--enable_batching',
        '--batching_parameters_file',
        str(tmp_path / 'missing')
    ])
    assert server.process.wait(_EXIT_DEADLINE) == 255
    assert 'to have an absolute path' in server.log()
