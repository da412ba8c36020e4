"""Model server benchmark: gRPC Predict latency and throughput.

    python -m bench.serving_bench [--quick] [--model_base_path=/abs/model]
                                  [--output=bench/results/serving.json]
    python bench/serving_bench.py ...   # the same

Measures, for one 28x28 PNG sent to the `serving_image` signature:
  * latency p50/p99 of calling the signature in-process and of a gRPC
    Predict to `python -m serving serve` (batching off), one client; the
    difference at p50 is the server's overhead (target <= 0.5 ms);
  * with 1, 8, 32 and 128 concurrent clients: requests/s, p50/p99 latency
    and the CPU milliseconds spent per request, of gRPC Predicts with
    batching off and on (target: with batching, 32 clients get >= 3x the
    requests/s without), against the same model called in-process by as
    many threads (the limit), directly and through the server's request
    layer with batching off and on.
The CPU per request (server and load generator: both share this machine's
cores) does not depend on what else the machine runs, requests/s do: the
load average at start and end is recorded. Without --model_base_path it
exports a small Keras convnet itself. Results go to a JSON file and a
printed table; `run()` returns them as a dict. Benchmarks report; nothing
here asserts timings.
"""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from common import environment

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=wrong-import-position  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # Run as a script, not with -m.
    sys.path.insert(0, str(REPO_ROOT))
DEFAULT_OUTPUT = REPO_ROOT / 'bench' / 'results' / 'serving.json'
MODEL_NAME = 'bench'
CONCURRENCY = (1, 8, 32, 128)
# One batch thread: TensorFlow already spreads each batch over both cores,
# and a second thread only splits the waiting requests into smaller batches.
# No timeout: requests that arrive while a batch runs form the next one.
BATCHING_PARAMETERS = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""


def export_convnet(base_path: str) -> str:
    """Exports a small Keras convnet behind PNG and tf.Example signatures."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from common import signatures

    tf.random.set_seed(0)
    keras = tf.keras
    layers = keras.layers
    net = keras.Sequential([  # LeNet-5 shaped, a little wider.
        layers.Input((28, 28, 1)),
        layers.Conv2D(16, 5, padding='same', activation='relu'),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 5, activation='relu'),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation='relu'),
        layers.Dense(84, activation='relu'),
        layers.Dense(10, activation='softmax'),
    ])
    class_names = tf.constant([[str(i).encode() for i in range(10)]])

    class Exported(tf.Module):

        def __init__(self):
            super().__init__()
            self.net = net

        def _outputs(self, images):
            scores = self.net(images, training=False)
            classes = tf.tile(class_names, [tf.shape(scores)[0], 1])
            return {
                signatures.SCORES_OUTPUT: scores,
                signatures.CLASSES_OUTPUT: classes
            }

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=signatures.IMAGE_INPUT)
        ])
        def serving_image(self, images):
            decoded = tf.map_fn(lambda png: tf.io.decode_png(png, channels=1),
                                images,
                                fn_output_signature=tf.TensorSpec([28, 28, 1],
                                                                  tf.uint8))
            return self._outputs(tf.cast(decoded, tf.float32) / 255.0)

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=signatures.EXAMPLES_INPUT)
        ])
        def serving_default(self, inputs):
            parsed = tf.io.parse_example(
                inputs,
                {'image/float': tf.io.FixedLenFeature([784], tf.float32)})
            return self._outputs(
                tf.reshape(parsed['image/float'], [-1, 28, 28, 1]))

    module = Exported()
    path = os.path.join(base_path, '1')
    tf.saved_model.save(module,
                        path,
                        signatures={
                            signatures.IMAGE_SIGNATURE: module.serving_image,
                            signatures.DEFAULT_SIGNATURE: module.serving_default
                        })
    return base_path


def png_image(seed: int = 0) -> bytes:
    """A 28x28 gray PNG of random pixels."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode='L').save(buffer, format='PNG')
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class _Server:
    """A `python -m serving serve` subprocess for the benchmark."""

    def __init__(self, base_path: str, workdir: str, batching: bool):
        self.port = free_port()
        self.log_path = os.path.join(workdir, f'server-{self.port}.log')
        args = [
            sys.executable, '-m', 'serving', 'serve', f'--port={self.port}',
            f'--model_name={MODEL_NAME}',
            f'--model_base_path={os.path.abspath(base_path)}'
        ]
        if batching:
            params = os.path.join(workdir, 'batching.config')
            Path(params).write_text(BATCHING_PARAMETERS)
            args += [
                '--enable_batching', f'--batching_parameters_file={params}'
            ]
        env = dict(os.environ,
                   **environment.LEGACY_KERAS_ENV,
                   TF_CPP_MIN_LOG_LEVEL='2',
                   PYTHONPATH=str(REPO_ROOT))
        with open(self.log_path, 'wb') as log:
            self.process = subprocess.Popen(args,
                                            stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env=env,
                                            cwd=str(REPO_ROOT))
        deadline = time.monotonic() + 300
        while ('Running gRPC ModelServer at'
               not in Path(self.log_path).read_text(errors='replace')):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('model server did not start:\n' +
                                   Path(self.log_path).read_text())
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _percentiles(seconds: List[float]) -> Dict[str, float]:
    millis = np.array(seconds) * 1e3
    return {
        'p50': round(float(np.percentile(millis, 50)), 3),
        'p99': round(float(np.percentile(millis, 99)), 3),
        'mean': round(float(millis.mean()), 3),
        'n': len(seconds)
    }


