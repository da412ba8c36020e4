"""In-process tests of the server's pieces (no server process, fast)."""

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import batching
from serving import config as config_lib
from serving import errors
from serving import event_loop
from serving import flags as flags_lib
from serving import json_codec
from serving import manager as manager_lib
from serving import metrics as metrics_lib
from serving import servable as servable_lib
from serving import served_versions
from serving import tensors

# -------------------------------------------------------------------- flags


def test_flags_both_forms_and_defaults():
    flags = flags_lib.parse([
        '--port', '9000', '--rest_api_port=9001', '--enable_batching',
        '--model_name', 'm', '--enable_model_warmup=false'
    ])
    assert (flags.port, flags.rest_api_port, flags.model_name) == (9000, 9001,
                                                                   'm')
    assert flags.enable_batching and not flags.enable_model_warmup
    assert flags.file_system_poll_wait_seconds == 1
    assert flags.max_num_load_retries == 5
    assert flags.host == '127.0.0.1'
    assert flags.saved_model_tags == 'serve'


@pytest.mark.parametrize('argv, message', [
    (['--nope=1'], 'unknown argument'),
    (['positional'], 'unknown argument'),
    (['--port'], 'Missing value'),
    (['--port=x'], 'Illegal value'),
    (['--enable_batching=maybe'], 'Illegal value'),
    (['--use_tflite_model'], 'TFLite'),
    (['--server_processes=0'], 'Illegal value for flag --server_processes'),
    (['--server_processes=two'], 'Illegal value for flag --server_processes'),
    (['--server_processes=2', '--grpc_socket_path=/s'], 'UNIX socket'),
])
def test_flags_errors(argv, message):
    with pytest.raises(flags_lib.FlagError, match=message):
        flags_lib.parse(argv)


def test_shared_metrics_sum_processes_and_survive_a_replacement(tmp_path):
    """--server_processes: any process's scrape gives the totals."""
    first, second = metrics_lib.Metrics(), metrics_lib.Metrics()
    first.share(str(tmp_path), 0)
    second.share(str(tmp_path), 1)
    for metrics, count in ((first, 3), (second, 4)):
        for _ in range(count):
            metrics.request('m', 'predict', 'REST', 'OK', 100.0)
        metrics.versions_available('m', count)
    first.close()  # A last write of each; the live process reads the other.
    second.close()
    ok = ':tensorflow:serving:request_count{model_name="m",status="OK"} 7'
    latency = (':tensorflow:serving:request_latency_count{model_name="m",'
               'API="predict",entrypoint="REST"} 7')
    for metrics, gauge in ((first, 3), (second, 4)):
        text = metrics.render()
        assert ok in text and latency in text
        assert (':tensorflow:serving:model_versions_available{model_name="m"} '
                f'{gauge}') in text.splitlines()
    replacement = metrics_lib.Metrics()  # Of the first, after it died.
    replacement.share(str(tmp_path), 0)
    replacement.request('m', 'predict', 'REST', 'OK', 100.0)
    replacement.close()
    assert ok.replace('} 7', '} 8') in replacement.render()


def test_server_processes_counts():
    count = flags_lib.process_count
    assert count(flags_lib.parse([])) == 1
    assert count(flags_lib.parse(['--server_processes', '3'])) == 3
    assert count(flags_lib.parse(['--server_processes=auto'
                                 ])) == len(os.sched_getaffinity(0))


def test_grpc_channel_arguments():
    assert flags_lib.grpc_channel_arguments(
        'grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x') == [
            ('grpc.max_connection_age_ms', 2000),
            ('grpc.primary_user_agent', 'x')
        ]


# ------------------------------------------------------------------- config


def test_batching_parameters_defaults_and_values():
    options = config_lib.parse_batching_parameters('')
    assert options.max_batch_size == 1000
    assert options.batch_timeout_micros == 0
    assert options.max_enqueued_batches == 10
    options = config_lib.parse_batching_parameters(
        'max_batch_size { value: 4 } batch_timeout_micros { value: 7 } '
        'allowed_batch_sizes: 2 allowed_batch_sizes: 4 '
        'pad_variable_length_inputs: true some_future_field: 3')
    assert options.max_batch_size == 4
    assert options.allowed_batch_sizes == (2, 4)
    assert options.pad_variable_length_inputs


