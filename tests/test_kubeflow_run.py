"""The compiled Kubeflow jobs, run task by task: `python -m pipeline compile
--target kubeflow`, then `python -m pipeline run-compiled`.

No Kubeflow cluster can run here: `run-compiled` stands in for the cluster's
KFP v2 launcher, and only for it. It builds each task's ExecutorInput and
command with kfp's own code and runs the command the container would run —
TFX's `kubeflow_v2_run_executor` entrypoint, with this project's executors —
as a subprocess; artifacts pass between tasks by URI under the job's
pipeline root. One job per model family (the convnet on class folders, the
rnn on a .ts file pair, whose class names only ExampleGen learns when the
job runs), both run at once as two pipelines would on a cluster, and shared
by this module's tests; each pushed model is then served over gRPC by the
project's model server.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import kubeflow_launcher
from serving import client as client_lib
from tests import datasets
from tests.serving import server_utils

# Heavy (tests/conftest.py): two Kubeflow jobs, task by task.
pytestmark = pytest.mark.heavy(270)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Smoke-sized, set at compile time as a user would: a few epochs of a few
# steps (min_train_steps=0, not the smoke profile's 200 steps); the classes
# differ plainly.
SMOKE = {
    'convnet': [
        '--set', 'epochs=5', '--set', 'min_train_steps=0', '--set',
        'conv_filters=[8]', '--set', 'dense_units=16', '--set',
        'min_accuracy=0.3'
    ],
    'rnn': [
        '--set', 'epochs=15', '--set', 'min_train_steps=0', '--set',
        'units=[8]', '--set', 'learning_rate=0.01', '--set', 'min_accuracy=0.3'
    ],
}
CLASS_NAMES = ('boot', 'coat', 'dress', 'shirt')
SEQUENCE_LABELS = ('a', 'b', 'c')


def _start(*args):
    return subprocess.Popen([sys.executable, '-m', 'pipeline', *args],
                            cwd=REPO,
                            env={
                                **os.environ, 'PYTHONPATH': REPO
                            },
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)


def _finish(process, timeout=3600):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = [line for line in stdout.splitlines() if line.startswith('{')]
    return stderr, (json.loads(lines[-1]) if lines else None)


def _cli(*args, timeout=3600):
    process = _start(*args)
    stderr, summary = _finish(process, timeout)
    return process.returncode, stderr, summary


def _write_named_class_folders(root, train, test):
    """root/<split>/<class name>/<n>.png: images whose class is visible."""
    for split, count, seed in (('train', train, 0), ('test', test, 1)):
        images, labels = datasets.images_with_labels(count, len(CLASS_NAMES),
                                                     seed)
        for n, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(root, split, CLASS_NAMES[label])
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f'{n}.png'), 'wb') as f:
                f.write(datasets.png_bytes(image))
    return root


def _run_at_once(step, models):
    """Starts `step(model)`'s command for every model, then waits for all."""
    processes = {model: _start(*step(model)) for model in models}
    results = {}
    for model, process in processes.items():
        stderr, summary = _finish(process)
        assert process.returncode == 0 and summary, (model, stderr[-5000:])
        results[model] = {'summary': summary, 'log': stderr}
    return results


@pytest.fixture(scope='module')
def jobs(tmp_path_factory):
    """Both families' jobs, compiled and run at once; model -> the run."""
    root = tmp_path_factory.mktemp('kfp')
    data = {
        'convnet':
            _write_named_class_folders(str(root / 'images'),
                                       train=400,
                                       test=100),
        'rnn':
            datasets.write_ts_dataset(str(root / 'sequences'),
                                      train=60,
                                      test=30,
                                      class_labels=SEQUENCE_LABELS),
    }

    def compile_job(model):
        return ('compile', '--model', model, '--target', 'kubeflow', '--image',
                'tfx-deep-pipelines:test', '--pipeline-root',
                str(root / model / 'pipeline_root'), '--data', data[model],
                '--output', str(root / f'{model}.json'), *SMOKE[model])

    def run_job(model):
        return ('run-compiled', str(root / f'{model}.json'), '--home',
                str(root / model / 'home'))

    _run_at_once(compile_job, SMOKE)
    runs = _run_at_once(run_job, SMOKE)
    for model, run in runs.items():
        run['job'] = str(root / f'{model}.json')
        run['root'] = str(root / model / 'pipeline_root')
    return runs


