"""`python -m pipeline compile --target kubeflow`: the PipelineJob JSON that
Kubeflow Pipelines runs. No cluster runs here; the file is checked against
the KFP pipeline-spec protos, and holds every component of the local run."""

import json
import os
import subprocess
import sys

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tests import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_COMPONENTS = {
    'FileBasedExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator',
    'DataGate', 'Transform', 'Trainer', 'latest_blessed_model_resolver',
    'Evaluator', 'ServingCheck', 'Pusher'}


@pytest.mark.parametrize('model,make_data,flags,extra', [
    ('convnet', lambda path: datasets.write_idx_dataset(path), [], set()),
    ('rnn', lambda path: datasets.write_ts_dataset(path), [], set()),
    # With random search: the Tuner compiles like every other component.
    ('fcn', lambda path: datasets.write_ts_dataset(path),
     ['--set', 'tune_trials=2'], {'Tuner'}),
])
def test_compiled_pipeline_job_parses_and_holds_every_component(
        tmp_path, model, make_data, flags, extra):
    data = make_data(str(tmp_path / 'data'))
    output = tmp_path / f'{model}.json'
    subprocess.run(
        [sys.executable, '-m', 'pipeline', 'compile', '--model', model,
         '--target', 'kubeflow', '--data', data, '--output', str(output),
         '--image', 'registry.example/pipeline:test',
         '--pipeline-root', 'gs://bucket/root', *flags],
        cwd=REPO, check=True, capture_output=True, timeout=600)

    job = json_format.ParseDict(json.loads(output.read_text()),
                                pipeline_spec_pb2.PipelineJob(),
                                ignore_unknown_fields=False)
    spec = json_format.ParseDict(
        json_format.MessageToDict(job.pipeline_spec),
        pipeline_spec_pb2.PipelineSpec())
    tasks = set(spec.root.dag.tasks)
    # The resolver compiles into importer-like sub-tasks; all others by name.
    for component in (LOCAL_COMPONENTS | extra) - {
            'latest_blessed_model_resolver'}:
        assert component in tasks, (component, sorted(tasks))
    assert any(t.startswith('latest_blessed_model_resolver') for t in tasks)
    if 'Tuner' in extra:  # The Trainer takes the Tuner's best values.
        tuned = spec.root.dag.tasks['Trainer'].inputs.artifacts[
            'hyperparameters'].task_output_artifact
        assert (tuned.producer_task, tuned.output_artifact_key) == (
            'Tuner', 'best_hyperparameters')
    assert job.runtime_config.gcs_output_directory == 'gs://bucket/root'
    images = {e['container']['image']
              for e in spec.deployment_spec['executors'].values()
              if 'container' in e}
    assert images == {'registry.example/pipeline:test'}