@pytest.mark.parametrize('text', [
    'max_batch_size { value: 8 } allowed_batch_sizes: 4',
    'max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4',
    'max_batch_size { value: 0 }',
    'max_batch_size: 3',
])
def test_batching_parameters_rejected(text):
    with pytest.raises(errors.ServingError):
        config_lib.parse_batching_parameters(text)


def test_monitoring_config(tmp_path):
    path = tmp_path / 'm.config'
    path.write_text('prometheus_config { enable: true }')
    assert config_lib.read_monitoring_path(
        str(path)) == ('/monitoring/prometheus/metrics')
    path.write_text('prometheus_config { enable: true path: "/m" }')
    assert config_lib.read_monitoring_path(str(path)) == '/m'
    path.write_text('prometheus_config { enable: false path: "/m" }')
    assert config_lib.read_monitoring_path(str(path)) is None


# ------------------------------------------------------------------ tensors


def test_to_ndarray_follows_tensor_from_proto():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 4
    proto.float_val.extend([1.0, 2.0])
    assert tensors.to_ndarray(proto, 'x').tolist() == [1.0, 2.0, 2.0, 2.0]
    proto.ClearField('float_val')
    assert tensors.to_ndarray(proto, 'x').tolist() == [0.0] * 4
    packed = tf.make_tensor_proto(np.arange(6, dtype=np.int64).reshape(2, 3))
    assert tensors.to_ndarray(packed, 'x').tolist() == [[0, 1, 2], [3, 4, 5]]
    packed.tensor_content = packed.tensor_content[:-1]
    with pytest.raises(errors.ServingError, match='tensor parsing error: x'):
        tensors.to_ndarray(packed, 'x')
    strings = tf.make_tensor_proto([[b'a', b'b']])
    assert tensors.to_ndarray(strings, 's').tolist() == [[b'a', b'b']]


@pytest.mark.parametrize('array', [
    np.array([[1.5, -2.0]], np.float32),
    np.array([1, 2], np.int8),
    np.array([True, False]),
    np.array([[b'x', b'yz']], dtype=object),
    np.array([1.5], np.float16),
    np.array([2**40], np.int64),
    np.array([1 + 2j], np.complex64),
])
def test_fill_proto_round_trips(array):
    proto = tensors.to_proto(array)
    if array.dtype != np.complex64:
        assert not proto.tensor_content
    back = tf.make_ndarray(proto)
    assert back.tolist() == array.tolist()


# --------------------------------------------------------------------- JSON


def test_json_floats_print_like_tf_serving():
    values = np.array(
        [0.1, 1.0, 1e-5, 9e6, 0.123456789, np.nan, -np.inf, 16777216.0],
        np.float32)
    assert json_codec._tokens(values, False) == [
        '0.1', '1.0', '1e-05', '9e+06', '0.123456791', 'NaN', '-Infinity',
        '16777216.0'
    ]


def _specs(**dtypes):
    return {k: servable_lib.TensorSpec(v, None) for k, v in dtypes.items()}


def test_json_instances_and_inputs():
    specs = _specs(a=types_pb2.DT_FLOAT, b=types_pb2.DT_STRING)
    arrays, fmt = json_codec.predict_inputs(
        {
            'instances': [{
                'a': [1, 2.5],
                'b': {
                    'b64': 'aGk='
                }
            }, {
                'a': [3, 4],
                'b': 'yo'
            }]
        }, specs)
    assert fmt == json_codec.ROW
    assert arrays['a'].dtype == np.float32 and arrays['a'].shape == (2, 2)
    assert arrays['b'].tolist() == [b'hi', b'yo']
    arrays, fmt = json_codec.predict_inputs({'inputs': {
        'a': 1.5,
        'b': ['x']
    }}, specs)
    assert fmt == json_codec.COLUMNAR and arrays['a'].shape == ()


