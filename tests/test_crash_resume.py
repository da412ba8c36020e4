"""Crash and resume: a run killed with SIGKILL in the Trainer, rerun with the
same command, finishes from the cache and pushes one whole model; the killed
execution is marked failed and its half-written output removed.

Also, without a pipeline run: recovering a store with an unfinished
execution, and the Pusher's staging folder.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import signatures
from pipeline import configs
from pipeline import runner
from tests import datasets

# Heavy (tests/conftest.py): a killed convnet run and its rerun.
pytestmark = pytest.mark.heavy(55)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNING = metadata_store_pb2.Execution.RUNNING
FAILED = metadata_store_pb2.Execution.FAILED


def _store(home):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(home, 'metadata.sqlite')
    return metadata_store.MetadataStore(config)


def _trainer_executions(home):
    store = _store(home)
    return [e for e in store.get_executions() if e.type.endswith('Trainer')]


def test_a_run_killed_in_the_trainer_resumes_from_the_cache(tmp_path):
    data = datasets.write_idx_dataset(str(tmp_path / 'data'),
                                      train=300,
                                      test=100)
    home = str(tmp_path / 'home')
    # Three epochs (about 30 steps), not the smoke profile's 200 steps: what
    # is checked is the kill and the resume, not the model.
    command = [
        sys.executable, '-m', 'pipeline', 'run', '--model', 'convnet', '--data',
        data, '--home', home, '--set', 'epochs=3', '--set', 'min_train_steps=0'
    ]
    # Killed, it cannot delete its temporary files: they stay in tmp_path.
    process = subprocess.Popen(command,
                               cwd=REPO,
                               env={
                                   **os.environ, 'TMPDIR': str(tmp_path)
                               },
                               stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL,
                               text=True,
                               start_new_session=True)
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if '] Trainer ...' in line:
                break
        # Inside the Trainer: its execution RUNNING in ML Metadata, its
        # output folders made. Killed at once (the Trainer's own start-up,
        # seconds, is still ahead of it).
        [killed], half_written = _wait_for_running_trainer(home)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
    assert process.returncode == -signal.SIGKILL, ''.join(seen)
    assert half_written

    rerun = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,  # Bounds a hang only.
        check=False)
    assert rerun.returncode == 0, rerun.stderr
    log = rerun.stderr
    assert f'execution {killed.id} was interrupted; marked FAILED' in log
    for component in ('FileBasedExampleGen', 'StatisticsGen', 'SchemaGen',
                      'Transform'):
        [done] = [
            line for line in log.splitlines() if f'] {component} done' in line
        ]
        assert done.endswith('(cached)'), log
    [trainer] = [line for line in log.splitlines() if '] Trainer done' in line]
    assert not trainer.endswith('(cached)')

    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary['blessed'] is True, summary
    serving = os.path.join(home, 'serving', 'convnet')
    # One version, whole, and no staging or partial folder beside it.
    assert os.listdir(serving) == [os.path.basename(summary['pushed_model'])]
    model = tf.saved_model.load(summary['pushed_model'])
    images, _ = datasets.images_with_labels(4, 10, seed=3)
    scores = model.signatures[signatures.IMAGE_SIGNATURE](
        images=tf.constant([datasets.png_bytes(i)
                            for i in images]))[signatures.SCORES_OUTPUT]
    np.testing.assert_allclose(scores.numpy().sum(axis=1), 1.0, rtol=1e-5)

    states = {e.id: e.last_known_state for e in _trainer_executions(home)}
    assert states[killed.id] == FAILED
    assert sorted(states.values()).count(RUNNING) == 0
    assert not any(os.path.exists(p) for p in half_written)


def _wait_for_running_trainer(home, timeout=1800):
    """([the RUNNING Trainer execution], its output folders), polled; the
    deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [
            e for e in _trainer_executions(home)
            if e.last_known_state == RUNNING
        ]
        if running:
            folders = glob.glob(
                os.path.join(home, 'pipelines', '*', 'Trainer', '*',
                             str(running[0].id)))
            if folders:
                return running, folders
        time.sleep(0.2)
    raise TimeoutError('no Trainer execution started')


def test_recovery_fails_only_unfinished_executions_of_this_pipeline(tmp_path):
    config = configs.RunConfig(model='convnet', home=str(tmp_path / 'home'))
    connection = runner.metadata_config(config)
    store = metadata_store.MetadataStore(connection)
    [pipeline_type, node_type] = [
        store.put_context_type(metadata_store_pb2.ContextType(name=name))
        for name in ('pipeline', 'node')
    ]
    execution_type = store.put_execution_type(
        metadata_store_pb2.ExecutionType(name='Trainer'))
    [pipeline_context, node_context] = store.put_contexts([
        metadata_store_pb2.Context(type_id=pipeline_type,
                                   name=config.pipeline_name),
        metadata_store_pb2.Context(type_id=node_type,
                                   name=f'{config.pipeline_name}.Trainer')
    ])
    ids = store.put_executions([
        metadata_store_pb2.Execution(type_id=execution_type,
                                     last_known_state=state)
        for state in (RUNNING, metadata_store_pb2.Execution.COMPLETE)
    ])
    store.put_attributions_and_associations([], [
        metadata_store_pb2.Association(context_id=c, execution_id=e)
        for c in (pipeline_context, node_context)
        for e in ids
    ])
    folders = {
        e: os.path.join(config.pipeline_root, 'Trainer', 'model', str(e))
        for e in ids
    }
    for folder in folders.values():
        os.makedirs(folder)

    assert runner.recover_interrupted(connection, config) == [ids[0]]

    states = [e.last_known_state for e in store.get_executions_by_id(ids)]
    assert states == [FAILED, metadata_store_pb2.Execution.COMPLETE]
    assert not os.path.exists(folders[ids[0]])
    assert os.path.exists(folders[ids[1]])
    assert runner.recover_interrupted(connection, config) == []


def test_pusher_stages_then_renames_and_clears_a_killed_push(tmp_path):
    from tfx.proto import pusher_pb2  # pylint: disable=import-outside-toplevel
    from tfx.types import standard_artifacts  # pylint: disable=import-outside-toplevel
    from tfx.types import standard_component_specs as specs  # pylint: disable=import-outside-toplevel
    from tfx.utils import path_utils  # pylint: disable=import-outside-toplevel
    from tfx.utils import proto_utils  # pylint: disable=import-outside-toplevel

    from components.pusher import executor  # pylint: disable=import-outside-toplevel

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / 'model')
    model_dir = path_utils.serving_model_path(model.uri)
    os.makedirs(os.path.join(model_dir, 'variables'))
    for name in ('saved_model.pb', os.path.join('variables', 'v.data')):
        with open(os.path.join(model_dir, name), 'wb') as f:
            f.write(b'x' * 100)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / 'blessing')
    blessing.set_int_custom_property('blessed', 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / 'pushed')
    base = tmp_path / 'serving'
    # A push killed mid-copy left this behind.
    os.makedirs(base / executor.STAGING_DIR / '123' / 'variables')
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=str(base)))

    executor.Executor().Do(
        {
            specs.MODEL_KEY: [model],
            specs.MODEL_BLESSING_KEY: [blessing]
        }, {specs.PUSHED_MODEL_KEY: [pushed]},
        {specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)})

    [version] = os.listdir(base)
    assert version.isdigit()
    assert pushed.get_string_custom_property('pushed_destination') == str(
        base / version)
    assert sorted(os.listdir(base / version)) == ['saved_model.pb', 'variables']
