"""The Beam jobs a run sends to an engine: tracked, reported, cancelled.

BeamJobs keeps every job submitted through Beam's portable runner while a
run runs (its id, end state and the SDK worker pids that read its data),
turns a failed one into one line (EngineJobFailed) and cancels those left
running when the run is interrupted; flink_jobs and spark_applications read
what the engines themselves say ran.
"""

import contextlib
import urllib.request
from typing import Iterator, List, Optional

from common import names
from pipeline import engines


def flink_jobs(state: dict) -> List[dict]:
    """Flink's `/jobs/overview`, each job with its vertices' parallelism."""
    rest = f'http://{state["rest"]}'
    jobs = engines.http_json(f'{rest}/jobs/overview')['jobs']
    for job in jobs:
        detail = engines.http_json(f'{rest}/jobs/{job["jid"]}')
        job['max_parallelism'] = max(
            (v['parallelism'] for v in detail['vertices']), default=0)
    return jobs


def spark_applications(state: dict) -> dict:
    """The Spark master's `/json/`: its workers and (completed) apps."""
    return engines.http_json(f'http://{state["rest"]}/json/')


class EngineJobFailed(Exception):
    """A Beam job that failed on an engine: one line, naming the job."""


_TERMINAL_STATES = ('DONE', 'FAILED', 'CANCELLED', 'UPDATED', 'DRAINED')


class BeamJobs:
    """The Beam jobs this process sends to engines, to report and cancel.

    While `tracking()`, every job submitted through Beam's portable runner
    (PortableRunner, and FlinkRunner and SparkRunner, which are one) is
    kept: its job id, its end state and the SDK worker process ids its
    counters name (names.WORKER_PID_COUNTERS); a job that fails raises
    EngineJobFailed; `cancel_running()` cancels those not ended through the
    job server's Job API (a `run` interrupted while a job runs).
    """

    def __init__(self, flink_rest: Optional[str] = None):
        """Keeps no job yet.

        Args:
            flink_rest: The REST address of the Flink cluster the jobs run
                on, if known: Beam's Flink job server marks a job cancelled
                without cancelling it on a Flink cluster, so it is
                cancelled there too.
        """
        self.jobs: List[dict] = []
        self._results: list = []
        self._flink_rest = flink_rest

    @contextlib.contextmanager
    def tracking(self) -> Iterator['BeamJobs']:
        """Keeps the portable jobs submitted meanwhile."""
        # pylint: disable=import-outside-toplevel
        from apache_beam.runners.portability import portable_runner
        runner_class = portable_runner.PortableRunner
        result_class = portable_runner.PipelineResult
        run_pipeline = runner_class.run_pipeline
        wait_until_finish = result_class.wait_until_finish
        tracker = self

        def tracked_run(runner, pipeline, options):
            result = run_pipeline(runner, pipeline, options)
            if isinstance(result, result_class):
                tracker._results.append(result)  # pylint: disable=protected-access
                tracker.jobs.append({
                    'job_id': result._job_id,  # pylint: disable=protected-access
                    'state': 'RUNNING'
                })
            return result

        def tracked_wait(result, duration=None):
            job = tracker.job_of(result)
            try:
                state = wait_until_finish(result, duration)
            except Exception as error:  # pylint: disable=broad-except
                if job is None:
                    raise
                job['state'] = str(result._state or 'FAILED')  # pylint: disable=protected-access
                message = result._last_error_message()  # pylint: disable=protected-access
                if message == 'unknown error':
                    message = str(error)
                lines = message.strip().splitlines() or ['(no message)']
                raise EngineJobFailed(
                    f'Beam job {job["job_id"]} ended {job["state"]} on the '
                    f'engine: {lines[0][:300]}') from error
            if job is not None:
                job['state'] = str(state)
                job['sdk_worker_pids'] = _worker_pids_counted(result)
            return state

        runner_class.run_pipeline = tracked_run
        result_class.wait_until_finish = tracked_wait
        try:
            yield self
        finally:
            runner_class.run_pipeline = run_pipeline
            result_class.wait_until_finish = wait_until_finish

    def job_of(self, result) -> Optional[dict]:
        """The kept job of a PipelineResult, if it is one of ours."""
        for kept, job in zip(self._results, self.jobs):
            if kept is result:
                return job
        return None

    def cancel_running(self) -> List[str]:
        """Cancels every kept job not ended; their ids."""
        cancelled = []
        for result, job in zip(self._results, self.jobs):
            if job['state'] in _TERMINAL_STATES:
                continue
            try:
                if str(result.state) in _TERMINAL_STATES:
                    continue
                result.cancel()
                if self._flink_rest:
                    cancel_flink_job(self._flink_rest, job['job_id'])
            except Exception as error:  # pylint: disable=broad-except
                job['cancel_error'] = f'{type(error).__name__}: {error}'
                continue
            job['state'] = 'CANCELLED'
            cancelled.append(job['job_id'])
        return cancelled


def cancel_flink_job(rest: str, beam_job_id: str) -> List[str]:
    """Cancels through Flink's REST API the Flink job of a Beam job.

    Beam's Flink job server names the Flink job after the Beam job's id
    (up to its `_`); its own Cancel only stops waiting for the job.

    Returns:
        The Flink job ids cancelled.
    """
    name = beam_job_id.split('_')[0]
    cancelled = []
    for job in engines.http_json(f'http://{rest}/jobs/overview')['jobs']:
        if job['name'] == name and job['state'] not in ('FINISHED', 'FAILED',
                                                        'CANCELED'):
            request = urllib.request.Request(
                f'http://{rest}/jobs/{job["jid"]}?mode=cancel', method='PATCH')
            with urllib.request.urlopen(request, timeout=10):
                cancelled.append(job['jid'])
    return cancelled


def flink_rest_of(flags: List[str], state_dir: Optional[str]) -> Optional[str]:
    """The REST address of the Flink cluster `flags` run on, if known.

    Beam's `--flink_master=HOST:PORT` (a remote cluster's REST API, which
    Beam's Flink job server then submits to), else the local cluster's if
    the flags point at its job server.
    """
    master = engines.endpoint(flags, 'flink_master')
    if master and not master.startswith('['):  # Not [auto], [local].
        return master.split('://', 1)[-1].rstrip('/')
    try:
        state = engines.read_state('flink', state_dir)
    except engines.EngineError:
        return None
    if engines.endpoint(flags, 'job_endpoint') != state.get('job_endpoint'):
        return None
    return state.get('rest')


def _worker_pids_counted(result) -> List[int]:
    """The SDK worker pids a finished job's counters name (may be none)."""
    # pylint: disable=import-outside-toplevel
    from apache_beam.metrics.metric import MetricsFilter
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(
            names.WORKER_PID_COUNTERS))['counters']
    except Exception:  # pylint: disable=broad-except
        return []  # A job server that keeps no metrics.
    return sorted({
        int(c.key.metric.name)
        for c in counters
        if (c.committed or c.attempted) and c.key.metric.name.isdigit()
    })