@pytest.mark.parametrize('doc, dtype, message', [
    ({
        'instances': [[1, 2], [3]]
    }, types_pb2.DT_FLOAT, 'Expecting tensor size'),
    ({
        'instances': [1.5]
    }, types_pb2.DT_INT32, 'not of expected type: int32'),
    ({
        'instances': [True]
    }, types_pb2.DT_INT64, 'not of expected type: int64'),
    ({
        'instances': [16777217]
    }, types_pb2.DT_FLOAT, 'without loss of precision'),
    ({
        'instances': [2**31]
    }, types_pb2.DT_INT32, 'not of expected type'),
    ({
        'inputs': [[1], 2]
    }, types_pb2.DT_FLOAT, 'found at incorrect level'),
    ({
        'inputs': [[1], [2, 3]]
    }, types_pb2.DT_FLOAT, 'unexpected size'),
    ({
        'instances': [{
            'c': 1
        }]
    }, types_pb2.DT_FLOAT, 'does not have named input: c'),
    ({
        'instances': [{
            'b64': 3
        }]
    }, types_pb2.DT_STRING, 'does not have named input: b64'),
    ({
        'instances': [[{
            'b64': 3
        }]]
    }, types_pb2.DT_STRING, 'not formatted correctly for base64'),
    ({
        'instances': [['a']]
    }, types_pb2.DT_HALF, 'Conversion of JSON Value'),
    ({
        'instances': [{
            'b64': 'a',
            'x': 1
        }]
    }, types_pb2.DT_STRING, 'does not have named input'),
])
def test_json_errors(doc, dtype, message):
    with pytest.raises(errors.ServingError, match=message) as info:
        json_codec.predict_inputs(doc, _specs(x=dtype))
    assert info.value.code == errors.Code.INVALID_ARGUMENT


def test_json_predict_response_layouts():
    outputs = {
        'scores': np.array([[0.5, 0.25]], np.float32),
        'label_bytes': np.array([b'\x00\x01'], dtype=object)
    }
    assert json_codec.predict_response(
        outputs,
        json_codec.ROW) == ('{"predictions": [{"label_bytes": {"b64": "AAE="}, '
                            '"scores": [0.5, 0.25]}]}')
    assert json_codec.predict_response(outputs, json_codec.COLUMNAR) == (
        '{"outputs": {"label_bytes": [{"b64": "AAE="}], '
        '"scores": [[0.5, 0.25]]}}')
    with pytest.raises(errors.ServingError, match='inconsistent batch size'):
        json_codec.predict_response({
            'a': np.zeros([2]),
            'b': np.zeros([3])
        }, json_codec.ROW)


def test_json_examples():
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    json_codec.fill_examples(
        {
            'context': {
                'c': 'x'
            },
            'examples': [{
                'f': [1.5, 2.0],
                'i': 3,
                'b': {
                    'b64': 'AA=='
                },
                't': True
            }]
        }, request)
    example = request.input.example_list_with_context.examples[0]
    features = example.features.feature
    assert list(features['f'].float_list.value) == [1.5, 2.0]
    assert list(features['i'].int64_list.value) == [3]
    assert list(features['b'].bytes_list.value) == [b'\x00']
    assert list(features['t'].int64_list.value) == [1]


# ----------------------------------------------------------------- batching


def _batcher(**kwargs) -> batching.BatchScheduler:
    return batching.BatchScheduler(config_lib.BatchingOptions(**kwargs))


def test_batcher_merges_pads_and_splits():
    scheduler = _batcher(max_batch_size=8,
                         batch_timeout_micros=0,
                         num_batch_threads=1,
                         allowed_batch_sizes=(4, 8))
    seen = []

    def run(inputs):
        seen.append(inputs['x'].shape[0])
        return {'y': inputs['x'] * 2}

    # The one batch thread is busy while the four calls queue, so all four
    # are due when it frees up: merging is certain, whatever the timing.
    busy, release = threading.Event(), threading.Event()

    def hold(inputs):
        busy.set()
        release.wait(30)
        return inputs

    blocker = scheduler.submit('m', 'other', hold, {'x': np.zeros((1, 1))})
    assert busy.wait(30)
    inputs = [np.full((1 + i % 2, 3), i, np.float32) for i in range(4)]
    pending = [scheduler.submit('m', 'k', run, {'x': x}) for x in inputs]
    release.set()
    blocker.result(30)
    for x, future in zip(inputs, pending):
        assert future.result(30)['y'].tolist() == (2 * x).tolist()
    assert seen == [8]  # One run for four calls; 6 rows padded to 8.
    big = scheduler.run('m', 'k', run, {'x': np.arange(20.0).reshape(20, 1)})
    assert big['y'].ravel().tolist() == list(np.arange(20.0) * 2)
    assert seen[1:] == [8, 8, 4]  # Split at max_batch_size; 4 is allowed.
    scheduler.stop()


