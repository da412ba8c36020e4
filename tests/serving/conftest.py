"""Shared fixtures for the model server tests.

* `model_source`: three exported test models (version biases 0, 1, 2).
* `add_version(base, version, bias)`: copies one into `<base>/<version>`
  atomically (copy to a hidden name, then rename), as a pusher should.
* `main_server`: one server for the whole session, no batching, serving
  `mnist` (latest 2 of versions 1-3, labels stable=2 and canary=3, version 3
  with 5 warmup requests), `every` (all of versions 1-2) and `pinned`
  (specific version 1 of 1-3), with Prometheus metrics on.
* `start_server(args)`: starts an extra server, stopped after the test module.
"""

import shutil
import textwrap
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.serving import server_utils
from tests.serving import testmodels

BIASES = (0.0, 1.0, 2.0)
MAIN_WARMUP_REQUESTS = 5
MONITORING_CONFIG = ('prometheus_config { enable: true '
                     'path: "/monitoring/prometheus/metrics" }\n')


@pytest.fixture(scope='session')
def model_source(tmp_path_factory) -> Dict[float, Path]:
    """bias -> an exported test model directory."""
    root = tmp_path_factory.mktemp('exported')
    return {
        bias: Path(testmodels.write_model(str(root / f'bias{int(bias)}'), bias))
        for bias in BIASES
    }


@pytest.fixture(scope='session')
def add_version(model_source) -> Callable[..., Path]:

    def add(base: Path, version: int, bias: float = 0.0) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f'.tmp-{version}'
        shutil.copytree(model_source[bias], staging)
        target = base / str(version)
        staging.rename(target)
        return target

    return add


def write_text(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope='session')
def main_models(tmp_path_factory, add_version) -> Path:
    root = tmp_path_factory.mktemp('main_models')
    for version, bias in ((1, 0.0), (2, 1.0), (3, 2.0)):
        add_version(root / 'mnist', version, bias)
    testmodels.write_warmup(str(root / 'mnist' / '3'), [
        testmodels.float_predict_request([[0.1, 0.2, 0.3, 0.4]])
        for _ in range(MAIN_WARMUP_REQUESTS)
    ])
    for version in (1, 2):
        add_version(root / 'every', version, BIASES[version])
    for version in (1, 2, 3):
        add_version(root / 'pinned', version, 0.0)
    (root / 'mnist' / 'not_a_version').mkdir()
    (root / 'mnist' / '7').mkdir()  # No saved_model.pb: never loaded.
    return root


@pytest.fixture(scope='session')
def main_server(tmp_path_factory, main_models) -> server_utils.ServerProcess:
    workdir = tmp_path_factory.mktemp('main_server')
    config = write_text(
        workdir / 'models.config', f"""\
        model_config_list {{
          config {{
            name: "mnist"
            base_path: "{main_models / 'mnist'}"
            model_platform: "tensorflow"
            model_version_policy {{ latest {{ num_versions: 2 }} }}
            version_labels {{ key: "stable" value: 2 }}
            version_labels {{ key: "canary" value: 3 }}
          }}
          config {{
            name: "every"
            base_path: "{main_models / 'every'}"
            model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
          }}
          config {{
            name: "pinned"
            base_path: "{main_models / 'pinned'}"
            model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 }} }}
          }}
        }}
        """)
    monitoring = write_text(workdir / 'monitoring.config', MONITORING_CONFIG)
    server = server_utils.start_model_server(workdir, [
        f'--model_config_file={config}',
        f'--monitoring_config_file={monitoring}',
        '--allow_version_labels_for_unavailable_models=true',
        '--max_num_load_retries=0',
    ])
    # Ports open once each model's latest version is up; the older ones of
    # `mnist` and `every` may still be loading.
    server.wait_for_states('mnist', [(2, 'AVAILABLE'), (3, 'AVAILABLE')])
    server.wait_for_states('every', [(1, 'AVAILABLE'), (2, 'AVAILABLE')])
    yield server
    server.stop()


@pytest.fixture(scope='module')
def start_server(
        tmp_path_factory) -> Callable[[List[str]], server_utils.ServerProcess]:
    """Starts extra servers for one test module; stops them afterwards."""
    servers: List[server_utils.ServerProcess] = []
    workdir = tmp_path_factory.mktemp('servers')

    def start(args: List[str], rest: bool = True) -> server_utils.ServerProcess:
        server = server_utils.start_model_server(workdir, args, rest=rest)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
