"""Server-side batching gives the same answers as the unbatched server.

The batching server serves the same SavedModel as `main_server`'s latest
`mnist` (bias 2) and a `padded` copy whose batching_params.pbtxt turns on
pad_variable_length_inputs (--enable_per_model_batching_parameters) and
waits up to PADDED_TIMEOUT_SECONDS for a batch to fill: a batch that fills
runs at once, so the wait costs nothing unless merging is broken.
"""

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.serving import server_utils
from tests.serving import testmodels

MAX_BATCH_SIZE = 8
# Options of both models but the timeout.
BATCHING = f"""\
max_batch_size {{ value: {MAX_BATCH_SIZE} }}
max_enqueued_batches {{ value: 1000 }}
num_batch_threads {{ value: 1 }}
allowed_batch_sizes: 2
allowed_batch_sizes: 4
allowed_batch_sizes: {MAX_BATCH_SIZE}
"""
PADDED_TIMEOUT_SECONDS = 30


@pytest.fixture(scope='module')
def batching_server(tmp_path_factory, add_version, start_server):
    root = tmp_path_factory.mktemp('batching')
    add_version(root / 'models' / 'mnist', 3, 2.0)
    padded = add_version(root / 'models' / 'padded', 1, 2.0)
    (padded / 'batching_params.pbtxt').write_text(
        BATCHING + 'pad_variable_length_inputs: true\n'
        f'batch_timeout_micros {{ value: {PADDED_TIMEOUT_SECONDS * 10**6} }}\n')
    config = root / 'models.config'
    config.write_text('model_config_list { ' + ' '.join(
        f'config {{ name: "{n}" base_path: "{root / "models" / n}" '
        f'model_platform: "tensorflow" }}' for n in ('mnist', 'padded')) + ' }')
    params = root / 'batching.config'
    params.write_text(BATCHING + 'batch_timeout_micros { value: 20000 }\n')
    monitoring = root / 'monitoring.config'
    monitoring.write_text('prometheus_config { enable: true }')
    return start_server([
        f'--model_config_file={config}', '--enable_batching',
        f'--batching_parameters_file={params}',
        '--enable_per_model_batching_parameters',
        f'--monitoring_config_file={monitoring}'
    ])


def _stub(server: server_utils.ServerProcess):
    return prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(server.grpc_address))