class _ImageSignature:
    """The newest version's serving_image signature, called in-process."""

    def __init__(self, base_path: str):
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf

        from common import signatures
        version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
        self._tf = tf
        self._input = signatures.IMAGE_INPUT
        self._loaded = tf.saved_model.load(os.path.join(base_path,
                                                        str(version)))
        self._function = self._loaded.signatures[signatures.IMAGE_SIGNATURE]

    def __call__(self, images: List[bytes]) -> None:
        outputs = self._function(**{self._input: self._tf.constant(images)})
        for value in outputs.values():
            value.numpy()


def _in_process_latency(base_path: str, png: bytes,
                        iterations: int) -> Dict[str, float]:
    function = _ImageSignature(base_path)
    samples = []
    for i in range(iterations + 20):
        start = time.perf_counter()
        function([png])
        if i >= 20:  # Warm-up calls trace and allocate.
            samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _request(png: bytes):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from common import signatures
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = signatures.IMAGE_SIGNATURE
    request.inputs[signatures.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto([png]))
    return request


def _stub(port: int):
    # pylint: disable=import-outside-toplevel
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    channel = grpc.insecure_channel(f'127.0.0.1:{port}')
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _grpc_latency(port: int, request, iterations: int) -> Dict[str, float]:
    stub = _stub(port)
    samples = []
    for i in range(iterations + 20):
        start = time.perf_counter()
        stub.Predict(request, timeout=30)
        if i >= 20:
            samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _descendants(pid: int) -> List[int]:
    """The live child processes of `pid`, theirs, and so on."""
    found: List[int] = []
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f'/proc/{pid}/task/{task}/children',
                      encoding='ascii') as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child] + _descendants(child)
    return found


def cpu_seconds(pid: Optional[int] = None) -> float:
    """User + system CPU seconds of a process (this one by default).

    Of another process: its and its live descendants' (a server of several
    processes, --server_processes).
    """
    if pid is None:
        times = os.times()
        return times.user + times.system
    total = 0
    for process in [pid] + _descendants(pid):
        try:
            with open(f'/proc/{process}/stat', encoding='ascii') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue  # Gone meanwhile.
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf('SC_CLK_TCK')


def _cell(latencies: List[float], elapsed: float, client_cpu: float,
          server_cpu: Optional[float]) -> Dict[str, float]:
    """One concurrency's figures: requests/s, p50/p99 and CPU per request."""
    count = max(1, len(latencies))
    millis = np.array(latencies or [0.0]) * 1e3
    cell = {
        'rps': round(len(latencies) / elapsed, 1),
        'p50': round(float(np.percentile(millis, 50)), 3),
        'p99': round(float(np.percentile(millis, 99)), 3),
        'client_cpu_ms': round(client_cpu / count * 1e3, 3),
    }
    if server_cpu is not None:
        cell['server_cpu_ms'] = round(server_cpu / count * 1e3, 3)
    return cell


