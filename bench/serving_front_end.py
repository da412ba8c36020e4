"""The model server's front end, this one against the previous, one run.

    python -m bench --only serving        # with the rest of serving_bench
    python -m bench.serving_front_end [--quick]

A SavedModel whose signature multiplies a [None, 3] float input by a 3x2
matrix, so that every figure is the front end's own cost. For the server of
this checkout, one process and PROCESSES (`--server_processes`), and for
the previous front end (PREVIOUS_FRONT_END, the last commit with it,
extracted by `git archive` into a temporary directory and started the same
way, same flags; all up at once and measured in turn, ROUNDS times, the
medians kept; server CPU is the server's processes' together):
  * one client on one kept-alive REST connection (`wrk -c1`): median ms;
  * 64 REST connections (`wrk -c64`): requests/s;
  * 64 concurrent gRPC unary Predicts (grpc.aio client): requests/s;
and the ceiling beside them: the signature called in process by one thread
and by two. `wrk` is Debian's (`make setup` installs it). Timings depend on
what else runs on the machine; ratios are of one run.
"""

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bench import serving_bench
from common import environment

# The last commit whose server had the thread-per-request front end.
PREVIOUS_FRONT_END = '2ec7f20c61fa9ce913ff840e3745c55aed280166'
MODEL_NAME = 'matmul'
ROWS = [[1.0, 2.0, 3.0]]
WRK = 'wrk'
CONNECTIONS = 64
# The current server is measured with one process and with this many.
PROCESSES = 2
# Each server's cells are measured this many times, alternating servers;
# the table gives the medians.
ROUNDS = 3
_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def export_matmul(base_path: str) -> str:
    """A [None, 3] x [3, 2] matmul behind `serving_default`, version 1."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    class MatMul(tf.Module):

        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

        @tf.function(
            input_signature=[tf.TensorSpec([None, 3], tf.float32, name='x')])
        def serving_default(self, x):
            return {'y': tf.matmul(x, self.w)}

    module = MatMul()
    tf.saved_model.save(module,
                        os.path.join(base_path, '1'),
                        signatures={'serving_default': module.serving_default})
    return base_path


def _previous_source(workdir: str) -> str:
    """The previous front end's `serving` and `models` packages."""
    root = os.path.join(workdir, 'previous')
    os.makedirs(root)
    archive = subprocess.run(
        ['git', 'archive', PREVIOUS_FRONT_END, 'serving', 'models'],
        cwd=serving_bench.REPO_ROOT,
        check=True,
        stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root)
    return root


class _RestServer:
    """`python -m serving serve` from a source tree, gRPC and REST."""

    def __init__(self,
                 source_root: str,
                 base_path: str,
                 log_path: str,
                 extra_flags: Sequence[str] = ()):
        self.grpc_port = serving_bench.free_port()
        self.rest_port = serving_bench.free_port()
        env = dict(os.environ,
                   **environment.LEGACY_KERAS_ENV,
                   TF_CPP_MIN_LOG_LEVEL='2',
                   PYTHONPATH=source_root)
        self._log_path = log_path
        with open(log_path, 'wb') as log:
            self.process = subprocess.Popen([
                sys.executable, '-m', 'serving', 'serve',
                f'--port={self.grpc_port}', f'--rest_api_port={self.rest_port}',
                f'--model_name={MODEL_NAME}', f'--model_base_path={base_path}',
                *extra_flags
            ],
                                            stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env=env,
                                            cwd=source_root)
        deadline = time.monotonic() + 300
        while 'Exporting HTTP/REST API' not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f'server did not start:\n{self.log()}')
            time.sleep(0.2)

    def log(self) -> str:
        return Path(self._log_path).read_text(errors='replace')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _millis(text: str) -> float:
    value, unit = re.fullmatch(r'([\d.]+)(us|ms|s)', text).groups()
    return float(value) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[unit]