def test_batcher_rejects_scalars_and_unequal_batches():
    scheduler = _batcher(num_batch_threads=1)
    with pytest.raises(errors.ServingError, match='at least one dimension'):
        scheduler.run('m', 'k', lambda x: x, {'x': np.float32(1)})
    with pytest.raises(errors.ServingError, match='equal 0th-dimension'):
        scheduler.run('m', 'k', lambda x: x, {
            'x': np.zeros(2),
            'y': np.zeros(3)
        })
    scheduler.stop()


def test_batcher_queue_full_is_unavailable():
    scheduler = _batcher(max_batch_size=1,
                         max_enqueued_batches=1,
                         num_batch_threads=1)
    running, release = threading.Event(), threading.Event()

    def slow(inputs):
        running.set()
        assert release.wait(60)
        return inputs

    first = scheduler.submit('m', 'k', slow, {'x': np.zeros(1)})
    # The first task is running on the one batch thread; the queue is empty.
    assert running.wait(60)
    # Queued (submit returns once it is): the queue holds its one batch.
    second = scheduler.submit('m', 'k', slow, {'x': np.zeros(1)})
    with pytest.raises(errors.ServingError) as info:
        scheduler.run('m', 'k', slow, {'x': np.zeros(1)})
    assert info.value.code == errors.Code.UNAVAILABLE
    release.set()
    first.result(60)
    second.result(60)
    scheduler.stop()


# ------------------------------------------------------------------ manager


class _FakeServable:

    def __init__(self, name, version):
        self.name, self.version = name, version
        self.closed = False

    def acquire(self):
        return not self.closed

    def release(self):
        pass

    def close(self):
        self.closed = True


def _manager(tmp_path: Path,
             versions,
             policy='',
             fail=(),
             labels='',
             allow=False):
    base = tmp_path / 'm'
    for version in versions:
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / 'saved_model.pb').write_bytes(b'')
    events = []

    def load(name, version, path):
        events.append(('load', version))
        if version in fail:
            raise errors.ServingError(errors.Code.DATA_LOSS, 'corrupt')
        return _FakeServable(name, version)

    served = served_versions.ServedVersions()
    manager = manager_lib.ModelManager(
        load, served,
        manager_lib.ManagerOptions(poll_seconds=0,
                                   settle_seconds=0,
                                   max_load_retries=1,
                                   load_retry_interval=0.01,
                                   allow_labels_for_unavailable=allow))
    config = text_format.Parse(
        f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
        f'model_platform: "tensorflow" {policy} {labels} }} }}',
        model_server_config_pb2.ModelServerConfig())
    return manager, served, config, base, events


def _states(served):
    return [(s.version, s.state) for s in served.version_status('m')]


