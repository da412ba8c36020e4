"""Runs the pipeline locally or compiles it for Kubeflow Pipelines.

Runs the pipeline locally (LocalDagRunner, ML Metadata in SQLite) or compiles it
for Kubeflow Pipelines (KubeflowV2DagRunner).
"""

import contextlib
import datetime
import glob
import logging
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, TextIO

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.compiler import constants
from tfx.orchestration import metadata
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
from tfx.orchestration.local import runner_utils
from tfx.orchestration.portable import launcher
from tfx.orchestration.portable import runtime_parameter_utils
from tfx.orchestration.portable import tfx_runner
from tfx.proto.orchestration import pipeline_pb2
from tfx.utils import dependency_utils

from models import distribute
from pipeline import beam_runners
from pipeline import configs
from pipeline import pipeline as pipeline_lib
from pipeline import report
from pipeline import summary


class ProgressDagRunner(tfx_runner.IrBasedRunner):
    """LocalDagRunner's loop, printing each component as it starts and ends.

    It runs the nodes in topological order with TFX's own Launcher, exactly
    as LocalDagRunner does, and also records each component's wall time and
    whether ML Metadata's cache answered for it.
    """

    def __init__(self, out: Optional[TextIO] = None):
        super().__init__()
        # Resolved now, not at import: tests and callers may swap stderr.
        self._out = out or sys.stderr
        self.run_id = ''
        self.timings: Dict[str, float] = {}

    def _say(self, text: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {text}',
              file=self._out,
              flush=True)

    def run_with_ir(
            self,
            pipeline: pipeline_pb2.Pipeline,
            run_options: Optional[pipeline_pb2.RunOptions] = None) -> None:
        """Runs every node of the compiled pipeline, in order."""
        if run_options is not None:
            raise ValueError('partial runs are not supported here')
        self.run_id = datetime.datetime.now().isoformat()
        runtime_parameter_utils.substitute_runtime_parameter(
            pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: self.run_id})
        deployment = runner_utils.extract_local_deployment_config(pipeline)
        connection = getattr(
            deployment.metadata_connection_config,
            deployment.metadata_connection_config.WhichOneof(
                'connection_config'))
        for node in pipeline.nodes:
            pipeline_node = node.pipeline_node
            node_id = pipeline_node.node_info.id
            component_launcher = launcher.Launcher(
                pipeline_node=pipeline_node,
                mlmd_connection=metadata.Metadata(connection),
                pipeline_info=pipeline.pipeline_info,
                pipeline_runtime_spec=pipeline.runtime_spec,
                executor_spec=runner_utils.extract_executor_spec(
                    deployment, node_id),
                custom_driver_spec=runner_utils.extract_custom_driver_spec(
                    deployment, node_id))
            self._say(f'{node_id} ...')
            started = time.monotonic()
            execution = component_launcher.launch()
            seconds = time.monotonic() - started
            self.timings[node_id] = round(seconds, 1)
            cached = execution is not None and _was_cached(
                connection, execution.execution_id)
            self._say(f'{node_id} done in {seconds:.1f} s'
                      f'{" (cached)" if cached else ""}')


def _was_cached(connection, execution_id: int) -> bool:
    with metadata.Metadata(connection) as handle:
        [execution] = handle.store.get_executions_by_id([execution_id])
    return execution.last_known_state == metadata_store_pb2.Execution.CACHED


class _FirstRunResolutionFilter(logging.Filter):
    """Drops TFX's expected first-run resolver traceback.

    Drops the traceback TFX logs as an ERROR when the previous-statistics
    resolver finds nothing: on a pipeline's first run that is expected, and the
    run goes on without a drift baseline.
    """

    _PREFIX = (f'[{pipeline_lib.PREVIOUS_STATISTICS_RESOLVER}] '
               'Input resolution error')

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._PREFIX)


