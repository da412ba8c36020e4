"""The image `make image` builds, run: its files, its entry point, and the
smoke pipeline inside it to a pushed model, with no network.

Slow (the image's build, then a whole pipeline in a container) and needing
a container engine, so not part of `make test`: `make image-test` builds
the image (`make image`, tools/image/build.sh) and runs this module with
IMAGE_TEST set. Without it, skipped.
"""

import json
import os
import shutil
import subprocess

import pytest

from pipeline import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.environ.get('IMAGE') or configs.default_image()

pytestmark = pytest.mark.skipif(
    not os.environ.get('IMAGE_TEST'),
    reason='builds and runs the image: `make image-test` (IMAGE_TEST=1)')


def engine() -> str:
    """`docker` where its engine answers, else `podman` (tools/image/)."""
    if shutil.which('docker') and subprocess.run(
        ['docker', 'info'], capture_output=True, check=False).returncode == 0:
        return 'docker'
    return 'podman'


def run_in_image(*args: str, flags=(), timeout=600):
    return subprocess.run([
        os.path.join(REPO, 'tools', 'image', 'run.sh'), IMAGE, *flags, '--',
        *args
    ],
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          check=False)


def test_the_image_holds_the_pipeline_and_nothing_of_the_checkout_else():
    inspected = subprocess.run(
        [engine(), 'image', 'inspect', '--format', '{{json .Config}}', IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False)
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)
    assert config['Entrypoint'] == ['python', '-m', 'pipeline']
    assert config['WorkingDir'] == '/pipeline'
    listed = run_in_image('-c',
                          'import os; print(sorted(os.listdir()))',
                          flags=('--entrypoint', 'python'))
    assert listed.returncode == 0, listed.stderr
    # The Dockerfile's copies and the data links, no .venv, tfx_home, .git.
    assert eval(listed.stdout) == sorted([  # pylint: disable=eval-used
        'components', 'data', 'models', 'pipeline', 'requirements.txt',
        'requirements-nodeps.txt', 'serving', 'system'
    ])
    version = run_in_image('-c', 'import sys, tfx; print(sys.version, '
                           'tfx.__version__)',
                           flags=('--entrypoint', 'python'))
    assert version.stdout.startswith('3.10.') and '1.16.' in version.stdout


def test_the_smoke_pipeline_runs_in_the_image_to_a_pushed_model(tmp_path):
    """`run --model convnet --profile smoke` as the entry point's
    arguments, on the image's Fashion-MNIST, without a network: the model
    pushed to the mounted home."""
    out = tmp_path / 'out'
    out.mkdir()
    process = run_in_image('run',
                           '--model',
                           'convnet',
                           '--profile',
                           'smoke',
                           '--home',
                           '/out/home',
                           '--set',
                           'min_train_steps=0',
                           '--set',
                           'epochs=1',
                           '--set',
                           'min_accuracy=0.3',
                           flags=('--network', 'none', '-v', f'{out}:/out'),
                           timeout=3600)
    assert process.returncode == 0, process.stderr[-5000:]
    summary = json.loads([
        line for line in process.stdout.splitlines() if line.startswith('{')
    ][-1])
    assert summary['blessed'] is True, summary
    pushed = summary['pushed_model']
    assert os.path.dirname(pushed) == '/out/home/serving/convnet', pushed
    on_host = os.path.join(out, os.path.relpath(pushed, '/out'))
    assert os.path.exists(os.path.join(on_host, 'saved_model.pb')), on_host