def _wait(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


@pytest.mark.parametrize('policy, expected', [
    ('', [(5, 'AVAILABLE')]),
    ('model_version_policy { latest { num_versions: 2 } }', [(5, 'AVAILABLE'),
                                                             (3, 'AVAILABLE')]),
    ('model_version_policy { all {} }', [(5, 'AVAILABLE'), (3, 'AVAILABLE'),
                                         (1, 'AVAILABLE')]),
    ('model_version_policy { specific { versions: 1 versions: 3 } }', [
        (3, 'AVAILABLE'), (1, 'AVAILABLE')
    ]),
])
def test_manager_version_policies(tmp_path, policy, expected):
    manager, served, config, _, events = _manager(tmp_path, [1, 3, 5], policy)
    manager.reload(config)
    _wait(lambda: _states(served) == expected)
    assert events[0] == ('load', expected[0][0])  # Highest version first.
    assert served.acquire('m').version == expected[0][0]
    manager.stop()


def test_manager_swap_preserves_availability_and_failures_keep_old(tmp_path):
    manager, served, config, base, events = _manager(tmp_path, [1], fail=(3,))
    manager.reload(config)
    old = served.acquire('m')
    (base / '2').mkdir()
    (base / '2' / 'saved_model.pb').write_bytes(b'')
    manager.poll()
    _wait(lambda: _states(served) == [(2, 'AVAILABLE'), (1, 'END')])
    assert old.closed
    (base / '3').mkdir()
    (base / '3' / 'saved_model.pb').write_bytes(b'')
    manager.poll()
    _wait(lambda: dict(_states(served)).get(3) == 'END')
    assert events.count(('load', 3)) == 2  # One retry.
    assert served.acquire('m').version == 2
    status = served.version_status('m', 3)[0]
    assert status.error.code == errors.Code.DATA_LOSS
    with pytest.raises(errors.ServingError) as info:
        served.acquire('m', version=3)
    assert info.value.code == errors.Code.NOT_FOUND
    manager.stop()


def test_manager_labels(tmp_path):
    labels = 'version_labels { key: "stable" value: 1 }'
    manager, served, config, _, _ = _manager(tmp_path, [1], labels=labels)
    with pytest.raises(errors.ServingError) as info:
        manager.reload(config)
    assert info.value.code == errors.Code.FAILED_PRECONDITION
    manager.stop()
    manager, served, config, _, _ = _manager(tmp_path / 'b', [1],
                                             labels=labels,
                                             allow=True)
    manager.reload(config)
    assert served.acquire('m', label='stable').version == 1
    with pytest.raises(errors.ServingError) as info:
        served.acquire('m', label='nope')
    assert info.value.code == errors.Code.INVALID_ARGUMENT
    manager.stop()


def test_manager_ignores_incomplete_and_non_numeric_dirs(tmp_path):
    manager, served, config, base, events = _manager(tmp_path, [1])
    (base / '9').mkdir()  # No saved_model.pb.
    (base / 'latest').mkdir()
    manager.reload(config)
    assert _states(served) == [(1, 'AVAILABLE')]
    assert events == [('load', 1)]
    manager.stop()


def test_huge_shapes_without_data_are_rejected():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 2**40
    proto.float_val.append(1.0)
    with pytest.raises(errors.ServingError, match='tensor parsing error'):
        tensors.to_ndarray(proto, 'x')


def test_deeply_nested_json_is_a_parse_error():
    body = b'{"instances": ' + b'[' * 100000 + b']' * 100000 + b'}'
    with pytest.raises(errors.ServingError, match='JSON Parse error'):
        json_codec.parse_body(body)


def test_json_small_outputs_format_as_large_ones():
    values = np.array([0.1, 1.0, 1e-5, 9e6, 0.123456789, np.nan, 3e38, 1e-45],
                      np.float32)
    large = np.tile(values, 3)  # Above _SMALL_OUTPUT: vectorized checks.
    assert large.size > json_codec._SMALL_OUTPUT >= values.size
    assert (json_codec._tokens(large,
                               False) == json_codec._tokens(values, False) * 3)


def test_json_floats_are_the_shortest_that_round_trip():
    """Against WriteDecimal's rule applied one value at a time."""
    values = np.random.default_rng(7).standard_normal(2000).astype(
        np.float32) * np.float32(1e3)
    values[::7] = np.round(values[::7])  # Whole numbers: a ".0" added.
    expected = []
    for value in values.tolist():
        token = '%.6g' % value
        if np.float32(token) != np.float32(value):
            token = '%.9g' % value
        expected.append(token if '.' in token or 'e' in token else token + '.0')
    assert json_codec._tokens(values, False) == expected


@pytest.mark.parametrize('instances, dtype', [
    ([[0.25, 1, -3e38], [2, 0.5, float('nan')]], types_pb2.DT_FLOAT),
    ([[[1.5], [2.5]], [[3.5], [-4.0]]], types_pb2.DT_DOUBLE),
    ([1, 2, 3], types_pb2.DT_INT32),
    ([[255, 0], [7, 1]], types_pb2.DT_UINT8),
    ([[2**63 - 1]], types_pb2.DT_INT64),
    ([[2**64 - 1]], types_pb2.DT_UINT64),
    ([[1, 2], [3]], types_pb2.DT_FLOAT),
    ([[1.0, True]], types_pb2.DT_FLOAT),
    ([[1.0, 'a']], types_pb2.DT_FLOAT),
    ([[2**24]], types_pb2.DT_FLOAT),
    ([[1e39]], types_pb2.DT_FLOAT),
    ([[2**70]], types_pb2.DT_DOUBLE),
    ([[1.5]], types_pb2.DT_INT32),
    ([[2**31]], types_pb2.DT_INT32),
    ([[-1]], types_pb2.DT_UINT64),
    ([[2**64]], types_pb2.DT_INT64),
    ([[1, [2]], [3, 4]], types_pb2.DT_FLOAT),
])
def test_json_instances_at_once_as_one_by_one(instances, dtype, monkeypatch):
    """The whole-request conversion gives what the element-by-element one
    gives: the same array, or the same fault."""

    def convert():
        try:
            array = json_codec.predict_inputs({'instances': instances},
                                              _specs(x=dtype))[0]['x']
            return array.dtype, array.shape, array.tobytes()
        except errors.ServingError as e:
            return e.code, str(e)

    at_once = convert()
    monkeypatch.setattr(json_codec, '_numbers_at_once', lambda *_: None)
    assert at_once == convert()


def test_signature_flat_call_feeds_inputs_by_name(tmp_path):
    """Inputs declared out of alphabetical order reach the right arguments
    on the flat call (a swap would answer 21, not 12)."""

    class Module(tf.Module):

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.float32, name='zeta'),
            tf.TensorSpec([None], tf.float32, name='alpha')
        ])
        def serve(self, zeta, alpha):
            return {'out': zeta * 10.0 + alpha}

    module = Module()
    tf.saved_model.save(module,
                        str(tmp_path / '1'),
                        signatures={'serving_default': module.serve})
    loaded = servable_lib.load('m', 1, str(tmp_path / '1'), ('serve',))
    sig = loaded.signatures['serving_default']
    assert sig._flat_call is not None
    out = sig.run({
        'zeta': np.array([1.0], np.float32),
        'alpha': np.array([2.0], np.float32)
    })
    assert out['out'].tolist() == [12.0]


