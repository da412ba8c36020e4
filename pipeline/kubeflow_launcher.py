"""Runs a compiled Kubeflow job here, task by task.

    python -m pipeline run-compiled FILE

As KFP's v2 launcher would run it on a cluster.

No cluster runs here, so this stands in for the cluster's launcher, and only
for it; everything inside a task is what the pods run. For each task of the
job's PipelineSpec, in DAG order:

- a container task gets its ExecutorInput built with kfp's own local-run code
  (`kfp.local.executor_input_utils`): constant parameters, output artifacts
  under `<pipeline root>/<run>/<task>/<output key>`, and the input artifacts
  earlier tasks output, by URI and metadata. The pipeline-spec 2.0.0 jobs
  TFX writes take parameters in ExecutorInput's `parameters` map, which the
  launcher fills as well. The container's command and args get their
  placeholders replaced by kfp's own code (`kfp.local.placeholder_utils`),
  and the command — TFX's `kubeflow_v2_run_executor` entrypoint, after
  ExampleGen's pre-cache-check driver hook — runs as a subprocess of this
  Python in place of the container. Its `executor_output.json` gives the
  output artifacts and their metadata.
- a resolver task (latest blessed model, previous statistics) answers its
  artifact queries from the artifacts earlier runs of the same pipeline
  recorded in ML Metadata (SQLite under `--home`), the latest match first;
  on a first run they resolve to nothing.

Every task runs (no cache), with the image's environment: this repository on
PYTHONPATH and TF_USE_LEGACY_KERAS=1 (Dockerfile).
"""

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from google.protobuf import json_format
from kfp.local import executor_input_utils
from kfp.local import executor_output_utils
from kfp.local import placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import environment
from pipeline import kubeflow_client

_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PIPELINE_CONTEXT = 'kfp.Pipeline'
_RUN_CONTEXT = 'kfp.PipelineRun'
_METADATA = 'metadata'
# `schema_title="tfx.ModelBlessing"`, `state=LIVE`,
# `metadata.blessed.number_value=1`, `name="..."`: the terms TFX's compiler
# writes (tfx/orchestration/kubeflow/v2/compiler_utils.py).
_TERM = re.compile(r'^\s*([\w.]+)\s*=\s*(?:"([^"]*)"|(\S+))\s*$')
_LOG_TAIL_LINES = 30
# Apart from a local run's ML Metadata (`metadata.sqlite`) in the same home.
METADATA_FILE = 'kubeflow_metadata.sqlite'


class TaskFailed(RuntimeError):
    """A task's command failed; the message names the task and its log."""


class BadJob(ValueError):
    """The file is not a compiled job this launcher can run."""