def _check_every_task_ran_and_pushed(run, model):
    with open(run['job'], encoding='utf-8') as job_file:
        tasks = json.load(job_file)['pipelineSpec']['root']['dag']['tasks']
    summary = run['summary']
    assert set(summary['task_seconds']) == set(tasks)
    # A first run: the resolvers find nothing earlier in this root.
    assert summary['resolved'] == {
        name: [] for name in tasks if 'resolver' in name
    }, summary
    assert summary['blessed'] is True, run['log'][-3000:]
    pushed = summary['pushed_model']
    assert os.path.dirname(pushed) == os.path.join(run['root'], 'serving',
                                                   model)
    assert os.path.basename(pushed).isdigit()
    return pushed


@pytest.fixture(scope='module')
def kfp_server(jobs, tmp_path_factory):
    """One model server for both jobs' pushed models; model -> its client."""
    workdir = tmp_path_factory.mktemp('kfp_server')
    entries = ''.join(f"""
          config {{
            name: "{model}"
            base_path: "{os.path.dirname(run['summary']['pushed_model'])}"
            model_platform: "tensorflow"
          }}""" for model, run in jobs.items())
    config = workdir / 'models.config'
    config.write_text('model_config_list {%s\n}\n' % entries)
    server = server_utils.start_model_server(workdir,
                                             [f'--model_config_file={config}'],
                                             rest=False,
                                             timeout=600)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            for model in jobs:
                client.wait_until_available(model, timeout=180)
            yield client
    finally:
        server.stop()


def test_convnet_job_reaches_pusher_and_its_model_answers_over_grpc(
        jobs, kfp_server):
    _check_every_task_ran_and_pushed(jobs['convnet'], 'convnet')
    images, labels = datasets.images_with_labels(20, len(CLASS_NAMES), seed=5)
    predictions = kfp_server.predict_images(
        'convnet', [datasets.png_bytes(i) for i in images])
    # The folders' names, learned by ExampleGen when the job ran (nothing of
    # the data was read at compile time), reach the served model.
    assert {p.top_class for p in predictions} <= set(CLASS_NAMES)
    hits = np.mean([
        p.top_class == CLASS_NAMES[label]
        for p, label in zip(predictions, labels, strict=True)
    ])
    assert hits > 0.5, hits


def test_rnn_job_reaches_pusher_and_its_model_answers_over_grpc(
        jobs, kfp_server):
    _check_every_task_ran_and_pushed(jobs['rnn'], 'rnn')
    sequences = datasets.sequences_with_labels(12, SEQUENCE_LABELS, seed=7)
    predictions = kfp_server.predict_sequences('rnn',
                                               [s.values for s in sequences])
    # The .ts header's labels, learned when the job ran, reach the served
    # model.
    assert {p.top_class for p in predictions} <= set(SEQUENCE_LABELS)
    hits = np.mean([
        p.top_class == s.label
        for p, s in zip(predictions, sequences, strict=True)
    ])
    assert hits > 0.5, hits


# RunReport's outputs (pipeline/run_report/): KFP v2's visualization types.
UI_ARTIFACTS = {
    'report': 'system.HTML',
    'metrics': 'system.Metrics',
    'confusion_matrix': 'system.ClassificationMetrics',
}


@pytest.mark.parametrize('model, class_names', [('convnet', CLASS_NAMES),
                                                ('rnn', SEQUENCE_LABELS)])