def grpc_load(port: int, server_pid: int, request, clients: int,
              seconds: float) -> Dict[str, float]:
    """`clients` concurrent callers, each on its own channel, for `seconds`.

    The callers are coroutines on one grpc.aio event loop: a load generator
    that costs the shared cores less CPU per request than one thread per
    client (the CPU both sides spent per request is reported).
    """
    # pylint: disable=import-outside-toplevel
    import asyncio

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    async def load() -> Dict[str, float]:
        channels = [
            grpc.aio.insecure_channel(f'127.0.0.1:{port}')
            for _ in range(clients)
        ]
        stubs = [
            prediction_service_pb2_grpc.PredictionServiceStub(c)
            for c in channels
        ]
        await asyncio.gather(*(s.Predict(request, timeout=60) for s in stubs))
        latencies: List[float] = []
        window = {'start': 0.0, 'end': 0.0}
        stop = asyncio.Event()

        async def client(stub) -> None:
            while not stop.is_set():
                start = time.perf_counter()
                await stub.Predict(request, timeout=60)
                if window['start'] <= start and not stop.is_set():
                    latencies.append(time.perf_counter() - start)

        tasks = [asyncio.ensure_future(client(s)) for s in stubs]
        await asyncio.sleep(min(1.0, seconds / 4))  # Warm-up, unmeasured.
        client_cpu, server_cpu = cpu_seconds(), cpu_seconds(server_pid)
        window['start'] = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        elapsed = time.perf_counter() - window['start']
        client_cpu = cpu_seconds() - client_cpu
        server_cpu = cpu_seconds(server_pid) - server_cpu
        await asyncio.gather(*tasks)
        for channel in channels:
            await channel.close()
        return _cell(latencies, elapsed, client_cpu, server_cpu)

    return asyncio.run(load())


def thread_load(call: Callable[[], object], clients: int,
                seconds: float) -> Dict[str, float]:
    """`clients` threads calling `call()` in a loop, in this process."""
    latencies: List[float] = []
    stop = threading.Event()
    measuring = threading.Event()

    def client() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            call()
            if measuring.is_set() and not stop.is_set():
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(min(1.0, seconds / 4))  # Warm-up, unmeasured.
    cpu = cpu_seconds()
    measuring.set()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    for thread in threads:
        thread.join(60)
    return _cell(latencies, elapsed, cpu, None)


def _direct_load(base_path: str, png: bytes,
                 seconds: float) -> Dict[str, Dict[str, float]]:
    """The limit: threads calling the signature in-process, one PNG a call."""
    function = _ImageSignature(base_path)
    return {
        str(c): thread_load(lambda: function([png]), c, seconds)
        for c in CONCURRENCY
    }


def _batch_cost(base_path: str, png: bytes,
                iterations: int) -> Dict[str, Dict[str, float]]:
    """CPU and wall ms of one signature call, per row, at batch 1 and 32.

    What batching can gain inside TensorFlow: the fixed cost of a call is
    paid once per batch, the per-row cost (PNG decoding, the layers) not.
    """
    function = _ImageSignature(base_path)
    costs = {}
    for rows in (1, 32):
        images = [png] * rows
        calls = max(10, iterations // rows)
        for _ in range(10):
            function(images)
        cpu, start = cpu_seconds(), time.perf_counter()
        for _ in range(calls):
            function(images)
        wall = time.perf_counter() - start
        costs[str(rows)] = {
            'cpu_ms_per_row':
                round((cpu_seconds() - cpu) / calls / rows * 1e3, 3),
            'wall_ms_per_call':
                round(wall / calls * 1e3, 3)
        }
    return costs


def _layer_load(base_path: str, request, seconds: float,
                batching: bool) -> Dict[str, Dict[str, float]]:
    """Threads calling the server's request layer in-process (no gRPC).

    Separates what batching itself gains from what the Python gRPC stack
    (client and server, same cores) costs per request.
    """
    # pylint: disable=import-outside-toplevel
    from serving import batching as batching_lib
    from serving import config as config_lib
    from serving import inference as inference_lib
    from serving import manager as manager_lib
    from serving import servable as servable_lib
    from serving import served_versions

    served = served_versions.ServedVersions()
    manager = manager_lib.ModelManager(
        lambda name, version, path: servable_lib.load(name, version, path,
                                                      ('serve',)), served,
        manager_lib.ManagerOptions(poll_seconds=0, settle_seconds=0))
    manager.reload(
        config_lib.single_model_config(MODEL_NAME, os.path.abspath(base_path)))
    batcher = None
    if batching:
        batcher = batching_lib.BatchScheduler(
            config_lib.parse_batching_parameters(BATCHING_PARAMETERS))
    inference = inference_lib.Inference(served, None, batcher)
    try:
        return {
            str(c): thread_load(lambda: inference.predict(request), c, seconds)
            for c in CONCURRENCY
        }
    finally:
        if batcher:
            batcher.stop()
        manager.stop()


def run(quick: bool = False, model_base_path: Optional[str] = None) -> dict:
    """Runs the benchmark and returns its results as a dict."""
    iterations = 200 if quick else 1000
    seconds = 2.0 if quick else 6.0
    png = png_image()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix='serving-bench-') as workdir:
        base_path = model_base_path or export_convnet(
            os.path.join(workdir, MODEL_NAME))
        request = _request(png)
        results = {
            'model': {
                'base_path': model_base_path or '<built-in convnet>',
                'signature': 'serving_image',
                'input': '28x28 PNG',
                'png_bytes': len(png)
            },
            'settings': {
                'quick': quick,
                'latency_iterations': iterations,
                'seconds_per_throughput_cell': seconds,
                'batching_parameters': BATCHING_PARAMETERS.strip(),
                'cpus': os.cpu_count()
            },
            'latency_ms': {},
            'throughput': {},
        }
        results['latency_ms']['in_process'] = _in_process_latency(
            base_path, png, iterations)
        results['signature_cost'] = _batch_cost(base_path, png, iterations)
        throughput = results['throughput']
        throughput['in_process_direct'] = _direct_load(base_path, png, seconds)
        for batching in (False, True):
            key = 'batching_on' if batching else 'batching_off'
            throughput[f'in_process_layer_{key}'] = _layer_load(
                base_path, request, seconds, batching)
        for batching in (False, True):
            key = 'batching_on' if batching else 'batching_off'
            server = _Server(base_path, workdir, batching)
            try:
                if not batching:
                    results['latency_ms']['grpc'] = _grpc_latency(
                        server.port, request, iterations)
                throughput[f'grpc_{key}'] = {
                    str(c):
                        grpc_load(server.port, server.process.pid, request, c,
                                  seconds) for c in CONCURRENCY
                }
            finally:
                server.stop()
    results['load_average'] = {
        'start': load_at_start,
        'end': [round(x, 2) for x in os.getloadavg()]
    }
    latency = results['latency_ms']
    overhead = latency['grpc']['p50'] - latency['in_process']['p50']
    latency['overhead_p50'] = round(overhead, 3)
    results['throughput_rps'] = {
        key: {
            c: cell['rps'] for c, cell in throughput[f'grpc_{key}'].items()
        } for key in ('batching_off', 'batching_on')
    }
    off = results['throughput_rps']['batching_off']['32']
    on = results['throughput_rps']['batching_on']['32']
    results['batching_speedup_at_32'] = round(on / off, 2) if off else None
    results['targets'] = {
        'grpc_overhead_p50_ms_le_0.5': overhead <= 0.5,
        'batching_speedup_at_32_ge_3': bool(off and on / off >= 3),
    }
    return results