class _BelowErrorFilter(logging.Filter):
    """Drops INFO and WARNING records, whatever level a library's logger has.

    TFX's
    `ArtifactQuery.property_predicate is not supported` and `payload_format`
    warnings reach absl's logger at WARNING.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


# Loggers whose records below ERROR the default console drops.
_QUIET_LOGGERS = ('absl', 'tensorflow', 'apache_beam')


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Keeps libraries' INFO and WARNING lines off the console.

    Keeps TFX's, Beam's and TensorFlow's INFO and WARNING lines off the console
    unless `verbose`; errors still show, but for the expected one of a first run
    (_FirstRunResolutionFilter).
    """
    filters = [('absl', _FirstRunResolutionFilter())]
    if not verbose:
        filters += [(name, _BelowErrorFilter()) for name in _QUIET_LOGGERS]
    for name, log_filter in filters:
        logging.getLogger(name).addFilter(log_filter)
    try:
        with _log_level(verbose):
            yield
    finally:
        for name, log_filter in filters:
            logging.getLogger(name).removeFilter(log_filter)


@contextlib.contextmanager
def _log_level(verbose: bool) -> Iterator[None]:
    if verbose:
        logging.getLogger('absl').setLevel(logging.INFO)
        yield
        return
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old_level)


@contextlib.contextmanager
def _no_tfx_package_for_local_beam(beam_args: List[str]) -> Iterator[None]:
    """Keeps TFX from packaging itself for Beam workers that have it.

    Before every Beam component TFX copies its own installed source (48 MB)
    to a new temporary folder it never removes and runs `setup.py sdist`
    there, so that remote workers can install it (`--extra_package`): 2-3 s
    a component, and ~200 MB of /tmp a run. The FnApiRunner's bundles run
    in this process or in worker processes of this very environment, and
    stage no packages, so the local runs skip it; other runners still get it
    (or name their own packages or image).
    """
    if not beam_runners.beam_runs_locally(beam_args):
        yield
        return
    make_flags = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = list
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = make_flags


_UNFINISHED = (metadata_store_pb2.Execution.NEW,
               metadata_store_pb2.Execution.RUNNING)
INTERRUPTED_PROPERTY = 'interrupted'


