"""Tests for pipeline.kubeflow_client against a recording stand-in KFP API.

No Kubeflow cluster can run here, so a real HTTP server on 127.0.0.1 stands in
for the KFP API server: it answers the v2beta1 REST calls kfp 2.5's client
makes (healthz, experiments, runs, recurring runs) minimally but validly, and
records each request so the tests can assert on method, path and JSON body.
The kfp client, its REST layer and the HTTP traffic are all real.
"""

import copy
import http.server
import itertools
import json
import os
import subprocess
import sys
import threading
import urllib.parse

import kfp
import kfp_server_api
import pytest
import yaml

from pipeline import kubeflow_client
from tests import kubeflow_jobs

# Output of KubeflowV2DagRunner (TFX 1.16) for a 1-component pipeline
# (CsvExampleGen), trimmed of the long instance schema; compiling it here
# would take ~30 s of TFX import.
TFX_PIPELINE_JOB = {
    'displayName': 'tiny',
    'labels': {
        'tfx_py_version': '3-10',
        'tfx_runner': 'kubeflow_v2',
        'tfx_version': '1-16-0'
    },
    'pipelineSpec': {
        'components': {
            'CsvExampleGen': {
                'executorLabel': 'CsvExampleGen_executor',
                'inputDefinitions': {
                    'parameters': {
                        'input_base': {
                            'type': 'STRING'
                        },
                        'output_data_format': {
                            'type': 'INT'
                        }
                    }
                },
                'outputDefinitions': {
                    'artifacts': {
                        'examples': {
                            'artifactType': {
                                'instanceSchema':
                                    'title: tfx.Examples\ntype: object\n'
                            }
                        }
                    }
                },
            }
        },
        'deploymentSpec': {
            'executors': {
                'CsvExampleGen_executor': {
                    'container': {
                        'args': [
                            '--executor_class_path',
                            'tfx.components.example_gen.csv_example_gen.executor.Executor',
                            '--json_serialized_invocation_args', '{{$}}'
                        ],
                        'command': [
                            'python', '-m',
                            'tfx.orchestration.kubeflow.v2.container.'
                            'kubeflow_v2_run_executor'
                        ],
                        'image': 'gcr.io/tfx-oss-public/tfx:1.16.0',
                    }
                }
            }
        },
        'pipelineInfo': {
            'name': 'tiny'
        },
        'root': {
            'dag': {
                'tasks': {
                    'CsvExampleGen': {
                        'componentRef': {
                            'name': 'CsvExampleGen'
                        },
                        'inputs': {
                            'parameters': {
                                'input_base': {
                                    'runtimeValue': {
                                        'constantValue': {
                                            'stringValue': '/data/tiny'
                                        }
                                    }
                                },
                                'output_data_format': {
                                    'runtimeValue': {
                                        'constantValue': {
                                            'intValue': '6'
                                        }
                                    }
                                }
                            }
                        },
                        'taskInfo': {
                            'name': 'CsvExampleGen'
                        },
                    }
                }
            }
        },
        'schemaVersion': '2.0.0',
        'sdkVersion': 'tfx-1.16.0',
    },
    'runtimeConfig': {
        'gcsOutputDirectory': 'gs://bucket/root'
    },
}

API = '/apis/v2beta1'


def _with_runtime_parameters():
    """The same job with two runtime parameters, as TFX writes (spec 2.0)."""
    job = copy.deepcopy(TFX_PIPELINE_JOB)
    job['pipelineSpec']['root']['inputDefinitions'] = {
        'parameters': {
            'epochs': {
                'type': 'INT'
            },
            'learning_rate': {
                'type': 'DOUBLE'
            }
        }
    }
    job['runtimeConfig']['parameters'] = {
        'epochs': {
            'intValue': '3'
        },
        'learning_rate': {
            'doubleValue': 0.01
        }
    }
    return job