def format_table(results: dict) -> str:
    """The results as a printed table."""
    latency = results['latency_ms']
    lines = [
        'Predict latency, one client, one 28x28 PNG (ms)',
        f'  {"":<12}{"p50":>8}{"p99":>8}'
    ]
    for key in ('in_process', 'grpc'):
        lines.append(f'  {key:<12}{latency[key]["p50"]:>8.3f}'
                     f'{latency[key]["p99"]:>8.3f}')
    lines.append(f'  overhead at p50: {latency["overhead_p50"]:.3f} ms')
    cost = results['signature_cost']
    lines.append(f'  the signature in-process, CPU ms per image: '
                 f'{cost["1"]["cpu_ms_per_row"]:.3f} one at a time, '
                 f'{cost["32"]["cpu_ms_per_row"]:.3f} in batches of 32')
    lines += [
        '', 'Throughput: requests/s, p50/p99 ms, CPU ms per request '
        '(server + client)',
        f'  {"":<28}{"clients":>8}{"req/s":>9}{"p50":>9}{"p99":>9}'
        f'{"CPU ms":>14}'
    ]
    for name, cells in results['throughput'].items():
        for clients in CONCURRENCY:
            cell = cells[str(clients)]
            cpu = f'{cell["client_cpu_ms"]:.2f}'
            if 'server_cpu_ms' in cell:
                cpu = f'{cell["server_cpu_ms"]:.2f} + {cpu}'
            lines.append(f'  {name:<28}{clients:>8}{cell["rps"]:>9.1f}'
                         f'{cell["p50"]:>9.2f}{cell["p99"]:>9.2f}{cpu:>14}')
    lines.append(f'  gRPC speed-up from batching at 32 clients: '
                 f'{results["batching_speedup_at_32"]}x (requests/s with '
                 f'batching over without, same server)')
    load = results['load_average']
    lines.append(f'  load average at start {load["start"]}, at end '
                 f'{load["end"]}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the serving benchmark; prints and writes its results."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick',
                        action='store_true',
                        help='fewer iterations and shorter runs')
    parser.add_argument('--model_base_path',
                        help='serve this model instead of the built-in '
                        'convnet (needs a serving_image signature)')
    parser.add_argument('--output',
                        default=str(DEFAULT_OUTPUT),
                        help='where to write the JSON results')
    args = parser.parse_args(argv)
    results = run(args.quick, args.model_base_path)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + '\n')
    print(format_table(results))
    print(f'\nresults written to {output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
