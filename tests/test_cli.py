"""The pipeline command line answers bad arguments and bad data before it
loads TensorFlow: exit 2 and one line, checked in a real subprocess whose
loaded modules are inspected (not timed: speed is measured under bench/)."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from common import settings
from pipeline import cli
from pipeline import configs
from pipeline import profiles
from pipeline import setting_checks
from serving import cli as serving_cli
from tests import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the command line in-process and reports which heavy modules it loaded.
_MAIN_THEN_REPORT_IMPORTS = (
    'import sys\n'
    'from pipeline import cli\n'
    'code = cli.main(sys.argv[1:])\n'
    'print("loaded:", sorted(m for m in ("tensorflow", "tfx", "apache_beam")'
    ' if m in sys.modules))\n'
    'sys.exit(code)\n')


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, '-c', _MAIN_THEN_REPORT_IMPORTS, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False)


@pytest.fixture(scope='module')
def idx_data(tmp_path_factory):
    return datasets.write_idx_dataset(str(
        tmp_path_factory.mktemp('cli') / 'data'),
                                      train=40,
                                      test=10)


def _error_lines(process):
    return [
        line for line in process.stderr.splitlines()
        if line.startswith('error:')
    ]


@pytest.mark.parametrize('setting, message', [
    ('epoch=3', 'error: --set epoch: no such setting for convnet; '
     'did you mean epochs?'),
    ('epochs=three', 'error: --set epochs="three": expected an integer, '
     'like 1'),
    ('epochs=0', 'error: --set epochs=0: must be positive'),
    ('training_length=0', 'error: --set training_length=0: must be above 0'),
    ('conv_filters=[16,"a"]', 'expected a list of integers'),
    ('units=[8]', 'no such setting for convnet; did you mean dense_units?'),
    ('cache_examples=1', 'expected true or false'),
])
def test_a_bad_setting_exits_2_with_one_line_before_tensorflow_loads(
        idx_data, tmp_path, setting, message):
    process = run_cli('run', '--model', 'convnet', '--data', idx_data, '--home',
                      str(tmp_path / 'home'), '--set', setting)
    assert process.returncode == 2, process.stderr
    assert len(_error_lines(process)) == 1, process.stderr
    assert message in _error_lines(process)[0]
    assert 'Traceback' not in process.stderr
    assert 'loaded: []' in process.stdout
    assert not os.path.exists(tmp_path / 'home')


# A real cluster's TF_CONFIG (the Trainer joins it, models/workers.py).
_WORKERS_ONLY = {'cluster': {'worker': ['w0:2222']}, 'task': {'type': 'worker'}}


@pytest.mark.parametrize('setting, tf_config, message', [
    ('parameter_servers=0', None,
     'error: --set parameter_servers=0: must be positive'),
    ('workers=0', None, 'error: --set workers=0: must be positive'),
    ('workers=2', _WORKERS_ONLY,
     'error: TF_CONFIG: strategy parameter_server needs a cluster with '
     'chief, worker and ps tasks; it has worker'),
    ('workers=2', {
        'cluster': {
            'chief': ['c:1'],
            'worker': ['w:1'],
            'ps': []
        }
    }, 'error: TF_CONFIG: strategy parameter_server needs a cluster with '
     'chief, worker and ps tasks; it has chief, worker'),
    ('workers=2', 'chief:1', 'error: TF_CONFIG: not JSON: '),
])
def test_a_bad_parameter_server_cluster_exits_2_with_one_line(
        idx_data, tmp_path, setting, tf_config, message):
    """`--strategy parameter_server` with no parameter server or worker to
    start, or a cluster's TF_CONFIG it cannot train on: one line, exit 2,
    before TensorFlow loads."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG'}
    if tf_config is not None:
        env['TF_CONFIG'] = (tf_config if isinstance(tf_config, str) else
                            json.dumps(tf_config))
    process = run_cli('run',
                      '--model',
                      'convnet',
                      '--data',
                      idx_data,
                      '--home',
                      str(tmp_path / 'home'),
                      '--strategy',
                      'parameter_server',
                      '--set',
                      setting,
                      env=env)
    assert process.returncode == 2, process.stderr
    assert _error_lines(process) == [_error_lines(process)[0]]
    assert _error_lines(process)[0].startswith(message), process.stderr
    assert 'Traceback' not in process.stderr
    assert 'loaded: []' in process.stdout
    assert not os.path.exists(tmp_path / 'home')