class KfpApiStub:
    """A minimal KFP v2beta1 API server that records every request."""

    def __init__(self, experiments=None, fail_path=None):
        self.requests = []
        self.experiments = dict(experiments or {})
        self.fail_path = fail_path
        self._ids = itertools.count(1)
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def do_GET(self):
                stub._handle(self, 'GET')

            def do_POST(self):
                stub._handle(self, 'POST')

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                       Handler)
        self.url = f'http://127.0.0.1:{self._server.server_address[1]}'
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    def paths(self):
        return [(r['method'], r['path']) for r in self.requests]

    def body_of(self, method, path):
        [body] = [
            r['body']
            for r in self.requests
            if (r['method'], r['path']) == (method, path)
        ]
        return body

    def _handle(self, handler, method):
        url = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get('Content-Length') or 0)
        raw = handler.rfile.read(length) if length else b''
        body = json.loads(raw) if raw else None
        query = dict(urllib.parse.parse_qsl(url.query))
        self.requests.append({
            'method': method,
            'path': url.path,
            'query': query,
            'body': body
        })
        status, answer = self._answer(method, url.path, query, body)
        self.requests[-1]['answer'] = answer
        payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header('Content-Type', 'application/json')
        handler.send_header('Content-Length', str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, method, path, query, body):
        if path == self.fail_path:
            return 500, {'error': 'injected failure', 'code': 13}
        if (method, path) == ('GET', f'{API}/healthz'):
            return 200, {'multi_user': False}
        if (method, path) == ('GET', f'{API}/experiments'):
            name = json.loads(query['filter'])['predicates'][0]['stringValue']
            if name in self.experiments:
                return 200, {
                    'experiments': [{
                        'experiment_id': self.experiments[name],
                        'display_name': name
                    }],
                    'total_size': 1
                }
            return 200, {}
        if (method, path) == ('POST', f'{API}/experiments'):
            experiment_id = f'exp-{next(self._ids)}'
            self.experiments[body['display_name']] = experiment_id
            return 200, dict(body, experiment_id=experiment_id)
        if (method, path) == ('POST', f'{API}/runs'):
            return 200, dict(body, run_id=f'run-{next(self._ids)}')
        if (method, path) == ('POST', f'{API}/recurringruns'):
            return 200, dict(body, recurring_run_id=f'rr-{next(self._ids)}')
        return 404, {'error': f'no route {method} {path}', 'code': 5}


@pytest.fixture(autouse=True)
def _isolated_kfp_client(tmp_path, monkeypatch):
    # A developer's ~/.config/kfp/context.json (namespace, auth cookie) must
    # not change the requests under test.
    monkeypatch.setattr(kfp.Client, '_LOCAL_KFP_CONTEXT',
                        str(tmp_path / 'no-kfp-context.json'))
    for name in ('KF_PIPELINES_ENDPOINT',
                 'KF_PIPELINES_DEFAULT_EXPERIMENT_NAME',
                 'KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME'):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def package_path(tmp_path):
    path = tmp_path / 'tiny_pipeline.json'
    path.write_text(json.dumps(TFX_PIPELINE_JOB))
    return path


def test_submit_run_creates_experiment_and_run(package_path):
    with KfpApiStub() as api:
        run_id = kubeflow_client.submit_run(api.url,
                                            package_path,
                                            experiment='retraining',
                                            run_name='tiny-1',
                                            params=None)

    assert api.paths() == [
        ('GET', f'{API}/healthz'),
        ('GET', f'{API}/experiments'),
        ('POST', f'{API}/experiments'),
        ('POST', f'{API}/runs'),
    ]
    lookup = json.loads(api.requests[1]['query']['filter'])
    assert lookup['predicates'][0]['key'] == 'display_name'
    assert lookup['predicates'][0]['stringValue'] == 'retraining'
    experiment = api.body_of('POST', f'{API}/experiments')
    assert experiment['display_name'] == 'retraining'
    run = api.body_of('POST', f'{API}/runs')
    assert run['display_name'] == 'tiny-1'
    assert run['experiment_id'] == api.experiments['retraining']
    # The PipelineJob wrapper is gone: the spec itself goes inline, intact.
    assert run['pipeline_spec'] == TFX_PIPELINE_JOB['pipelineSpec']
    assert run['runtime_config'] == {
        'pipeline_root': 'gs://bucket/root',
        'parameters': {}
    }
    assert run_id.startswith('run-')