def _artifact_title(artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> str:
    if artifact_type.schema_title:
        return artifact_type.schema_title
    match = re.search(r'^title:\s*(\S+)', artifact_type.instance_schema, re.M)
    return match.group(1) if match else 'system.Artifact'


def _topological_order(dag: pipeline_spec_pb2.DagSpec) -> List[str]:
    """Task names, each after every task it depends on or reads from."""
    needs = {}
    for name, task in dag.tasks.items():
        producers = {
            spec.task_output_artifact.producer_task
            for spec in task.inputs.artifacts.values()
            if spec.task_output_artifact.producer_task
        }
        needs[name] = set(task.dependent_tasks) | producers
    order: List[str] = []
    while needs:
        ready = sorted(n for n, deps in needs.items() if deps <= set(order))
        if not ready:
            raise BadJob(f'the job\'s DAG has a cycle among {sorted(needs)}')
        order.extend(ready)
        for name in ready:
            del needs[name]
    return order


class ArtifactStore:
    """Output artifacts of compiled-job runs, in ML Metadata (SQLite).

    Each artifact's type is its KFP schema title (`tfx.Model`), its name its
    resource name, its KFP metadata a JSON custom property; it belongs to its
    pipeline's context, which resolver queries search.
    """

    def __init__(self, path: str, pipeline_name: str):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = path
        config.sqlite.connection_mode = (
            metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
        self._store = metadata_store.MetadataStore(config)
        self._pipeline = self._context(_PIPELINE_CONTEXT, pipeline_name)

    def _context(self, type_name: str, name: str) -> int:
        type_id = self._store.put_context_type(
            metadata_store_pb2.ContextType(name=type_name))
        existing = self._store.get_context_by_type_and_name(type_name, name)
        if existing is not None:
            return existing.id
        [context_id] = self._store.put_contexts(
            [metadata_store_pb2.Context(type_id=type_id, name=name)])
        return context_id

    def record(self, run_name: str,
               artifacts: List[pipeline_spec_pb2.RuntimeArtifact]) -> None:
        """Records a task's output artifacts as LIVE in its pipeline run."""
        run = self._context(_RUN_CONTEXT, run_name)
        ids = []
        for artifact in artifacts:
            type_id = self._store.put_artifact_type(
                metadata_store_pb2.ArtifactType(
                    name=_artifact_title(artifact.type)))
            record = metadata_store_pb2.Artifact(
                type_id=type_id,
                uri=artifact.uri,
                name=artifact.name,
                state=metadata_store_pb2.Artifact.LIVE)
            record.custom_properties[_METADATA].string_value = (
                json_format.MessageToJson(artifact.metadata))
            ids.extend(self._store.put_artifacts([record]))
        self._store.put_attributions_and_associations([
            metadata_store_pb2.Attribution(artifact_id=i, context_id=c)
            for i in ids
            for c in (self._pipeline, run)
        ], [])

    def latest(self, query: str,
               run_name: str) -> List[pipeline_spec_pb2.RuntimeArtifact]:
        """The newest earlier artifact that matches `query`.

        The newest artifact of this pipeline's earlier runs that matches `query`
        (`A AND B AND ...` of TFX's compiled terms), or none.
        """
        terms = [_TERM.match(term) for term in query.split(' AND ')]
        if not all(terms):
            raise ValueError(f'unsupported artifact query {query!r}')
        this_run = self._store.get_context_by_type_and_name(
            _RUN_CONTEXT, run_name)
        excluded = ({
            a.id for a in self._store.get_artifacts_by_context(this_run.id)
        } if this_run else set())
        types = {t.id: t.name for t in self._store.get_artifact_types()}
        candidates = [
            a for a in self._store.get_artifacts_by_context(self._pipeline)
            if a.id not in excluded
        ]
        for match in terms:
            key, value = match.group(1), match.group(2) or match.group(3)
            candidates = [
                a for a in candidates
                if _term_holds(a, types[a.type_id], key, value)
            ]
        if not candidates:
            return []
        newest = max(candidates,
                     key=lambda a: (a.create_time_since_epoch, a.id))
        artifact = pipeline_spec_pb2.RuntimeArtifact(name=newest.name,
                                                     uri=newest.uri)
        artifact.type.schema_title = types[newest.type_id]
        json_format.Parse(newest.custom_properties[_METADATA].string_value,
                          artifact.metadata)
        return [artifact]


def _term_holds(artifact: metadata_store_pb2.Artifact, type_name: str, key: str,
                value: str) -> bool:
    if key == 'schema_title':
        return type_name == value
    if key == 'state':
        return metadata_store_pb2.Artifact.State.Name(artifact.state) == value
    if key == 'name':
        return artifact.name == value
    if key.startswith('metadata.'):
        metadata = json.loads(
            artifact.custom_properties[_METADATA].string_value)
        field = key.split('.')[1]
        try:
            return float(metadata.get(field)) == float(value)
        except (TypeError, ValueError):
            return str(metadata.get(field)) == value
    raise ValueError(f'unsupported artifact query term {key}={value}')


class CompiledJobRunner:
    """Runs one compiled PipelineJob, task by task (see the module doc)."""

    def __init__(self, job_path: str, home: str, out: TextIO = sys.stderr):
        try:
            package = kubeflow_client.load_pipeline_package(job_path)
            self.spec = json_format.ParseDict(package.pipeline_spec,
                                              pipeline_spec_pb2.PipelineSpec(),
                                              ignore_unknown_fields=True)
        except (OSError, ValueError, json_format.ParseError) as error:
            text = str(error)
            raise BadJob(text if job_path in
                         text else f'{job_path}: {text}') from error
        self.pipeline_root = package.pipeline_root
        if not self.pipeline_root:
            raise BadJob(f'{job_path}: the job names no pipeline root')
        self.parameters = package.parameters
        self.home = os.path.abspath(home)
        os.makedirs(self.home, exist_ok=True)
        self.pipeline_name = self.spec.pipeline_info.name
        self.run_name = executor_input_utils.get_local_pipeline_resource_name(
            self.pipeline_name)
        self.store = ArtifactStore(os.path.join(self.home, METADATA_FILE),
                                   self.pipeline_name)
        self.outputs: Dict[str, Dict[str, List[Any]]] = {}
        self.timings: Dict[str, float] = {}
        # Resolver task -> the URIs it resolved.
        self.resolved: Dict[str, List[str]] = {}
        self._out = out

    def _say(self, text: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {text}',
              file=self._out,
              flush=True)

    def run(self) -> Dict[str, Any]:
        """Runs every task; returns the run's name, root and task outputs."""
        started = time.monotonic()
        for task_name in _topological_order(self.spec.root.dag):
            self._say(f'{task_name} ...')
            task_started = time.monotonic()
            self.outputs[task_name] = self._run_task(task_name)
            self.timings[task_name] = round(time.monotonic() - task_started, 1)
            self._say(f'{task_name} done in {self.timings[task_name]:.1f} s')
        return {
            'run': self.run_name,
            'pipeline_root': self.pipeline_root,
            'wall_seconds': round(time.monotonic() - started, 1),
            'task_seconds': self.timings,
            'resolved': self.resolved
        }

    def _run_task(self, task_name: str) -> Dict[str, List[Any]]:
        task = self.spec.root.dag.tasks[task_name]
        component = self.spec.components[task.component_ref.name]
        executor = json_format.MessageToDict(
            self.spec.deployment_spec)['executors'][component.executor_label]
        inputs = self._input_artifacts(task)
        if 'resolver' in executor:
            outputs = self._resolve(executor['resolver'], inputs)
            self.resolved[task_name] = [
                a.uri for artifacts in outputs.values() for a in artifacts
            ]
            return outputs
        if 'container' not in executor:
            raise ValueError(f'task {task_name}: unsupported executor '
                             f'{sorted(executor)}')
        return self._run_container(task_name, task, component,
                                   executor['container'], inputs)

    def _input_artifacts(
            self,
            task: pipeline_spec_pb2.PipelineTaskSpec) -> Dict[str, List[Any]]:
        inputs = {}
        for name, spec in task.inputs.artifacts.items():
            producer = spec.task_output_artifact
            if not producer.producer_task:
                raise ValueError(f'input artifact {name}: only task outputs '
                                 'are supported')
            inputs[name] = self.outputs[producer.producer_task].get(
                producer.output_artifact_key, [])
        return inputs

    def _resolve(self, resolver: Dict[str, Any],
                 inputs: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        """A resolver task: each output's query against earlier runs."""
        outputs = {}
        context = {
            'inputs': {
                'artifacts': {
                    name: {
                        'artifacts': [
                            json_format.MessageToDict(a) for a in artifacts
                        ]
                    } for name, artifacts in inputs.items()
                }
            }
        }
        for key, query in resolver['outputArtifactQueries'].items():
            text = query['filter']
            if '{{$.inputs' in text:
                if not all(context['inputs']['artifacts'][name]['artifacts']
                           for name in inputs):
                    outputs[key] = []  # Nothing to look up by.
                    continue
                text = placeholder_utils.resolve_io_placeholders(context, text)
            outputs[key] = self.store.latest(text, self.run_name)
        return outputs

    def _executor_input(
            self, task_name: str, task: pipeline_spec_pb2.PipelineTaskSpec,
            component: pipeline_spec_pb2.ComponentSpec,
            inputs: Dict[str, List[Any]]) -> pipeline_spec_pb2.ExecutorInput:
        arguments = {}
        for name, spec in task.inputs.parameters.items():
            if spec.HasField('runtime_value'):
                constant = spec.runtime_value.constant_value
                arguments[name] = getattr(constant,
                                          constant.WhichOneof('value'))
            elif spec.component_input_parameter:
                arguments[name] = self.parameters[
                    spec.component_input_parameter]
        # kfp.local builds the rest; it takes no input artifacts itself.
        outputs_only = pipeline_spec_pb2.ComponentSpec()
        outputs_only.CopyFrom(component)
        outputs_only.input_definitions.ClearField('artifacts')
        task_root = executor_input_utils.construct_local_task_root(
            self.pipeline_root, self.run_name, task_name)
        executor_input = executor_input_utils.construct_executor_input(
            outputs_only, arguments, task_root)
        for name, artifacts in inputs.items():
            executor_input.inputs.artifacts[name].artifacts.extend(artifacts)
        for name, value in arguments.items():
            old_style = executor_input.inputs.parameters[name]
            if isinstance(value, str):
                old_style.string_value = value
            elif isinstance(value, int):
                old_style.int_value = value
            else:
                old_style.double_value = value
        for key, artifact_list in executor_input.outputs.artifacts.items():
            for artifact in artifact_list.artifacts:
                # A resource name unique across runs, as MLMD's on a cluster;
                # the blessing names its model by it.
                artifact.name = f'{self.run_name}/{task_name}/{key}'
        return executor_input

    def _run_container(self, task_name: str,
                       task: pipeline_spec_pb2.PipelineTaskSpec,
                       component: pipeline_spec_pb2.ComponentSpec,
                       container: Dict[str, Any],
                       inputs: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        executor_input = self._executor_input(task_name, task, component,
                                              inputs)
        executor_input_dict = executor_input_utils.executor_input_to_dict(
            executor_input, component)
        log_path = os.path.join(self.home, 'logs', self.run_name,
                                f'{task_name}.log')
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        hook = container.get('lifecycle', {}).get('preCacheCheck')
        steps = ([hook] if hook else []) + [container]
        for step in steps:
            command = placeholder_utils.replace_placeholders(
                list(step.get('command', [])) + list(step.get('args', [])),
                executor_input_dict, self.run_name, task_name,
                self.pipeline_root)
            self._execute(task_name, command, log_path)
        output = executor_output_utils.load_executor_output(
            executor_input.outputs.output_file)
        outputs = {
            key:
                list(output.artifacts[key].artifacts)
                if key in output.artifacts else list(artifact_list.artifacts)
            for key, artifact_list in executor_input.outputs.artifacts.items()
        }
        for key, artifacts in outputs.items():
            declared = executor_input.outputs.artifacts[key].artifacts
            for artifact, spec in zip(artifacts, declared):
                artifact.type.CopyFrom(spec.type)
                artifact.name = artifact.name or spec.name
            self.store.record(self.run_name, artifacts)
        return outputs

    def _execute(self, task_name: str, command: List[str],
                 log_path: str) -> None:
        """Runs a container command with the image's environment."""
        if command and command[0] in ('python', 'python3'):
            command = [sys.executable, *command[1:]]
        env = {
            **os.environ,
            **environment.LEGACY_KERAS_ENV, 'PYTHONPATH':
                os.pathsep.join(
                    [_REPO_DIR] +
                    [p for p in [os.environ.get('PYTHONPATH')] if p])
        }
        with open(log_path, 'a', encoding='utf-8') as log:
            process = subprocess.run(command,
                                     cwd=_REPO_DIR,
                                     env=env,
                                     stdout=log,
                                     stderr=subprocess.STDOUT,
                                     check=False)
        if process.returncode != 0:
            with open(log_path, encoding='utf-8') as log:
                lines = [line.rstrip() for line in log if line.strip()]
            print('\n'.join(lines[-_LOG_TAIL_LINES:]), file=self._out)
            raise TaskFailed(
                f'task {task_name} failed (exit {process.returncode}): '
                f'{lines[-1] if lines else "no output"} (log: {log_path})')


def run_compiled(job_path: str,
                 home: str,
                 out: TextIO = sys.stderr) -> Dict[str, Any]:
    """Runs a compiled PipelineJob here, task by task.

    Returns its summary: run, pipeline_root, report, blessed, pushed_model,
    accuracy, wall_seconds, task_seconds, resolved (resolver task -> URIs).
    """
    runner = CompiledJobRunner(job_path, home, out)
    result = runner.run()
    return {**result, **_outcome(runner.outputs)}


def _outcome(outputs: Dict[str, Dict[str, List[Any]]]) -> Dict[str, Any]:
    """Blessed, pushed model and accuracy, from the tasks' output artifacts."""

    def first(task: str, key: str) -> Optional[Any]:
        artifacts = outputs.get(task, {}).get(key, [])
        return artifacts[0] if artifacts else None

    def metadata(artifact) -> Dict[str, Any]:
        return json_format.MessageToDict(artifact.metadata) if artifact else {}

    blessing = metadata(first('Evaluator', 'blessing'))
    pushed = metadata(first('Pusher', 'pushed_model'))
    evaluation = first('Evaluator', 'evaluation')
    accuracy = None
    if evaluation is not None:
        from pipeline import summary  # pylint: disable=import-outside-toplevel
        accuracy = summary.accuracy(evaluation.uri)
    page = first('RunReport', 'report')
    return {
        # The run's page (pipeline/run_report/), as a local run's `report`.
        'report': page.uri if page is not None else None,
        'blessed': bool(blessing.get('blessed')),
        'pushed_model':
            (pushed.get('pushed_destination') if pushed.get('pushed') else None
            ),
        'accuracy': accuracy
    }