def wrk(url: str, script: str, connections: int, seconds: float,
        server_pid: int) -> Dict[str, float]:
    """Requests/s, median ms and server CPU ms a request of a `wrk` run.

    `wrk` POSTs the script's body.
    """
    server_cpu = serving_bench.cpu_seconds(server_pid)
    command = [
        WRK, f'-t{min(connections, 2)}', f'-c{connections}',
        f'-d{max(1, round(seconds))}s', '--latency', '-s', script, url
    ]
    output = subprocess.run(command,
                            check=True,
                            stdout=subprocess.PIPE,
                            text=True,
                            timeout=seconds + 60).stdout
    server_cpu = serving_bench.cpu_seconds(server_pid) - server_cpu
    requests = int(re.search(r'(\d+) requests in', output).group(1))
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', output).group(1))
    median = _millis(re.search(r'\s50%\s+(\S+)', output).group(1))
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', output)
    return {
        'rps': round(rps, 1),
        'p50_ms': round(median, 3),
        'server_cpu_ms': round(server_cpu / max(1, requests) * 1e3, 3),
        'non_2xx': int(errors.group(1)) if errors else 0
    }


def _predict_request():
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(ROWS, tf.float32))
    return request


def _measure(server: _RestServer, script: str, request,
             seconds: float) -> Dict[str, Dict[str, float]]:
    url = (f'http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}'
           ':predict')
    pid = server.process.pid
    grpc_cell = serving_bench.grpc_load(server.grpc_port, pid, request,
                                        CONNECTIONS, seconds)
    return {
        'rest_1_connection':
            wrk(url, script, 1, seconds, pid),
        f'rest_{CONNECTIONS}_connections':
            wrk(url, script, CONNECTIONS, seconds, pid),
        f'grpc_{CONNECTIONS}_calls': {
            'rps': grpc_cell['rps'],
            'p50_ms': grpc_cell['p50'],
            'server_cpu_ms': grpc_cell.get('server_cpu_ms')
        },
    }


Cells = Dict[str, Dict[str, float]]


def _median_cells(rounds: List[Cells]) -> Cells:
    """Each figure of each cell, the median over the rounds."""
    return {
        key: {
            field: (statistics.median(r[key][field]
                                      for r in rounds)
                    if rounds[0][key].get(field) is not None else None)
            for field in rounds[0][key]
        } for key in rounds[0]
    }


def _in_process(base_path: str, seconds: float) -> Dict[str, float]:
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    function = tf.saved_model.load(os.path.join(
        base_path, '1')).signatures['serving_default']
    x = tf.constant(ROWS)

    def call():
        function(x=x)['y'].numpy()

    return {
        f'{threads}_thread{"s" if threads > 1 else ""}':
            serving_bench.thread_load(call, threads, seconds)['rps']
        for threads in (1, 2)
    }


