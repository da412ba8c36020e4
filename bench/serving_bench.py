"""Model server benchmark: gRPC Predict latency and throughput.

    python -m bench.serving_bench [--quick] [--model_base_path=/abs/model]
                                  [--output=bench/results/serving.json]

Measures, for one 28x28 PNG sent to the `serving_image` signature:
  * latency p50/p99 of calling the signature in-process and of a gRPC
    Predict to `python -m serving serve` (batching off); the difference at
    p50 is the server's overhead (target <= 1.5 ms);
  * throughput with 1, 8 and 32 concurrent clients, batching off and on
    (target: with batching, 32 clients get >= 3x the throughput without).
Without --model_base_path it exports a small Keras convnet itself. Results
go to a JSON file and a printed table; `run()` returns them as a dict.
Benchmarks report; nothing here asserts timings.
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
from typing import Dict, List, Optional

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=wrong-import-position

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / 'bench' / 'results' / 'serving.json'
MODEL_NAME = 'bench'
CONCURRENCY = (1, 8, 32)
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

    from models import signatures

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
    from PIL import Image  # pylint: disable=import-outside-toplevel
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode='L').save(buffer, format='PNG')
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class _Server:
    """A `python -m serving serve` subprocess for the benchmark."""

    def __init__(self, base_path: str, workdir: str, batching: bool):
        self.port = _free_port()
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
                   TF_USE_LEGACY_KERAS='1',
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


def _in_process_latency(base_path: str, png: bytes,
                        iterations: int) -> Dict[str, float]:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from models import signatures  # pylint: disable=import-outside-toplevel
    version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
    loaded = tf.saved_model.load(os.path.join(base_path, str(version)))
    function = loaded.signatures[signatures.IMAGE_SIGNATURE]
    samples = []
    for i in range(iterations + 20):
        start = time.perf_counter()
        outputs = function(**{signatures.IMAGE_INPUT: tf.constant([png])})
        {k: v.numpy() for k, v in outputs.items()}
        if i >= 20:  # Warm-up calls trace and allocate.
            samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _request(png: bytes):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from models import signatures
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


def _throughput(port: int, request, clients: int, seconds: float) -> float:
    """Requests per second with `clients` threads, each on its own channel."""
    stubs = [_stub(port) for _ in range(clients)]
    for stub in stubs:
        stub.Predict(request, timeout=60)
    counts = [0] * clients
    errors: List[Exception] = []
    stop = threading.Event()
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            try:
                stubs[i].Predict(request, timeout=60)
                counts[i] += 1
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)
                return

    threads = [
        threading.Thread(target=client, args=(i,)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    total = sum(counts)
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join(60)
    if errors:
        raise RuntimeError(f'{len(errors)} requests failed: {errors[0]}')
    return round(total / elapsed, 1)


def _layer_throughput(base_path: str, request, clients: int, seconds: float,
                      batching: bool) -> float:
    """Requests/s through the server's request layer in-process (no gRPC).

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
    for _ in range(20):
        inference.predict(request)
    counts = [0] * clients
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            inference.predict(request)
            counts[i] += 1

    threads = [
        threading.Thread(target=client, args=(i,)) for i in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - start
    if batcher:
        batcher.stop()
    manager.stop()
    return round(sum(counts) / elapsed, 1)


def run(quick: bool = False, model_base_path: Optional[str] = None) -> dict:
    """Runs the benchmark and returns its results as a dict."""
    iterations = 200 if quick else 1000
    seconds = 2.0 if quick else 6.0
    png = png_image()
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
            'throughput_rps': {},
            'in_process_layer_rps_at_32': {},
        }
        results['latency_ms']['in_process'] = _in_process_latency(
            base_path, png, iterations)
        for batching in (False, True):
            key = 'batching_on' if batching else 'batching_off'
            results['in_process_layer_rps_at_32'][key] = _layer_throughput(
                base_path, request, 32, seconds, batching)
        for batching in (False, True):
            key = 'batching_on' if batching else 'batching_off'
            server = _Server(base_path, workdir, batching)
            try:
                if not batching:
                    results['latency_ms']['grpc'] = _grpc_latency(
                        server.port, request, iterations)
                results['throughput_rps'][key] = {
                    str(c): _throughput(server.port, request, c, seconds)
                    for c in CONCURRENCY
                }
            finally:
                server.stop()
    latency = results['latency_ms']
    overhead = latency['grpc']['p50'] - latency['in_process']['p50']
    latency['overhead_p50'] = round(overhead, 3)
    off = results['throughput_rps']['batching_off']['32']
    on = results['throughput_rps']['batching_on']['32']
    results['batching_speedup_at_32'] = round(on / off, 2) if off else None
    results['targets'] = {
        'grpc_overhead_p50_ms_le_1.5': overhead <= 1.5,
        'batching_speedup_at_32_ge_3': bool(off and on / off >= 3),
    }
    return results


def format_table(results: dict) -> str:
    latency = results['latency_ms']
    lines = [
        'Predict latency, one 28x28 PNG (ms)', f'  {"":<12}{"p50":>8}{"p99":>8}'
    ]
    for key in ('in_process', 'grpc'):
        lines.append(f'  {key:<12}{latency[key]["p50"]:>8.3f}'
                     f'{latency[key]["p99"]:>8.3f}')
    lines.append(f'  overhead at p50: {latency["overhead_p50"]:.3f} ms')
    lines += [
        '', 'Throughput (requests/s)',
        f'  {"clients":<10}{"batching off":>14}{"batching on":>14}'
    ]
    for clients in CONCURRENCY:
        off = results['throughput_rps']['batching_off'][str(clients)]
        on = results['throughput_rps']['batching_on'][str(clients)]
        lines.append(f'  {clients:<10}{off:>14.1f}{on:>14.1f}')
    lines.append(f'  speedup from batching at 32 clients: '
                 f'{results["batching_speedup_at_32"]}x')
    layer = results['in_process_layer_rps_at_32']
    lines.append(f'  same, 32 threads calling the request layer in-process '
                 f'(no gRPC): {layer["batching_off"]:.1f} -> '
                 f'{layer["batching_on"]:.1f}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
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