def test_compiled_run_leaves_the_kubeflow_ui_its_report_and_metrics(
        jobs, model, class_names):
    """The job's last task outputs the run's page (system.HTML), TFMA's
    headline metrics (system.Metrics) and the confusion matrix by class name
    (system.ClassificationMetrics), as its executor output tells the
    launcher, which records them by those types."""
    run = jobs[model]
    with open(run['job'], encoding='utf-8') as job_file:
        component = json.load(
            job_file)['pipelineSpec']['components']['RunReport']
    declared = component['outputDefinitions']['artifacts']
    assert {
        key: yaml.safe_load(spec['artifactType']['instanceSchema'])['title']
        for key, spec in declared.items()
    } == UI_ARTIFACTS
    [output_file] = glob.glob(
        os.path.join(run['root'], run['summary']['run'], 'RunReport',
                     'executor_output.json'))
    with open(output_file, encoding='utf-8') as f:
        outputs = {
            key: value['artifacts'][0]
            for key, value in json.load(f)['artifacts'].items()
        }
    assert set(outputs) == set(UI_ARTIFACTS)
    for key, artifact in outputs.items():
        # Under the run's task folder, where the cluster's launcher puts it.
        assert artifact['uri'] == os.path.join(os.path.dirname(output_file),
                                               key)
    page_uri = outputs['report']['uri']
    assert run['summary']['report'] == page_uri
    with open(page_uri, encoding='utf-8') as f:
        page = f.read()
    # Every section whose component ran has its content (on a first run
    # only the drift section has nothing to compare with).
    for section in ('statistics', 'anomalies', 'training', 'metrics',
                    'confusion', 'comparison', 'serving'):
        body = page.split(f'<section id="{section}">')[1].split('</section>')[0]
        assert 'class="none"' not in body, (section, body[:300])
    assert all(f'>{name}<' in page for name in class_names)
    assert f'<code>{run["summary"]["run"]}</code>' in page

    accuracy = run['summary']['accuracy']
    metrics = outputs['metrics']['metadata']
    assert metrics['accuracy'] == pytest.approx(accuracy, abs=1e-4)
    assert 'example_count' in metrics, sorted(metrics)
    matrix = outputs['confusion_matrix']['metadata']['confusionMatrix']
    assert [s['displayName'] for s in matrix['annotationSpecs']
           ] == list(class_names)
    rows = np.array([r['row'] for r in matrix['rows']])
    assert rows.shape == (len(class_names), len(class_names))
    # The matrix of the accuracy reported: correct over all.
    assert np.trace(rows) / rows.sum() == pytest.approx(accuracy, abs=1e-4)
    assert rows.sum() == metrics['example_count']

    # The launcher recorded them by their KFP types, as the UI reads them.
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(run['root'], '..', 'home',
                                              kubeflow_launcher.METADATA_FILE)
    store = metadata_store.MetadataStore(config)
    for key, title in UI_ARTIFACTS.items():
        assert outputs[key]['uri'] in {
            a.uri for a in store.get_artifacts_by_type(title)
        }, title


def test_resolvers_answer_from_earlier_runs_of_the_pipeline_only(tmp_path):
    """The launcher's artifact queries, on real ML Metadata: the newest
    matching artifact of an earlier run, never one of the run asking."""
    store = kubeflow_launcher.ArtifactStore(str(tmp_path / 'mlmd.sqlite'), 'p')

    def artifact(title, name, **metadata):
        runtime = kubeflow_launcher.pipeline_spec_pb2.RuntimeArtifact(
            name=name, uri=f'/root/{name}')
        runtime.type.schema_title = title
        runtime.metadata.update(metadata)
        return runtime

    store.record('run1', [
        artifact('tfx.Model', 'run1/Trainer/model'),
        artifact('tfx.ModelBlessing',
                 'run1/Evaluator/b',
                 blessed=1,
                 current_model_id='run1/Trainer/model')
    ])
    store.record('run2', [
        artifact('tfx.Model', 'run2/Trainer/model'),
        artifact('tfx.ModelBlessing',
                 'run2/Evaluator/b',
                 blessed=0,
                 current_model_id='run2/Trainer/model')
    ])
    blessed = ('schema_title="tfx.ModelBlessing" AND state=LIVE AND '
               'metadata.blessed.number_value=1')
    [blessing] = store.latest(blessed, 'run3')
    assert blessing.name == 'run1/Evaluator/b'
    [model] = store.latest(
        'schema_title="tfx.Model" AND state=LIVE AND '
        'name="run1/Trainer/model"', 'run3')
    assert model.uri == '/root/run1/Trainer/model'
    [newest] = store.latest('schema_title="tfx.Model" AND state=LIVE', 'run3')
    assert newest.name == 'run2/Trainer/model'
    # A run never resolves its own outputs, nor anything on a first run.
    assert store.latest(blessed, 'run1') == []
    assert kubeflow_launcher.ArtifactStore(str(tmp_path / 'other.sqlite'),
                                           'p').latest(blessed, 'run1') == []


def test_run_compiled_refuses_a_file_that_is_no_job_in_one_line(tmp_path):
    not_a_job = tmp_path / 'job.json'
    not_a_job.write_text('{"displayName": "x"}')
    returncode, stderr, summary = _cli('run-compiled',
                                       str(not_a_job),
                                       '--home',
                                       str(tmp_path / 'home'),
                                       timeout=300)
    assert returncode == 2 and summary is None
    [line] = stderr.strip().splitlines()
    assert line.startswith(f'error: {not_a_job}: neither a PipelineJob'), line