def test_rnn_settings_are_checked_against_the_rnn_defaults(tmp_path):
    data = datasets.write_ts_dataset(str(tmp_path / 'data'), train=6, test=3)
    process = run_cli('run', '--model', 'rnn', '--data', data, '--set',
                      'cell=transformer')
    assert process.returncode == 2
    assert _error_lines(process) == [
        'error: --set cell=transformer: expected one of lstm, gru'
    ]
    assert 'loaded: []' in process.stdout


def test_bad_data_is_found_before_tensorflow_loads(tmp_path):
    data = datasets.write_idx_dataset(str(tmp_path / 'data'), train=40, test=10)
    labels = os.path.join(data, 't10k-labels-idx1-ubyte.gz')
    datasets.write_idx(labels, np.full(10, 12))  # out of range
    process = run_cli('run', '--model', 'convnet', '--data', data, '--home',
                      str(tmp_path / 'home'))
    assert process.returncode == 2
    [line] = _error_lines(process)
    assert line.startswith(f'error: {labels}: has label 12 at index 0')
    assert 'loaded: []' in process.stdout

    missing = run_cli('run', '--model', 'convnet', '--data',
                      str(tmp_path / 'nowhere'))
    assert missing.returncode == 2
    assert _error_lines(missing) == [
        f'error: {tmp_path / "nowhere"}: not a folder of images, IDX or '
        'TFRecord files'
    ]
    assert 'loaded: []' in missing.stdout


@pytest.mark.parametrize('content, message', [
    (None, 'cannot read the schema: No such file or directory'),
    ('feature { name: "x" type: WRONG }', 'not a schema.pbtxt: '),
    ('', 'the schema has no features'),
])
def test_an_unreadable_curated_schema_exits_2_before_tensorflow_loads(
        idx_data, tmp_path, content, message):
    schema = tmp_path / 'schema.pbtxt'
    if content is not None:
        schema.write_text(content, encoding='utf-8')
    process = run_cli('run', '--model', 'convnet', '--data', idx_data, '--home',
                      str(tmp_path / 'home'), '--set', f'schema_path={schema}')
    assert process.returncode == 2, process.stderr
    [line] = _error_lines(process)
    assert line.startswith(f'error: {schema}: {message}'), line
    assert 'loaded: []' in process.stdout


@pytest.mark.parametrize('layout, message', [
    ('missing', 'no such file or directory'),
    ('empty folder', 'no saved_model.pb and no numbered version folders'),
    ('empty version', '1/saved_model.pb: cannot read: No such file'),
    ('empty file', '2/saved_model.pb: empty file'),
])
def test_a_bad_transfer_source_exits_2_before_tensorflow_loads(
        idx_data, tmp_path, layout, message):
    base = tmp_path / 'base'
    if layout != 'missing':
        base.mkdir()
    if layout in ('empty version', 'empty file'):
        (base / '1').mkdir()
    if layout == 'empty file':  # the newest version is the one read
        (base / '2' / 'variables').mkdir(parents=True)
        (base / '2' / 'saved_model.pb').write_bytes(b'')
    process = run_cli('run', '--model', 'convnet', '--data', idx_data, '--home',
                      str(tmp_path / 'home'), '--set', f'transfer_from={base}')
    assert process.returncode == 2, process.stderr
    [line] = _error_lines(process)
    assert line.startswith(f'error: {base}'), line
    assert message in line, line
    assert 'loaded: []' in process.stdout
    assert not os.path.exists(tmp_path / 'home')


def test_list_settings_prints_every_key_with_defaults_and_description():
    process = run_cli('run', '--list-settings')
    assert process.returncode == 0, process.stderr
    assert 'loaded: []' in process.stdout
    sections = process.stdout.split(' (--set KEY=VALUE')
    for model in profiles.MODELS:
        [section] = [
            s for s in sections[1:]
            if sections[sections.index(s) - 1].endswith(model)
        ]
        for key, defaults in setting_checks.setting_defaults(model).items():
            [row] = [
                line for line in section.splitlines()
                if line.split()[:1] == [key]
            ]
            assert row.endswith(settings.SETTINGS[key].help), row
            assert all(
                json.dumps(defaults[profile]) in row
                for profile in profiles.PROFILES), row


