"""`python -m pipeline compile --target kubeflow`: the PipelineJob JSON that
Kubeflow Pipelines runs. No cluster runs here; the file is checked against
the KFP pipeline-spec protos, holds every component of the local run, and
nothing of the machine that compiled it (tests/test_kubeflow_run.py runs
such a job task by task)."""

import json
import os
import subprocess
import sys
import sysconfig

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tests.kubeflow_jobs import IMAGE
from tests.kubeflow_jobs import PIPELINE_ROOT
from tests.kubeflow_jobs import REPO
from tests.kubeflow_jobs import compile_command
from tests.kubeflow_jobs import compiled_job

LOCAL_COMPONENTS = {
    'FileBasedExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator',
    'DataGate', 'Transform', 'Trainer', 'latest_blessed_model_resolver',
    'Evaluator', 'ServingCheck', 'Pusher'
}


def _machine_paths(compile_dir):
    paths = {
        compile_dir, REPO, sys.prefix,
        sysconfig.get_paths()['purelib'], '/usr/share'
    }
    return paths | {os.path.realpath(p) for p in paths}


@pytest.mark.parametrize(
    'model,data,pods_data',
    [
        # The default data set: the image's copy.
        ('convnet', None, '/pipeline/data/fashion-mnist'),
        # A bucket the compiler cannot read: nothing is read to compile.
        ('rnn', 'gs://bucket/data/JapaneseVowels',
         'gs://bucket/data/JapaneseVowels'),
    ])
def test_compiled_job_parses_holds_every_component_and_no_local_path(
        model, data, pods_data):
    job = compiled_job(model, data)
    with open(job.path, encoding='utf-8') as job_file:
        text = job_file.read()
    parsed = json_format.ParseDict(json.loads(text),
                                   pipeline_spec_pb2.PipelineJob(),
                                   ignore_unknown_fields=False)
    spec = json_format.ParseDict(
        json_format.MessageToDict(parsed.pipeline_spec),
        pipeline_spec_pb2.PipelineSpec())
    tasks = set(spec.root.dag.tasks)
    # The resolver compiles into importer-like sub-tasks; all others by name.
    for component in LOCAL_COMPONENTS - {'latest_blessed_model_resolver'}:
        assert component in tasks, (component, sorted(tasks))
    assert any(t.startswith('latest_blessed_model_resolver') for t in tasks)
    assert parsed.runtime_config.gcs_output_directory == PIPELINE_ROOT
    images = {
        e['container']['image']
        for e in spec.deployment_spec['executors'].values()
        if 'container' in e
    }
    assert images == {IMAGE}

    for path in _machine_paths(job.cwd):
        assert path not in text, path
    example_gen = spec.root.dag.tasks['FileBasedExampleGen'].inputs.parameters
    assert (example_gen['input_base'].runtime_value.constant_value.string_value
            == os.path.dirname(pods_data))
    # What the data holds is learned when ExampleGen runs, not here.
    for task in ('FileBasedExampleGen', 'Transform', 'Trainer'):
        parameters = str(spec.root.dag.tasks[task].inputs.parameters)
        assert 'class_names' not in parameters, task
        assert 'num_channels' not in parameters, task


@pytest.mark.parametrize('missing,flags', [
    ('--pipeline-root', ['--image', IMAGE]),
    ('--image', ['--pipeline-root', PIPELINE_ROOT]),
])
def test_compile_without_a_required_setting_exits_2_naming_it(
        tmp_path, missing, flags):
    env_flags = [
        '--model', 'convnet', '--target', 'kubeflow', '--output',
        str(tmp_path / 'job.json'), *flags
    ]
    if missing == '--image':
        # The image defaults to this checkout's tag; outside one it is
        # required.
        process = subprocess.run([
            sys.executable, '-c', 'import sys; from pipeline import cli; '
            'from pipeline import configs; '
            'configs.default_image = lambda: None; '
            'sys.exit(cli.main(sys.argv[1:]))', 'compile', *env_flags
        ],
                                 cwd=tmp_path,
                                 env={
                                     **os.environ, 'PYTHONPATH': REPO
                                 },
                                 capture_output=True,
                                 text=True,
                                 timeout=300,
                                 check=False)
    else:
        process = compile_command(tmp_path, *env_flags)
    assert process.returncode == 2, process.stderr[-2000:]
    [line] = process.stderr.strip().splitlines()
    assert line.startswith('error: compile: ' + missing), line
    assert not (tmp_path / 'job.json').exists()


def test_the_default_image_is_tagged_as_make_image_tags_it():
    from pipeline import configs  # pylint: disable=import-outside-toplevel
    described = subprocess.run(
        ['git', '-C', REPO, 'describe', '--always', '--dirty'],
        capture_output=True,
        text=True,
        check=True).stdout.strip()
    assert configs.default_image() == f'tfx-deep-pipelines:{described}'
    makefile = open(os.path.join(REPO, 'Makefile'), encoding='utf-8').read()
    assert 'configs.default_image()' in makefile


def test_the_tuner_compiles_and_hands_the_trainer_its_best_values():
    job = compiled_job('fcn', 'gs://bucket/data/JapaneseVowels',
                       ('--set', 'tune_trials=2'))
    with open(job.path, encoding='utf-8') as job_file:
        spec = json_format.ParseDict(
            json.load(job_file)['pipelineSpec'],
            pipeline_spec_pb2.PipelineSpec())
    assert 'Tuner' in spec.root.dag.tasks
    tuned = spec.root.dag.tasks['Trainer'].inputs.artifacts[
        'hyperparameters'].task_output_artifact
    assert (tuned.producer_task,
            tuned.output_artifact_key) == ('Tuner', 'best_hyperparameters')
