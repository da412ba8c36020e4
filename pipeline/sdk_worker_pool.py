"""Beam's SDK worker pool, running this project's Python.

    python -m pipeline.sdk_worker_pool --worker-pool PORT

The EXTERNAL environment of the engines' jobs (pipeline/engines.py): the
engine's runners ask the pool at 127.0.0.1:PORT for SDK workers, each a
process of this Python with the project importable. A local cluster starts
one (pipeline/engine_clusters.py); on Kubernetes one runs beside each
TaskManager or executor (deploy/).
"""

import argparse
import signal
import subprocess
import sys
import threading
from typing import List

# What a worker prints once Beam's SDK harness imported (see WorkerPool).
_WORKER_READY = 'beam-sdk-worker-ready'


class WorkerPool:
    """Beam's SDK worker pool on 127.0.0.1, running this Python.

    Beam's SDK worker pool (worker_pool_main), on 127.0.0.1, whose workers run
    this Python and report a worker that cannot start.

    Beam's own pool starts `python -c ...` from PATH and answers at once; a
    worker that then fails to import leaves the job waiting for it until a
    gRPC deadline, minutes later. Here each worker prints a line once Beam's
    SDK harness has imported, and StartWorker answers only then, or with the
    worker's last output line as the error, which fails the job at once.
    """

    def __init__(self, python: str = sys.executable):
        self.python = python
        self.workers: List[subprocess.Popen] = []

    def start_worker(self, control: str, worker_id: str) -> str:
        """Starts one SDK worker; '' or what went wrong."""
        code = ('from pipeline.sdk_worker_pool import run_sdk_worker; '
                f'run_sdk_worker({control!r}, {worker_id!r})')
        process = subprocess.Popen(
            [self.python, '-X', 'faulthandler', '-u', '-c', code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True)
        self.workers.append(process)
        print(f'worker {worker_id} pid {process.pid}', flush=True)
        output = []
        for line in process.stdout:
            if line.strip() == _WORKER_READY:
                threading.Thread(target=_drain,
                                 args=(process, worker_id),
                                 daemon=True).start()
                return ''
            output.append(line.rstrip())
        process.wait()
        return (f'Beam SDK worker ({self.python}) exited '
                f'{process.returncode} before starting: '
                f'{output[-1] if output else "(no output)"}')

    def stop_worker(self, worker_id: str) -> None:
        """Lets the worker end by itself.

        Each TaskManager or executor numbers its workers from "1-1", so two
        of them ask this pool for (and later stop) workers of the same id:
        killing by id would kill another's live worker mid-bundle. A worker
        ends when its runner closes its control channel; the pool kills any
        left when it stops.
        """
        del worker_id

    def stop_all(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
        for process in self.workers:
            process.wait()


def run_sdk_worker(control: str, worker_id: str) -> None:
    """Runs one Beam SDK worker (a WorkerPool's process) until it is stopped.

    Its output to the runner is queued without bound. Beam 2.74's SDK waits
    once 100 MB of a worker's output is queued (apache/beam#38407), while our
    2.62 job servers' runners read a bundle's output past their first 100
    messages only after the SDK reports the bundle done
    (`SdkHarnessClient.ActiveBundle.close`): a bundle whose output outgrows
    both waits on the runner, which waits on it. Flink and Spark run a
    stage's whole partition as one bundle, so Transform's stage at 280k
    images stopped for good on both engines. Unbounded, the SDK finishes
    the bundle and the runner then reads the rest.
    """
    from apache_beam.runners.worker import sdk_worker  # pylint: disable=import-outside-toplevel
    queue_output_without_bound()
    print(_WORKER_READY, flush=True)
    sdk_worker.SdkHarness(control, worker_id=worker_id).run()


def queue_output_without_bound() -> None:
    """This process's Beam data channels queue their output without bound."""
    from apache_beam.runners.worker import data_plane  # pylint: disable=import-outside-toplevel
    from apache_beam.utils import byte_limited_queue  # pylint: disable=import-outside-toplevel
    channel_class = data_plane._GrpcDataChannel  # pylint: disable=protected-access
    bounded_init = channel_class.__init__

    def unbounded_init(channel, *args, **kwargs):
        bounded_init(channel, *args, **kwargs)
        channel._to_send = byte_limited_queue.ByteLimitedQueue()  # pylint: disable=protected-access

    channel_class.__init__ = unbounded_init


def _drain(process: subprocess.Popen, worker_id: str) -> None:
    """Copies a worker's output to the pool's, then its exit status."""
    for line in process.stdout:
        sys.stdout.write(line)
    sys.stdout.flush()
    print(f'worker {worker_id} pid {process.pid} exited {process.wait()}',
          flush=True)


def serve_worker_pool(port: int) -> None:
    """Serves WorkerPool's gRPC service on 127.0.0.1:`port` until killed."""
    # pylint: disable=import-outside-toplevel
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    pool = WorkerPool()

    class Servicer(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):

        def StartWorker(self, request, context):  # noqa: N802 (gRPC's name)
            del context
            return beam_fn_api_pb2.StartWorkerResponse(error=pool.start_worker(
                request.control_endpoint.url, request.worker_id))

        def StopWorker(self, request, context):  # noqa: N802
            del context
            pool.stop_worker(request.worker_id)
            return beam_fn_api_pb2.StopWorkerResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        Servicer(), server)
    server.add_insecure_port(f'127.0.0.1:{port}')
    server.start()

    def terminate(signum, frame):
        del signum, frame
        pool.stop_all()
        server.stop(0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, terminate)
    print(f'worker pool at 127.0.0.1:{port}', flush=True)
    server.wait_for_termination()


if __name__ == '__main__':
    _parser = argparse.ArgumentParser()
    _parser.add_argument('--worker-pool', type=int, required=True)
    serve_worker_pool(_parser.parse_args().worker_pool)