def test_every_setting_has_a_description():
    # One place for what a key does: the settings table, common/settings.py.
    keys = set()
    for model in profiles.MODELS:
        keys |= set(setting_checks.setting_defaults(model))
    assert sorted(keys - set(settings.SETTINGS)) == []


def test_native_library_noise_is_dropped_and_the_rest_kept():
    code = ('import os, sys\n'
            'from pipeline import cli\n'
            'with cli._native_noise_dropped(verbose=%s):\n'
            '    os.write(2, b"E0101 cuda_dnn.cc] Unable to register cuDNN '
            'factory: x\\n")\n'
            '    os.write(2, b"a real problem\\n")\n')
    quiet = subprocess.run([sys.executable, '-c', code % False],
                           cwd=REPO,
                           capture_output=True,
                           text=True,
                           check=True)
    assert quiet.stderr == 'a real problem\n'
    verbose = subprocess.run([sys.executable, '-c', code % True],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             check=True)
    assert 'Unable to register cuDNN' in verbose.stderr


@pytest.mark.parametrize('preset,enabled', [(None, True), ('0', False)])
def test_the_pipeline_runs_tensorflow_with_onednn_unless_told_not_to(
        preset, enabled):
    # TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI or
    # newer; the command line turns it on before TensorFlow loads.
    env = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
    if preset is not None:
        env['TF_ENABLE_ONEDNN_OPTS'] = preset
    code = ('from pipeline import cli\n'
            'from tensorflow.python.util import _pywrap_util_port\n'
            'print(_pywrap_util_port.IsMklEnabled())\n')
    process = subprocess.run([sys.executable, '-c', code],
                             cwd=REPO,
                             env=env,
                             capture_output=True,
                             text=True,
                             timeout=300,
                             check=True)
    assert process.stdout.split()[-1] == str(enabled)


def _subcommands(parser):
    [subparsers] = [
        a for a in parser._actions  # pylint: disable=protected-access
        if isinstance(a, argparse._SubParsersAction)
    ]  # pylint: disable=protected-access
    return subparsers.choices


@pytest.mark.parametrize(
    'parser',
    [cli.build_parser(), serving_cli._build_parser()])  # pylint: disable=protected-access
def test_every_command_and_flag_has_help(parser):
    for name, command in _subcommands(parser).items():
        missing = [
            a.option_strings or a.dest
            for a in command._actions  # pylint: disable=protected-access
            if not a.help
        ]
        assert not missing, (name, missing)


def test_serving_help_lists_every_command():
    process = subprocess.run([sys.executable, '-m', 'serving', '--help'],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             timeout=120,
                             check=True)
    listed = [
        line.split()[0]
        for line in process.stdout.splitlines()
        if line.startswith('  ')
    ]
    assert listed == ['serve', *_subcommands(serving_cli._build_parser())]  # pylint: disable=protected-access


def test_docker_compose_mounts_the_default_home():
    with open(os.path.join(REPO, 'serving', 'deploy', 'docker-compose.yml'),
              encoding='utf-8') as f:
        compose = yaml.safe_load(f)
    volumes = compose['services']['tf-serving']['volumes']
    assert (f'${{PIPELINE_HOME:-../../{configs.DEFAULT_HOME}}}'
            '/serving:/models:ro') in volumes
    assert cli.build_parser().parse_args(['demo']).home == configs.DEFAULT_HOME


def test_list_settings_of_one_model_prints_its_keys_only():
    """`--list-settings --model rnn`: the rnn's section alone, every one of
    its keys with its smoke and full defaults, before TensorFlow loads."""
    process = run_cli('run', '--list-settings', '--model', 'rnn')
    assert process.returncode == 0, process.stderr
    assert 'loaded: []' in process.stdout
    lines = process.stdout.splitlines()
    assert lines[0] == 'rnn (--set KEY=VALUE; defaults per --profile):'
    assert sum('(--set KEY=VALUE' in line for line in lines) == 1
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    defaults = setting_checks.setting_defaults('rnn')
    assert set(defaults) <= set(rows), set(defaults) - set(rows)
    for key, values in defaults.items():
        assert all(
            json.dumps(values[profile]) in rows[key]
            for profile in profiles.PROFILES), rows[key]
        assert rows[key].endswith(settings.SETTINGS[key].help), rows[key]