def test_submit_run_reuses_existing_experiment(package_path):
    with KfpApiStub(experiments={'retraining': 'exp-existing'}) as api:
        kubeflow_client.submit_run(api.url,
                                   package_path,
                                   'retraining',
                                   'r',
                                   params=None,
                                   pipeline_root='gs://other/root',
                                   enable_caching=True)

    assert ('POST', f'{API}/experiments') not in api.paths()
    run = api.body_of('POST', f'{API}/runs')
    assert run['experiment_id'] == 'exp-existing'
    assert run['runtime_config']['pipeline_root'] == 'gs://other/root'
    task = run['pipeline_spec']['root']['dag']['tasks']['CsvExampleGen']
    assert task['cachingOptions'] == {'enableCache': True}


def test_submit_run_merges_parameters_over_package_defaults(tmp_path):
    path = tmp_path / 'job.json'
    path.write_text(json.dumps(_with_runtime_parameters()))
    with KfpApiStub() as api:
        kubeflow_client.submit_run(api.url,
                                   path,
                                   'e',
                                   'r',
                                   params={'epochs': 10})

    run = api.body_of('POST', f'{API}/runs')
    assert run['runtime_config']['parameters'] == {
        'epochs': 10,
        'learning_rate': 0.01
    }


def test_submit_run_rejects_unknown_parameter_before_any_request(package_path):
    with KfpApiStub() as api:
        with pytest.raises(ValueError,
                           match='unknown pipeline parameter.*epochs'):
            kubeflow_client.submit_run(api.url,
                                       package_path,
                                       'e',
                                       'r',
                                       params={'epochs': 1})
    assert api.requests == []


def test_namespace_skips_healthz_and_scopes_experiment(package_path):
    with KfpApiStub() as api:
        kubeflow_client.submit_run(api.url,
                                   package_path,
                                   'e',
                                   'r',
                                   params=None,
                                   namespace='team-a')

    assert api.paths()[0] == ('GET', f'{API}/experiments')
    assert api.requests[0]['query']['namespace'] == 'team-a'
    assert api.body_of('POST', f'{API}/experiments')['namespace'] == 'team-a'


def test_create_recurring_run_sends_six_field_cron(package_path):
    with KfpApiStub() as api:
        job_id = kubeflow_client.create_recurring_run(api.url,
                                                      package_path,
                                                      experiment='retraining',
                                                      job_name='nightly',
                                                      cron='30 3 * * mon-fri',
                                                      max_concurrency=2)

    assert api.paths() == [
        ('GET', f'{API}/healthz'),
        ('GET', f'{API}/experiments'),
        ('POST', f'{API}/experiments'),
        ('POST', f'{API}/recurringruns'),
    ]
    job = api.body_of('POST', f'{API}/recurringruns')
    assert job['display_name'] == 'nightly'
    assert job['experiment_id'] == api.experiments['retraining']
    assert job['trigger'] == {'cron_schedule': {'cron': '0 30 3 * * 1-5'}}
    assert int(job['max_concurrency']) == 2
    assert job['mode'] == 'ENABLE'
    assert job['no_catchup'] is True
    assert job['pipeline_spec'] == TFX_PIPELINE_JOB['pipelineSpec']
    assert job['runtime_config']['pipeline_root'] == 'gs://bucket/root'
    assert job_id.startswith('rr-')


def test_create_recurring_run_rejects_bad_cron_before_any_request(package_path):
    with KfpApiStub() as api:
        with pytest.raises(ValueError, match='hour'):
            kubeflow_client.create_recurring_run(api.url,
                                                 package_path,
                                                 'e',
                                                 'j',
                                                 cron='0 24 * * *')
    assert api.requests == []


def test_server_error_propagates(package_path):
    with KfpApiStub(fail_path=f'{API}/runs') as api:
        with pytest.raises(kfp_server_api.ApiException) as raised:
            kubeflow_client.submit_run(api.url,
                                       package_path,
                                       'e',
                                       'r',
                                       params=None)
    assert raised.value.status == 500


