"""Retraining on a schedule or when data lands, locally or on Kubeflow.

The command line's `schedule` and `submit` commands live here; the trigger
machinery is pipeline/scheduler.py, the KFP calls pipeline/kubeflow_client.py.
Each local run is a `python -m pipeline run` child process: a failed or
crashed run cannot take the scheduler down, and memory starts fresh.
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

from common import names
from pipeline import configs
from pipeline import kubeflow_client
from pipeline import scheduler
from pipeline import spans


class RunFailed(RuntimeError):
    """A pipeline run child process failed; carries its last error line."""


# How long a run stopped by the scheduler has to cancel its engine jobs.
_CHILD_STOP_SECONDS = 120.0


def run_in_child(run_args: List[str]) -> Dict[str, Any]:
    """Runs `python -m pipeline run RUN_ARGS`; returns its JSON summary."""
    return child_summary([sys.executable, '-m', 'pipeline', 'run', *run_args])


def child_summary(command: List[str]) -> Dict[str, Any]:
    """Runs `command` (a pipeline run); its JSON summary.

    If the scheduler is aborted meanwhile (a second SIGINT or SIGTERM), the
    child gets SIGTERM, as a `run` killed by hand, so that it cancels its
    Beam jobs on an engine (docs/engines.md), and is killed only if it has
    not ended after _CHILD_STOP_SECONDS.

    Raises:
        RunFailed: the child failed or printed no summary.
    """
    with subprocess.Popen(command,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            process.terminate()
            try:
                _, stderr = process.communicate(timeout=_CHILD_STOP_SECONDS)
                sys.stderr.write(stderr)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    sys.stderr.write(stderr)
    summaries = [line for line in stdout.splitlines() if line.startswith('{')]
    if process.returncode != 0 or not summaries:
        errors = stderr.strip().splitlines() or ['(no output)']
        raise RunFailed(f'exit code {process.returncode}: {errors[-1]}')
    return json.loads(summaries[-1])


def schedule_local(config: configs.RunConfig, run_args: List[str], cron: str,
                   on_new_data: bool, max_runs: int,
                   poll_seconds: float) -> int:
    """Runs the pipeline on `cron` and/or when a new span appears.

    Returns:
        The process exit code.
    """
    watcher = (spans.SpanWatcher(config.data_path, names.SPAN_DIR_PATTERN,
                                 poll_seconds) if on_new_data else None)
    runs = scheduler.Scheduler(lambda: run_in_child(run_args),
                               config.scheduler_state_dir,
                               cron=cron or None,
                               watcher=watcher,
                               max_runs=max_runs or None)
    try:
        runs.run()
    except scheduler.SchedulerAborted:
        return 130
    return 0


def _compiled(config: configs.RunConfig, directory: str) -> str:
    from pipeline import runner  # pylint: disable=import-outside-toplevel
    return runner.compile_kubeflow(
        config, os.path.join(directory, f'{config.pipeline_name}.json'))


def submit_kubeflow(config: configs.RunConfig,
                    host: str,
                    experiment: str,
                    namespace: str = None) -> Dict[str, Any]:
    """Compiles the pipeline and starts one run of it on Kubeflow."""
    with tempfile.TemporaryDirectory() as directory:
        run_id = kubeflow_client.submit_run(host,
                                            _compiled(config, directory),
                                            experiment,
                                            run_name=config.pipeline_name,
                                            namespace=namespace)
    return {'kubeflow_run_id': run_id}


def schedule_kubeflow(config: configs.RunConfig,
                      host: str,
                      experiment: str,
                      cron: str,
                      namespace: str = None) -> Dict[str, Any]:
    """Compiles the pipeline and creates a KFP recurring run on `cron`."""
    with tempfile.TemporaryDirectory() as directory:
        job_id = kubeflow_client.create_recurring_run(
            host,
            _compiled(config, directory),
            experiment,
            job_name=f'{config.pipeline_name}-recurring',
            cron=cron,
            namespace=namespace)
    return {'kubeflow_recurring_run_id': job_id}