def _run_concurrently(calls):
    """Runs zero-argument callables at the same moment; returns results."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i):
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as e:  # pylint: disable=broad-except
            results[i] = e

    threads = [
        threading.Thread(target=run, args=(i,)) for i in range(len(calls))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _requests():
    rng = np.random.default_rng(0)
    requests = []
    for i in range(12):
        rows = rng.random((1 + i % 3, 4), dtype=np.float32)
        requests.append(
            ('Predict',
             testmodels.float_predict_request(rows.tolist(), 'mnist')))
    for i in range(4):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = 'mnist'
        request.model_spec.signature_name = 'serving_image'
        request.inputs['images'].CopyFrom(
            tf.make_tensor_proto(
                [testmodels.png_bytes(testmodels.image(20 + i))]))
        requests.append(('Predict', request))
    for i in range(4):
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = 'mnist'
        request.input.example_list.examples.extend(
            [testmodels.example(testmodels.image(30 + i))] * (1 + i % 2))
        requests.append(('Classify', request))
    return requests


def _metric(server, name: str) -> float:
    code, text = server.http('GET', '/monitoring/prometheus/metrics')
    assert code == 200
    return sum(
        float(line.rsplit(' ', 1)[1])
        for line in text.splitlines()
        if line.startswith(name))


def _batches_run(server, model: str, total: str = 'count') -> float:
    """How many batches (`total='sum'`: rows) the server ran for `model`."""
    return _metric(
        server, ':tensorflow:serving:batching_session:'
        f'processed_batch_size_{total}{{model_name="{model}"}}')


def test_batched_results_equal_unbatched(batching_server, main_server):
    batched, unbatched = _stub(batching_server), _stub(main_server)
    requests = _requests()
    before = _batches_run(batching_server, 'mnist')
    rows_before = _batches_run(batching_server, 'mnist', 'sum')
    results = _run_concurrently([
        lambda m=m, r=r: getattr(batched, m)(r, timeout=60) for m, r in requests
    ])
    for (method, request), result in zip(requests, results):
        assert not isinstance(result, Exception), result
        expected = getattr(unbatched, method)(request, timeout=60)
        if method == 'Predict':
            assert set(result.outputs) == set(expected.outputs)
            for name in expected.outputs:
                got = tf.make_ndarray(result.outputs[name])
                want = tf.make_ndarray(expected.outputs[name])
                assert got.shape == want.shape
                if got.dtype == object:
                    assert got.tolist() == want.tolist()
                else:
                    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        else:
            for got, want in zip(result.result.classifications,
                                 expected.result.classifications):
                assert [c.label for c in got.classes
                       ] == [c.label for c in want.classes]
                np.testing.assert_allclose([c.score for c in got.classes],
                                           [c.score for c in want.classes],
                                           rtol=1e-6,
                                           atol=1e-7)
    # Requests really were merged, and batches padded to allowed sizes.
    batches = _batches_run(batching_server, 'mnist') - before
    assert 0 < batches < len(requests)
    rows = _batches_run(batching_server, 'mnist', 'sum') - rows_before
    assert rows / batches > 1


def _varlen(stub, model, rows):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = 'serving_varlen'
    request.inputs['x'].CopyFrom(
        tf.make_tensor_proto(np.array(rows, np.float32)))
    return tf.make_ndarray(stub.Predict(request, timeout=60).outputs['total'])


def test_different_inner_shapes_are_not_merged(batching_server):
    stub = _stub(batching_server)
    widths = [1, 2, 3, 5, 2, 3]
    rows = [
        [list(np.arange(w, dtype=np.float32) + i)] for i, w in enumerate(widths)
    ]
    results = _run_concurrently(
        [lambda r=r: _varlen(stub, 'mnist', r) for r in rows])
    for row, result in zip(rows, results):
        assert not isinstance(result, Exception), result
        assert result.tolist() == [sum(row[0])]


def test_variable_length_inputs_are_padded_when_enabled(batching_server):
    stub = _stub(batching_server)
    before = _batches_run(batching_server, 'padded')
    # One row per request, each of its own width, MAX_BATCH_SIZE rows in
    # all: the batch fills, and runs, only if rows of different widths are
    # merged, i.e. padded to the widest. Padding repeats each tensor's first
    # element, so rows starting with 0 sum the same padded or not.
    rows = [[[0.0] + [1.0] * (w - 1)] for w in range(2, 2 + MAX_BATCH_SIZE)]
    results = _run_concurrently(
        [lambda r=r: _varlen(stub, 'padded', r) for r in rows])
    for row, result in zip(rows, results):
        assert not isinstance(result, Exception), result
        assert result.tolist() == [sum(row[0])]
    batches = _batches_run(batching_server, 'padded') - before
    assert 0 < batches < len(rows)


def test_request_larger_than_max_batch_size_is_split(batching_server,
                                                     main_server):
    rows = np.random.default_rng(1).random((19, 4), dtype=np.float32).tolist()
    request = testmodels.float_predict_request(rows, 'mnist')
    got = _stub(batching_server).Predict(request, timeout=60)
    want = _stub(main_server).Predict(request, timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(got.outputs['scores']),
                               tf.make_ndarray(want.outputs['scores']),
                               rtol=1e-6,
                               atol=1e-7)


def test_unequal_batch_sizes_are_rejected(batching_server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'mnist'
    request.model_spec.signature_name = 'serving_multi'
    request.inputs['a'].CopyFrom(
        tf.make_tensor_proto(np.ones([2, 2], np.float32)))
    request.inputs['b'].CopyFrom(tf.make_tensor_proto([b'x']))
    with pytest.raises(grpc.RpcError) as info:
        _stub(batching_server).Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ('Batching Run() input tensors must have equal 0th-dimension size'
            in info.value.details())


def test_rest_requests_are_batched_too(batching_server):
    before = _batches_run(batching_server, 'mnist')
    code, body = batching_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': [[0.1, 0.2, 0.3, 0.4]]
    })
    assert code == 200, body
    np.testing.assert_allclose(body['predictions'][0]['scores'],
                               testmodels.expected_scores(
                                   np.array([[0.1, 0.2, 0.3, 0.4]]), 2.0)[0],
                               rtol=1e-5)
    assert _batches_run(batching_server, 'mnist') - before == 1


def test_bad_batching_parameters_fail_startup(tmp_path: Path):
    params = tmp_path / 'batching.config'
    params.write_text('max_batch_size { value: 8 } allowed_batch_sizes: 4')
    server = server_utils.launch(tmp_path, [
        '--model_base_path=/nonexistent', '--enable_batching',
        f'--batching_parameters_file={params}'
    ])
    assert server.process.wait(60) == 255
    assert 'Last entry in allowed_batch_sizes must match max_batch_size' in \
        server.log()