@pytest.fixture(scope='module')
def project_job():
    """This project's own compiled job (the rnn's, reading a bucket)."""
    job = kubeflow_jobs.compiled_job('rnn', 'gs://bucket/data/JapaneseVowels')
    with open(job.path, encoding='utf-8') as job_file:
        return job.path, json.load(job_file)


def _arrived_whole(sent, job):
    """The posted spec is the compiled one: every task, the image, the root."""
    spec = job['pipelineSpec']
    assert sent['pipeline_spec'] == spec
    assert set(sent['pipeline_spec']['root']['dag']['tasks']) == set(
        spec['root']['dag']['tasks']) >= {
            'FileBasedExampleGen', 'Trainer', 'Pusher'
        }
    images = {
        e['container']['image']
        for e in sent['pipeline_spec']['deploymentSpec']['executors'].values()
        if 'container' in e
    }
    assert images == {kubeflow_jobs.IMAGE}
    assert sent['runtime_config'] == {
        'pipeline_root': kubeflow_jobs.PIPELINE_ROOT,
        'parameters': {}
    }


def test_submit_posts_the_projects_compiled_job_whole(project_job):
    path, job = project_job
    with KfpApiStub() as api:
        run_id = kubeflow_client.submit_run(api.url, path, 'retraining',
                                            'rnn-pipeline')
    _arrived_whole(api.body_of('POST', f'{API}/runs'), job)
    assert run_id.startswith('run-')


def test_recurring_run_posts_the_projects_compiled_job_whole(project_job):
    path, job = project_job
    with KfpApiStub() as api:
        kubeflow_client.create_recurring_run(api.url,
                                             path,
                                             'retraining',
                                             'rnn-nightly',
                                             cron='0 3 * * *')
    sent = api.body_of('POST', f'{API}/recurringruns')
    _arrived_whole(sent, job)
    assert sent['trigger'] == {'cron_schedule': {'cron': '0 0 3 * * *'}}


# The command lines `submit` and `schedule --target kubeflow`, run as a user
# runs them against the stand-in API: each compiles the job (TFX, in the
# child process) and hands it to kfp's real client.
PROJECT_DATA = 'gs://bucket/data/JapaneseVowels'
JOB_FLAGS = ('--model', 'rnn', '--target', 'kubeflow', '--image',
             kubeflow_jobs.IMAGE, '--pipeline-root',
             kubeflow_jobs.PIPELINE_ROOT, '--data', PROJECT_DATA)


def _pipeline_cli(folder, *args):
    """`python -m pipeline ARGS` run in `folder`, whose HOME it is: no kfp
    context (~/.config/kfp/context.json) and no KF_PIPELINES_* variables of
    the machine's reach the client."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith('KF_PIPELINES_')
    }
    env.update(PYTHONPATH=kubeflow_jobs.REPO, HOME=str(folder))
    return subprocess.run(
        [sys.executable, '-m', 'pipeline', *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # Bounds a hang only.
        check=False)


def _printed(process):
    """The command's JSON line."""
    assert process.returncode == 0, process.stderr[-3000:]
    [line
    ] = [text for text in process.stdout.splitlines() if text.startswith('{')]
    return json.loads(line)


def test_submit_command_starts_one_run_of_the_compiled_job(
        project_job, tmp_path):
    _, job = project_job
    with KfpApiStub() as api:
        process = _pipeline_cli(tmp_path, 'submit', *JOB_FLAGS, '--host',
                                api.url, '--experiment', 'retraining')
    printed = _printed(process)
    assert api.paths() == [
        ('GET', f'{API}/healthz'),
        ('GET', f'{API}/experiments'),
        ('POST', f'{API}/experiments'),
        ('POST', f'{API}/runs'),
    ]
    [run] = [r for r in api.requests if r['path'] == f'{API}/runs']
    # The job `compile` writes for the same flags, whole, in the experiment
    # named, under the pipeline's name.
    _arrived_whole(run['body'], job)
    assert run['body']['experiment_id'] == api.experiments['retraining']
    assert run['body']['display_name'] == 'rnn-pipeline'
    # The id printed is the one the API gave the run.
    assert printed == {'kubeflow_run_id': run['answer']['run_id']}