def run(quick: bool = False) -> dict:
    """Both front ends and the ceiling, one run; returns the figures."""
    if shutil.which(WRK) is None:
        return {'skipped': f'{WRK} not found (make setup installs it)'}
    seconds = 3.0 if quick else 8.0
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix='front-end-bench-') as workdir:
        base_path = export_matmul(os.path.join(workdir, MODEL_NAME))
        script = os.path.join(workdir, 'predict.lua')
        Path(script).write_text(_WRK_SCRIPT % json.dumps({'instances': ROWS}))
        request = _predict_request()
        results = {'model': '[None, 3] x [3, 2] matmul, one row a request'}
        current = str(serving_bench.REPO_ROOT)
        sources = {
            'previous': (_previous_source(workdir), ()),
            'current': (current, ()),
            f'current_{PROCESSES}_processes':
                (current, (f'--server_processes={PROCESSES}',)),
        }
        servers = {}
        try:
            for name, (source, flags) in sources.items():
                servers[name] = _RestServer(
                    source, base_path, os.path.join(workdir, f'{name}.log'),
                    flags)
            for server in servers.values():  # Warm-up.
                wrk(
                    f'http://127.0.0.1:{server.rest_port}/v1/models/'
                    f'{MODEL_NAME}:predict', script, 1, 1, server.process.pid)
            # Both servers up, measured in turn, round after round: on a
            # shared machine both see the same spells of load.
            rounds = {name: [] for name in servers}
            for _ in range(ROUNDS):
                for name, server in servers.items():
                    rounds[name].append(
                        _measure(server, script, request, seconds))
        finally:
            for server in servers.values():
                server.stop()
        for name, cells in rounds.items():
            results[name] = _median_cells(cells)
        results['in_process_calls_per_s'] = _in_process(base_path, seconds)
    # requests/s over the previous front end's: 'ratios' of the current
    # server with one process, f'ratios_{PROCESSES}_processes' with more.
    for name in sources:
        if name != 'previous':
            results['ratios' + name[len('current'):]] = {
                key:
                    round(
                        results[name][key]['rps'] /
                        results['previous'][key]['rps'], 2)
                    if results['previous'][key]['rps'] else None
                for key in results[name]
            }
    results['settings'] = {
        'seconds_per_cell': seconds,
        'rounds': ROUNDS,
        'previous_front_end': PREVIOUS_FRONT_END,
        'processes': PROCESSES,
        'cpus': os.cpu_count(),
        'load_average': [load_at_start, [round(x, 2) for x in os.getloadavg()]]
    }
    return results


def format_table(results: dict) -> str:
    """The figures as a Markdown table; ratios are over previous."""
    if 'skipped' in results:
        return f'front end: skipped, {results["skipped"]}'
    multi = f'current_{results["settings"].get("processes", 2)}_processes'
    names = ['previous', 'current'] + ([multi] if multi in results else [])
    processes = multi.split('_')[1]
    titles = {
        'current': 'current, 1 process',
        multi: f'current, {processes} processes'
    }
    lines = [
        f'Front end, {results["model"]} (previous = '
        f'{results["settings"]["previous_front_end"][:10]})', '',
        '| | previous | ' + ' | '.join(titles[n] for n in names[1:]) + ' | ' +
        ' | '.join(f'{titles[n].replace("current, ", "")} / previous'
                   for n in names[1:]) + ' |',
        '| --- |' + ' ---: |' * (2 * len(names) - 1)
    ]
    rows = (('p50_ms', 'median ms', '.2f'), ('rps', 'requests/s', '.0f'),
            ('server_cpu_ms', 'server CPU ms a request', '.2f'))
    for key in results['current']:
        before = results['previous'][key]
        for field, what, form in rows:
            cells = [results[n][key].get(field) for n in names]
            if any(c is None for c in cells):
                continue
            ratios = [
                c / before[field] if before[field] else 0.0 for c in cells[1:]
            ]
            lines.append(f'| {key.replace("_", " ")}, {what} | ' +
                         ' | '.join(f'{c:{form}}' for c in cells) + ' | ' +
                         ' | '.join(f'{r:.2f}x' for r in ratios) + ' |')
    for key, rps in results['in_process_calls_per_s'].items():
        lines.append(f'| in process, {key.replace("_", " ")}, calls/s | | '
                     f'{rps:.0f} |' + ' |' * (2 * len(names) - 3))
    settings = results['settings']
    lines.append(f'\nmedians of {settings.get("rounds", 1)} rounds of '
                 f'{settings["seconds_per_cell"]:g} s a cell; load average '
                 f'at start and end: {settings["load_average"]}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the front ends' table; prints and writes it."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 s a cell')
    parser.add_argument('--output',
                        default=str(serving_bench.REPO_ROOT / 'bench' /
                                    'results' / 'serving_front_end.json'))
    args = parser.parse_args(argv)
    results = run(args.quick)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + '\n')
    print(format_table(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