def test_worker_pool_bounds_threads_and_returns_results_and_errors():
    pool = event_loop.WorkerPool(3, 'test')
    first_three = threading.Barrier(3, timeout=60)  # All three threads run.
    names = set()

    def call(i):
        names.add(threading.current_thread().name)
        if i < 3:
            first_three.wait()
        if i == 7:
            raise ValueError('seven')
        return i * i

    async def run_all():
        return await asyncio.gather(*(pool.run(call, i) for i in range(10)),
                                    return_exceptions=True)

    results = asyncio.run(run_all())
    pool.shutdown()
    assert [r for i, r in enumerate(results) if i != 7
           ] == [i * i for i in range(10) if i != 7]
    assert isinstance(results[7], ValueError)
    assert 1 <= len(names) <= 3 and all(n.startswith('test_') for n in names)


# 240 MB of 4 KB blocks with every 16th kept: the freed pages lie between
# live blocks, where glibc's free() never returns them; only a trim does.
_FRAGMENTED_HEAP = """
import re
from pathlib import Path
from serving import memory

def rss_mb():
    status = Path('/proc/self/status').read_text()
    return int(re.search(r'^VmRSS:\\s+(\\d+)', status, re.M).group(1)) >> 10

blocks = [bytes(4000) for _ in range(60_000)]
kept = blocks[::16]
del blocks
freed = rss_mb()
memory.release_after(4096)  # A small request.
after_small = rss_mb()
memory.release_after(memory.LARGE_REQUEST_BYTES)
print(freed, after_small, rss_mb(), len(kept))
"""


def test_memory_is_trimmed_after_large_requests_only():
    """A large request's freed pages go back to the system; a small one's
    request does not pay for a trim."""
    out = subprocess.run([sys.executable, '-c', _FRAGMENTED_HEAP],
                         cwd=Path(__file__).parents[2],
                         check=True,
                         capture_output=True,
                         text=True).stdout
    freed, after_small, after_large, _ = map(int, out.split())
    # Measured: 243 MB, 243 MB, 41 MB.
    assert after_small > freed - 20, out
    assert after_large < freed - 150, out