def test_schedule_command_on_kubeflow_creates_a_recurring_run(
        project_job, tmp_path):
    _, job = project_job
    with KfpApiStub(experiments={'tfx-deep-pipelines': 'exp-existing'}) as api:
        process = _pipeline_cli(tmp_path, 'schedule', *JOB_FLAGS, '--host',
                                api.url, '--namespace', 'team-a', '--cron',
                                '30 3 * * mon-fri')
    printed = _printed(process)
    # With a namespace no health check; the default experiment exists in it.
    assert api.paths() == [
        ('GET', f'{API}/experiments'),
        ('POST', f'{API}/recurringruns'),
    ]
    assert api.requests[0]['query']['namespace'] == 'team-a'
    [recurring
    ] = [r for r in api.requests if r['path'] == f'{API}/recurringruns']
    sent = recurring['body']
    _arrived_whole(sent, job)
    assert sent['experiment_id'] == 'exp-existing'
    assert sent['display_name'] == 'rnn-pipeline-recurring'
    # The 5-field cron as KFP's 6 fields; one run at a time, no backfill.
    assert sent['trigger'] == {'cron_schedule': {'cron': '0 30 3 * * 1-5'}}
    assert int(sent['max_concurrency']) == 1
    assert sent['no_catchup'] is True and sent['mode'] == 'ENABLE'
    assert printed == {
        'kubeflow_recurring_run_id': recurring['answer']['recurring_run_id']
    }


@pytest.mark.parametrize('missing, flags', [
    ('--cron', ['--host', 'HOST']),
    ('--host', ['--cron', '0 3 * * *']),
])
def test_schedule_on_kubeflow_without_its_flags_is_one_line_and_exit_2(
        tmp_path, missing, flags):
    with KfpApiStub() as api:
        process = _pipeline_cli(
            tmp_path, 'schedule', *JOB_FLAGS,
            *[api.url if flag == 'HOST' else flag for flag in flags])
    assert process.returncode == 2, process.stderr
    assert process.stderr.splitlines() == [
        'error: schedule --target kubeflow needs --host and --cron'
    ], missing
    assert api.requests == []


@pytest.mark.parametrize('expression, expected', [
    ('0 3 * * *', '0 0 3 * * *'),
    ('*/15 9-17 * * mon-fri', '0 0-45/15 9-17 * * 1-5'),
    ('0 0 * * 7', '0 0 0 * * 0'),
    ('@daily', '0 0 0 * * *'),
    ('@hourly', '0 0 * * * *'),
    ('0 12 1,15 jan,jul *', '0 0 12 1,15 1,7 *'),
])
def test_to_kfp_cron(expression, expected):
    assert kubeflow_client.to_kfp_cron(expression) == expected


def test_load_pipeline_job_defaults(tmp_path):
    path = tmp_path / 'job.json'
    path.write_text(json.dumps(_with_runtime_parameters()))
    package = kubeflow_client.load_pipeline_package(path)
    assert package.display_name == 'tiny'
    assert package.pipeline_root == 'gs://bucket/root'
    assert package.parameters == {'epochs': 3, 'learning_rate': 0.01}
    assert package.parameter_names() == {'epochs', 'learning_rate'}


def test_pipeline_spec_yaml_passes_through(tmp_path):
    spec_path = tmp_path / 'spec.yaml'
    spec_path.write_text(yaml.safe_dump(TFX_PIPELINE_JOB['pipelineSpec']))
    package = kubeflow_client.load_pipeline_package(spec_path)
    written = kubeflow_client.write_pipeline_spec(package,
                                                  tmp_path / 'out.yaml')
    with open(written) as spec_file:
        assert yaml.safe_load(spec_file) == TFX_PIPELINE_JOB['pipelineSpec']


def test_not_a_pipeline_package(tmp_path):
    path = tmp_path / 'other.json'
    path.write_text(json.dumps({'hello': 'world'}))
    with pytest.raises(ValueError, match='neither a PipelineJob'):
        kubeflow_client.load_pipeline_package(path)