def recover_interrupted(connection,
                        config: configs.RunConfig,
                        out: Optional[TextIO] = None) -> List[int]:
    """Marks this pipeline's executions left unfinished as FAILED.

    A run killed mid-way (kill -9, power loss) leaves its execution RUNNING in
    ML Metadata and its output folders half written. Runs of one pipeline on
    one home never overlap (the run lock), so any unfinished execution found
    before a run starts belongs to a dead run: its outputs, never published,
    are removed, and it is marked FAILED, so that nothing reads it as live.

    Returns:
        The ids of the executions recovered.
    """
    if not os.path.exists(config.metadata_path):
        return []
    store = metadata_store.MetadataStore(connection)
    pipeline_context = store.get_context_by_type_and_name(
        'pipeline', config.pipeline_name)
    if pipeline_context is None:
        return []
    node_type = store.get_context_type('node')
    recovered = []
    for execution in store.get_executions_by_context(pipeline_context.id):
        if execution.last_known_state not in _UNFINISHED:
            continue
        node_ids = [
            c.name.split('.', 1)[-1]
            for c in store.get_contexts_by_execution(execution.id)
            if c.type_id == node_type.id
        ]
        removed = []
        for node_id in node_ids:
            node_root = os.path.join(config.pipeline_root, node_id)
            for folder in (
                    glob.glob(os.path.join(node_root, '*', str(execution.id))) +
                [
                    os.path.join(node_root, '.system', 'executor_execution',
                                 str(execution.id))
                ]):
                if os.path.isdir(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        execution.custom_properties[INTERRUPTED_PROPERTY].string_value = (
            'interrupted: still running when the next run started')
        store.put_executions([execution])
        recovered.append(execution.id)
        print(
            f'[{time.strftime("%H:%M:%S")}] {"/".join(node_ids)}: '
            f'execution {execution.id} was interrupted; marked FAILED, '
            f'{len(removed)} half-written folders removed',
            file=out or sys.stderr,
            flush=True)
    return recovered


def metadata_config(config: configs.RunConfig):
    """ML Metadata in SQLite under the run's home."""
    os.makedirs(config.home_path, exist_ok=True)
    return metadata.sqlite_metadata_connection_config(config.metadata_path)


def tensorboard_logdir(config: configs.RunConfig) -> str:
    """The folder holding every Trainer run's TensorBoard logs."""
    return os.path.join(config.pipeline_root, 'Trainer', 'model_run')


def run_local(config: configs.RunConfig,
              out: Optional[TextIO] = None,
              verbose: bool = False,
              serving_check: bool = True,
              started: Optional[float] = None) -> Dict[str, Any]:
    """Runs one pipeline run with LocalDagRunner's loop (ProgressDagRunner).

    Args:
        config: The run's configuration.
        out: Where progress lines go (default: stderr).
        verbose: Show TFX's, Beam's and TensorFlow's logs.
        serving_check: Check the model in a model server before pushing.
        started: time.monotonic() when the job started (default: now).

    Returns:
        The run's summary (pipeline/summary.py): model, profile, blessed,
        pushed_model, accuracy, wall_seconds, ...
    """
    started = time.monotonic() if started is None else started
    out = out or sys.stderr
    # The Trainer runs in this process: its devices are made before any
    # component starts TensorFlow.
    params = config.hyperparameters
    distribute.prepare_devices(params['strategy'], int(params['cpu_devices']))
    connection = metadata_config(config)
    runner = ProgressDagRunner(out)
    failure = None
    # Quiet from the pipeline's construction on: TFX warns there too.
    with _quiet_logs(verbose), \
            _no_tfx_package_for_local_beam(config.effective_beam_args):
        tfx_pipeline = pipeline_lib.create_pipeline(
            config,
            config.data_path,
            metadata_connection_config=connection,
            serving_check=serving_check)
        recover_interrupted(connection, config, out)
        try:
            runner.run(tfx_pipeline)
        except Exception as error:  # pylint: disable=broad-except
            if not runner.run_id:
                raise
            # Reported below, then raised: what ran is worth a page most
            # when a component stopped the run (the anomalies that did).
            failure = error
    if 'Trainer' in runner.timings:
        runner._say('training curves: tensorboard --logdir '  # pylint: disable=protected-access
                    f'{tensorboard_logdir(config)}')
    store = metadata_store.MetadataStore(connection)
    try:
        result = {
            'model': config.model,
            'profile': config.profile,
            'run': runner.run_id,
            **summary.run_summary(store, runner.run_id)
        }
    except Exception:  # pylint: disable=broad-except
        if failure is None:
            raise
        raise failure  # pylint: disable=raise-missing-from
    if failure is not None:
        result['failed'] = f'{type(failure).__name__}: {failure}'
    try:
        result['report'] = report.write_report(
            store, runner.run_id,
            report.report_path(config.home_path, config.pipeline_name,
                               runner.run_id), result)
    except Exception as e:  # pylint: disable=broad-except
        # The run did its work (a model may be pushed already): a report
        # that cannot be written is said, and does not fail the run.
        result['report'] = None
        runner._say(f'report not written: {type(e).__name__}: {e}')  # pylint: disable=protected-access
    if failure is not None:
        if result['report']:
            runner._say(f'report: {result["report"]}')  # pylint: disable=protected-access
        raise failure
    return {
        **result, 'wall_seconds': round(time.monotonic() - started, 1),
        'component_seconds': runner.timings
    }


def compile_kubeflow(config: configs.RunConfig, output: str) -> str:
    """Writes the pipeline as a Kubeflow Pipelines (v2) PipelineJob JSON.

    Nothing is read from the data or the compiling machine: the job holds the
    image, pipeline root and data URI of `config` (configs.KubeflowTarget),
    and ExampleGen learns the data's layout in its pod.

    Returns:
        The path written.
    """
    target = config.kubeflow_target()
    # Beam's workers run the image, which holds TFX and this project: by
    # default TFX would build and ship an sdist of itself at every Beam
    # component's start (tens of seconds each).
    beam_args = config.effective_beam_args + (
        [] if config.beam_args else [f'--sdk_container_image={target.image}'])
    tfx_pipeline = pipeline_lib.create_pipeline(
        config,
        target.data,
        beam_pipeline_args=beam_args,
        pipeline_root=target.pipeline_root,
        serving_model_dir=target.serving_model_dir,
        run_report=True)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=target.image),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output))
    runner.run(tfx_pipeline, write_out=True)
    return output
