"""Every gRPC RPC and REST route of the model server, against a real process.

All tests share the session's `main_server` (see conftest.py): `mnist`
serves versions 2 (bias 1) and 3 (bias 2, the latest), labelled stable and
canary; `every` serves 1 and 2; `pinned` serves only 1.
"""

import base64

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from tests.serving import conftest
from tests.serving import testmodels

ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]]


@pytest.fixture(scope='module')
def channel(main_server):
    with grpc.insecure_channel(main_server.grpc_address) as channel:
        yield channel


@pytest.fixture(scope='module')
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope='module')
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _float_request(rows=ROWS,
                   name='mnist',
                   **spec) -> predict_pb2.PredictRequest:
    request = testmodels.float_predict_request(rows, name)
    for key, value in spec.items():
        if key == 'version':
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _assert_still_serving(stub) -> None:
    response = stub.Predict(_float_request(), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['scores']),
                               testmodels.expected_scores(np.array(ROWS), 2.0),
                               rtol=1e-5)


def _rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


# ------------------------------------------------------------------ Predict


def test_predict_png_image(predict_stub):
    pixels = testmodels.image(1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'mnist'
    request.model_spec.signature_name = 'serving_image'
    request.inputs['images'].CopyFrom(
        tf.make_tensor_proto([testmodels.png_bytes(pixels)]))
    response = predict_stub.Predict(request, timeout=30)
    assert response.model_spec.name == 'mnist'
    assert response.model_spec.version.value == 3
    assert response.model_spec.signature_name == 'serving_image'
    expected = testmodels.expected_scores(
        testmodels.quadrant_features(pixels)[None], 2.0)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['scores']),
                               expected,
                               rtol=1e-5)
    assert tf.make_ndarray(
        response.outputs['classes']).tolist() == [list(testmodels.CLASS_NAMES)]


def test_predict_default_signature_parses_examples(predict_stub):
    pixels = [testmodels.image(2), testmodels.image(3)]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'mnist'
    request.inputs['inputs'].CopyFrom(
        tf.make_tensor_proto(
            [testmodels.example(p).SerializeToString() for p in pixels]))
    response = predict_stub.Predict(request, timeout=30)
    assert response.model_spec.signature_name == 'serving_default'
    expected = testmodels.expected_scores(
        np.stack([testmodels.quadrant_features(p) for p in pixels]), 2.0)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['scores']),
                               expected,
                               rtol=1e-5)


def test_response_tensors_use_typed_fields(predict_stub):
    response = predict_stub.Predict(_float_request(), timeout=30)
    scores = response.outputs['scores']
    assert scores.dtype == tf.float32.as_datatype_enum
    assert not scores.tensor_content
    assert len(scores.float_val) == 6
    assert [d.size for d in scores.tensor_shape.dim] == [2, 3]
    assert len(response.outputs['classes'].string_val) == 6


@pytest.mark.parametrize('spec, bias, version', [
    ({}, 2.0, 3),
    ({
        'version': 2
    }, 1.0, 2),
    ({
        'version': 3
    }, 2.0, 3),
    ({
        'version_label': 'stable'
    }, 1.0, 2),
    ({
        'version_label': 'canary'
    }, 2.0, 3),
])
def test_predict_versions_and_labels(predict_stub, spec, bias, version):
    response = predict_stub.Predict(_float_request(
        signature_name='serving_float', **spec),
                                    timeout=30)
    assert response.model_spec.version.value == version
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['scores']),
                               testmodels.expected_scores(np.array(ROWS), bias),
                               rtol=1e-5)


def test_predict_typed_fields_and_tensor_content_agree(predict_stub):
    typed = _float_request()
    typed.inputs['x'].ClearField('tensor_content')
    typed.inputs['x'].float_val.extend(np.array(ROWS, np.float32).ravel())
    packed = _float_request()
    assert packed.inputs['x'].tensor_content
    first = predict_stub.Predict(typed, timeout=30).outputs['scores']
    second = predict_stub.Predict(packed, timeout=30).outputs['scores']
    assert list(first.float_val) == list(second.float_val)
    # A single typed value fills the whole shape, as Tensor::FromProto does.
    broadcast = _float_request([[0.5] * 4, [0.5] * 4])
    single = broadcast.inputs['x']
    single.ClearField('tensor_content')
    single.float_val.append(0.5)
    filled = predict_stub.Predict(broadcast, timeout=30).outputs['scores']
    np.testing.assert_allclose(tf.make_ndarray(filled),
                               testmodels.expected_scores(
                                   np.full((2, 4), 0.5), 2.0),
                               rtol=1e-5)


def test_predict_output_filter(predict_stub):
    request = _float_request()
    request.output_filter.append('scores')
    response = predict_stub.Predict(request, timeout=30)
    assert list(response.outputs) == ['scores']


def _bad_requests():

    def float_request(**kwargs):
        return lambda: _float_request(**kwargs)

    def with_inputs(inputs, signature='serving_float'):

        def make():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = 'mnist'
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            return request

        return make

    def with_filter(*names):

        def make():
            request = _float_request()
            request.output_filter.extend(names)
            return request

        return make

    def broken_content():
        request = _float_request()
        request.inputs['x'].tensor_content = b'\x00' * 7
        return request

    code = grpc.StatusCode
    return [
        ('unknown model', float_request(name='nope'), code.NOT_FOUND,
         'Servable not found for request: Latest(nope)'),
        ('unloaded version', float_request(version=1), code.NOT_FOUND,
         'Specific(mnist, 1)'),
        ('unknown label', float_request(version_label='nope'),
         code.INVALID_ARGUMENT, 'Unrecognized servable version label: nope'),
        ('no model name', float_request(name=''), code.INVALID_ARGUMENT,
         'ModelSpec has no name specified'),
        ('unknown signature', float_request(signature_name='nope'),
         code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        ('unknown input', with_inputs({'y': np.ones([1, 4], np.float32)}),
         code.INVALID_ARGUMENT, 'input tensor alias not found in signature: y'),
        ('extra input',
         with_inputs({
             'x': np.ones([1, 4], np.float32),
             'y': np.ones([1], np.float32)
         }), code.INVALID_ARGUMENT, 'input size does not match signature'),
        ('missing input',
         with_inputs({'a': np.ones([1, 2], np.float32)}, 'serving_multi'),
         code.INVALID_ARGUMENT, 'Missing but required: {b}'),
        ('wrong dtype', with_inputs({'x': np.ones([1, 4], np.float64)}),
         code.INVALID_ARGUMENT, 'Expects arg[0] to be float but double'),
        ('wrong shape', with_inputs({'x': np.ones([1, 5], np.float32)}),
         code.INVALID_ARGUMENT, 'shape'),
        ('wrong rank', with_inputs({'x': np.ones([4], np.float32)}),
         code.INVALID_ARGUMENT, 'shape'),
        ('not an example',
         with_inputs({'inputs': [b'garbage']}, 'serving_default'),
         code.INVALID_ARGUMENT, 'Could not parse example input'),
        ('not a png', with_inputs({'images': [b'garbage']}, 'serving_image'),
         code.INVALID_ARGUMENT, 'Unknown image file format. One of JPEG, PNG, '
         'GIF, BMP required.'),
        ('bad tensor_content', broken_content, code.INVALID_ARGUMENT,
         'tensor parsing error: x'),
        ('unknown output', with_filter('nope'), code.INVALID_ARGUMENT,
         'output tensor alias not found in signature: nope'),
        ('duplicate output', with_filter('scores', 'scores'),
         code.INVALID_ARGUMENT, 'duplicate output tensor alias: scores'),
    ]


@pytest.mark.parametrize('make_request, code, message',
                         [c[1:] for c in _bad_requests()],
                         ids=[c[0] for c in _bad_requests()])
def test_predict_errors(predict_stub, make_request, code, message):
    error = _rpc_error(predict_stub.Predict, make_request())
    assert error.code() == code
    assert message in error.details()
    _assert_still_serving(predict_stub)


def test_garbage_bytes_do_not_take_the_server_down(channel, predict_stub):
    for method in ('/tensorflow.serving.PredictionService/Predict',
                   '/tensorflow.serving.PredictionService/Classify',
                   '/tensorflow.serving.ModelService/GetModelStatus'):
        raw = channel.unary_unary(method,
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            raw(b'\xff\xfe garbage \x00\x01', timeout=30)
        assert info.value.code() in (grpc.StatusCode.INTERNAL,
                                     grpc.StatusCode.INVALID_ARGUMENT)
    _assert_still_serving(predict_stub)


# ------------------------------------------------------- Classify / Regress


def _examples(*seeds) -> list:
    return [testmodels.example(testmodels.image(s)) for s in seeds]


def _expected_for(seeds, bias=2.0) -> np.ndarray:
    return testmodels.expected_scores(
        np.stack(
            [testmodels.quadrant_features(testmodels.image(s)) for s in seeds]),
        bias)


def test_classify_example_list(predict_stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'mnist'
    request.input.example_list.examples.extend(_examples(4, 5))
    response = predict_stub.Classify(request, timeout=30)
    assert response.model_spec.signature_name == 'serving_default'
    assert response.model_spec.version.value == 3
    expected = _expected_for([4, 5])
    assert len(response.result.classifications) == 2
    for row, classification in zip(expected, response.result.classifications):
        assert [c.label for c in classification.classes
               ] == ['zero', 'one', 'two']
        np.testing.assert_allclose([c.score for c in classification.classes],
                                   row,
                                   rtol=1e-5)


def test_classify_example_list_with_context(predict_stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'mnist'
    request.model_spec.version_label = 'stable'
    context = request.input.example_list_with_context
    context.context.CopyFrom(_examples(6)[0])
    context.examples.add()  # Features come from the context.
    context.examples.add().CopyFrom(_examples(7)[0])  # Overrides the context.
    response = predict_stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 2
    expected = _expected_for([6, 7], bias=1.0)
    scores = [
        [c.score for c in r.classes] for r in response.result.classifications
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


@pytest.mark.parametrize('signature, examples, code, message', [
    ('nope', 1, grpc.StatusCode.INVALID_ARGUMENT,
     'No signature was found with the name: nope'),
    ('serving_multi', 1, grpc.StatusCode.INVALID_ARGUMENT,
     'Expected one input Tensor.'),
    ('serving_varlen', 1, grpc.StatusCode.INVALID_ARGUMENT,
     'Expected classification signature outputs to contain at least one of'),
    ('serving_default', 0, grpc.StatusCode.INVALID_ARGUMENT, 'Input is empty.'),
])
def test_classify_errors(predict_stub, signature, examples, code, message):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'mnist'
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(_examples(*range(examples)))
    error = _rpc_error(predict_stub.Classify, request)
    assert error.code() == code
    assert message in error.details()
    _assert_still_serving(predict_stub)


def test_regress(predict_stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'mnist'
    request.model_spec.signature_name = 'regress'
    request.input.example_list.examples.extend(_examples(8, 9))
    response = predict_stub.Regress(request, timeout=30)
    assert response.model_spec.signature_name == 'regress'
    expected = [
        testmodels.quadrant_features(testmodels.image(s)).sum() for s in (8, 9)
    ]
    np.testing.assert_allclose([r.value for r in response.result.regressions],
                               expected,
                               rtol=1e-5)


def test_regress_errors(predict_stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'mnist'
    request.input.example_list.examples.extend(_examples(1))
    error = _rpc_error(predict_stub.Regress, request)  # serving_default
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'Expected one output Tensor.' in error.details()
    request.model_spec.signature_name = 'nope'
    error = _rpc_error(predict_stub.Regress, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_multi_inference(predict_stub):
    request = inference_pb2.MultiInferenceRequest()
    classify = request.tasks.add()
    classify.model_spec.name = 'mnist'
    classify.method_name = 'tensorflow/serving/classify'
    regress = request.tasks.add()
    regress.model_spec.name = 'mnist'
    regress.model_spec.signature_name = 'regress'
    regress.method_name = 'tensorflow/serving/regress'
    request.input.example_list.examples.extend(_examples(10))
    response = predict_stub.MultiInference(request, timeout=30)
    first, second = response.results
    assert first.model_spec.signature_name == 'serving_default'
    assert first.model_spec.version.value == 3
    np.testing.assert_allclose([
        c.score for c in first.classification_result.classifications[0].classes
    ],
                               _expected_for([10])[0],
                               rtol=1e-5)
    assert second.model_spec.signature_name == 'regress'
    assert second.regression_result.regressions[0].value == pytest.approx(
        testmodels.quadrant_features(testmodels.image(10)).sum(), rel=1e-5)


@pytest.mark.parametrize('tasks, code, message', [
    ([('mnist', '', 'tensorflow/serving/classify'),
      ('every', 'regress', 'tensorflow/serving/regress')
     ], grpc.StatusCode.INVALID_ARGUMENT, 'must access the same model name'),
    ([('mnist', '', 'tensorflow/serving/classify'),
      ('mnist', 'serving_default', 'tensorflow/serving/classify')
     ], grpc.StatusCode.INVALID_ARGUMENT, 'Duplicate evaluation of signature'),
    ([('mnist', '', 'tensorflow/serving/predict')
     ], grpc.StatusCode.UNIMPLEMENTED, 'Unsupported signature method_name'),
    ([('mnist', 'nope', 'tensorflow/serving/classify')
     ], grpc.StatusCode.INVALID_ARGUMENT, 'Requested signature not found'),
])
def test_multi_inference_errors(predict_stub, tasks, code, message):
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend(_examples(1))
    error = _rpc_error(predict_stub.MultiInference, request)
    assert error.code() == code
    assert message in error.details()


# ------------------------------------------------------ metadata and status


def test_get_model_metadata(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = 'mnist'
    request.metadata_field.append('signature_def')
    response = predict_stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == 'mnist'
    assert response.model_spec.version.value == 3
    packed = response.metadata['signature_def']
    assert packed.type_url == (
        'type.googleapis.com/tensorflow.serving.SignatureDefMap')
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    packed.Unpack(signature_map)
    assert {
        'serving_default', 'serving_image', 'serving_float', 'regress',
        '__saved_model_init_op'
    } <= set(signature_map.signature_def)
    default = signature_map.signature_def['serving_default']
    assert default.method_name == 'tensorflow/serving/predict'
    assert default.inputs['inputs'].dtype == tf.string.as_datatype_enum
    assert set(default.outputs) == {'classes', 'scores'}
    x = signature_map.signature_def['serving_float'].inputs['x']
    assert [d.size for d in x.tensor_shape.dim] == [-1, 4]


@pytest.mark.parametrize('name, fields, code', [
    ('mnist', [], grpc.StatusCode.INVALID_ARGUMENT),
    ('mnist', ['nope'], grpc.StatusCode.INVALID_ARGUMENT),
    ('nope', ['signature_def'], grpc.StatusCode.NOT_FOUND),
])
def test_get_model_metadata_errors(predict_stub, name, fields, code):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    request.metadata_field.extend(fields)
    assert _rpc_error(predict_stub.GetModelMetadata, request).code() == code


def _status(stub, name, version=None, label=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    response = stub.GetModelStatus(request, timeout=30)
    return [(s.version,
             get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
             s.status.error_code) for s in response.model_version_status]


def test_version_policies(model_stub):
    # latest { num_versions: 2 }: the two highest complete versions; the
    # non-numeric directory and the empty "7" are ignored.
    assert _status(model_stub, 'mnist') == [(3, 'AVAILABLE', 0),
                                            (2, 'AVAILABLE', 0)]
    assert _status(model_stub, 'every') == [(2, 'AVAILABLE', 0),
                                            (1, 'AVAILABLE', 0)]
    assert _status(model_stub, 'pinned') == [(1, 'AVAILABLE', 0)]


def test_get_model_status_by_version_and_label(model_stub):
    assert _status(model_stub, 'mnist', version=2) == [(2, 'AVAILABLE', 0)]
    assert _status(model_stub, 'mnist', label='canary') == [(3, 'AVAILABLE', 0)]


@pytest.mark.parametrize('name, version, label, code', [
    ('nope', None, None, grpc.StatusCode.NOT_FOUND),
    ('mnist', 1, None, grpc.StatusCode.NOT_FOUND),
    ('pinned', 2, None, grpc.StatusCode.NOT_FOUND),
    ('mnist', None, 'nope', grpc.StatusCode.INVALID_ARGUMENT),
])
def test_get_model_status_errors(model_stub, name, version, label, code):
    with pytest.raises(grpc.RpcError) as info:
        _status(model_stub, name, version, label)
    assert info.value.code() == code


def test_health_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ('', 'tensorflow.serving.PredictionService',
                    'tensorflow.serving.ModelService'):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service),
                              timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------- REST


def test_rest_model_status(main_server):
    code, body = main_server.http('GET', '/v1/models/mnist')
    assert code == 200
    assert body == {
        'model_version_status': [{
            'version': '3',
            'state': 'AVAILABLE',
            'status': {
                'error_code': 'OK',
                'error_message': ''
            }
        }, {
            'version': '2',
            'state': 'AVAILABLE',
            'status': {
                'error_code': 'OK',
                'error_message': ''
            }
        }]
    }
    code, body = main_server.http('GET', '/v1/models/mnist/versions/2')
    assert code == 200 and [s['version'] for s in body['model_version_status']
                           ] == ['2']
    code, body = main_server.http('GET', '/v1/models/mnist/labels/canary')
    assert code == 200 and [s['version'] for s in body['model_version_status']
                           ] == ['3']


@pytest.mark.parametrize('path, code, message', [
    ('/v1/models/nope', 404, 'Could not find any versions of model nope'),
    ('/v1/models/mnist/versions/9', 404, 'Could not find version 9 of model'),
    ('/v1/models/mnist/labels/nope', 400,
     'Unrecognized servable version label'),
    ('/v1/models', 400, 'Missing model name in request.'),
    ('/v1/models/mnist/versions/x', 400, 'Malformed request: GET'),
    ('/v1/nope', 400, 'Malformed request: GET /v1/nope'),
    ('/v1/models/nope/metadata', 404, 'Servable not found'),
])
def test_rest_status_errors(main_server, path, code, message):
    status, body = main_server.http('GET', path)
    assert status == code
    assert message in body['error']


def test_rest_unknown_path_is_404(main_server):
    assert main_server.http('GET', '/nope')[0] == 404


def test_rest_metadata(main_server):
    for path, version in (('/v1/models/mnist/metadata',
                           '3'), ('/v1/models/mnist/versions/2/metadata', '2'),
                          ('/v1/models/mnist/labels/canary/metadata', '3')):
        code, body = main_server.http('GET', path)
        assert code == 200, body
        assert body['model_spec'] == {
            'name': 'mnist',
            'version': version,
            'signature_name': ''
        }
        signatures = body['metadata']['signature_def']['signature_def']
        x = signatures['serving_float']['inputs']['x']
        assert x['dtype'] == 'DT_FLOAT'
        assert [d['size'] for d in x['tensor_shape']['dim']] == ['-1', '4']
        assert signatures['serving_default']['method_name'] == (
            'tensorflow/serving/predict')


def _grpc_scores(predict_stub, rows, **spec):
    response = predict_stub.Predict(_float_request(rows, **spec), timeout=30)
    return tf.make_ndarray(response.outputs['scores'])


def test_rest_predict_row_format(main_server, predict_stub):
    code, body = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': ROWS
    })
    assert code == 200, body
    predictions = body['predictions']
    assert [p['classes'] for p in predictions] == [['zero', 'one', 'two']] * 2
    # Same float32 values as gRPC, printed the way TF Serving prints them.
    assert np.array([p['scores'] for p in predictions], np.float32).tolist() \
        == _grpc_scores(predict_stub, ROWS).tolist()


def test_rest_predict_columnar_format(main_server, predict_stub):
    code, body = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'inputs': {
            'x': ROWS
        }
    })
    assert code == 200, body
    assert set(body['outputs']) == {'classes', 'scores'}
    assert np.array(body['outputs']['scores'], np.float32).tolist() == \
        _grpc_scores(predict_stub, ROWS).tolist()
    # A single input may be given without its name.
    code, same = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'inputs': ROWS
    })
    assert code == 200 and same == body


def test_rest_predict_versions_and_labels(main_server, predict_stub):
    for path, version in (('/versions/2', 2), ('/labels/stable', 2),
                          ('/labels/canary', 3), ('', 3)):
        code, body = main_server.http('POST', f'/v1/models/mnist{path}:predict',
                                      {
                                          'signature_name': 'serving_float',
                                          'instances': ROWS
                                      })
        assert code == 200, body
        scores = np.array([p['scores'] for p in body['predictions']],
                          np.float32)
        assert scores.tolist() == _grpc_scores(predict_stub,
                                               ROWS,
                                               version=version).tolist()


def test_rest_single_output_and_exact_floats(main_server):
    code, body = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_varlen',
        'instances': [[0.1, 0.2], [1, 2]]
    })
    assert code == 200, body
    # One output: each prediction is the value itself; floats are written
    # with TF Serving's shortest round-tripping form and whole numbers get
    # a ".0".
    assert body == {'predictions': [0.3, 3.0]}
    code, body = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_varlen',
        'inputs': [[0.1, 0.2], [1, 2]]
    })
    assert body == {'outputs': [0.3, 3.0]}


def test_rest_b64_inputs_and_bytes_outputs(main_server, predict_stub):
    pixels = testmodels.image(11)
    png = base64.b64encode(testmodels.png_bytes(pixels)).decode()
    code, body = main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_image',
        'instances': [{
            'b64': png
        }]
    })
    assert code == 200, body
    np.testing.assert_allclose(body['predictions'][0]['scores'],
                               testmodels.expected_scores(
                                   testmodels.quadrant_features(pixels)[None],
                                   2.0)[0],
                               rtol=1e-5)
    code, body = main_server.http(
        'POST', '/v1/models/mnist:predict', {
            'signature_name':
                'serving_multi',
            'instances': [{
                'a': [1, 2],
                'b': {
                    'b64': 'AAEC'
                }
            }, {
                'a': [0.5, 4],
                'b': 'text'
            }]
        })
    assert code == 200, body
    assert body == {
        'predictions': [{
            'echo_bytes': {
                'b64': 'AAEC'
            },
            'total': 3.0
        }, {
            'echo_bytes': {
                'b64': base64.b64encode(b'text').decode()
            },
            'total': 4.5
        }]
    }


def test_rest_examples_for_default_signature(main_server):
    values = (testmodels.image(12).astype(np.float32) / 255).ravel().tolist()
    code, body = main_server.http(
        'POST', '/v1/models/mnist:predict', {
            'instances': [{
                'b64':
                    base64.b64encode(
                        testmodels.example(
                            testmodels.image(12)).SerializeToString()).decode()
            }]
        })
    assert code == 200, body
    expected = _expected_for([12])[0]
    np.testing.assert_allclose(body['predictions'][0]['scores'],
                               expected,
                               rtol=1e-5)
    code, body = main_server.http('POST', '/v1/models/mnist:classify',
                                  {'examples': [{
                                      'image/float': values
                                  }]})
    assert code == 200, body
    labels = [pair[0] for pair in body['results'][0]]
    assert labels == ['zero', 'one', 'two']
    np.testing.assert_allclose([pair[1] for pair in body['results'][0]],
                               expected,
                               rtol=1e-5)
    stable_regress = '/v1/models/mnist/labels/stable:regress'
    code, body = main_server.http(
        'POST', stable_regress, {
            'signature_name': 'regress',
            'context': {
                'image/float': values
            },
            'examples': [{}]
        })
    assert code == 200, body
    assert body['results'][0] == pytest.approx(testmodels.quadrant_features(
        testmodels.image(12)).sum(),
                                               rel=1e-5)


@pytest.mark.parametrize('method, path, body, code, message', [
    ('POST', '/v1/models/nope:predict', {
        'instances': [1]
    }, 404, 'Servable not found for request: Latest(nope)'),
    ('POST', '/v1/models/mnist/versions/1:predict', {
        'instances': [1]
    }, 404, 'Specific(mnist, 1)'),
    ('POST', '/v1/models/mnist/labels/nope:predict', {
        'instances': [1]
    }, 400, 'Unrecognized servable version label: nope'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'nope',
        'instances': [1]
    }, 400, 'Serving signature name: "nope" not found in signature def'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': [['a', 1, 2, 3]]
    }, 400, 'is not of expected type: float'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': [[1, 2, 3]]
    }, 400, 'shape'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': [[1, 2, 3, 4], [1]]
    }, 400, 'Expecting tensor size'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': [[1, 2, 3, 4]],
        'inputs': [[1, 2, 3, 4]]
    }, 400, 'expecting only one of'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float'
    }, 400, "Missing 'inputs' or 'instances' key"),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_multi',
        'inputs': {
            'a': [[1, 2]]
        }
    }, 400, "Missing named input: b in 'inputs' object."),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_multi',
        'instances': [[1, 2]]
    }, 400, 'instances is a plain list'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_image',
        'instances': [{
            'b64': '!!'
        }]
    }, 400, 'Unable to base64 decode'),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 7
    }, 400, "'signature_name' key must be a string value."),
    ('POST', '/v1/models/mnist:predict', [1, 2], 400, 'Is not object'),
    ('POST', '/v1/models/mnist:predict', None, 400,
     'JSON Parse error: The document is empty'),
    ('POST', '/v1/models/mnist:classify', {
        'instances': [1]
    }, 400, "key 'examples' is expected and was not found"),
    ('POST', '/v1/models/mnist:classify', {
        'examples': [{
            'image/float': [1, 0.5]
        }]
    }, 400, 'Unexpected element type in feature: image/float'),
    ('POST', '/v1/models/mnist:regress', {
        'examples': []
    }, 400, "'examples' value is an empty array"),
    ('GET', '/v1/models/mnist:predict', None, 400, 'Malformed request'),
    ('PUT', '/v1/models/mnist', {}, 400, 'Malformed request: PUT'),
])
def test_rest_errors(main_server, predict_stub, method, path, body, code,
                     message):
    status, response = main_server.http(method, path, body)
    assert status == code, response
    assert message in response['error']
    _assert_still_serving(predict_stub)


def test_rest_garbage_body(main_server, predict_stub):
    status, response = main_server.http('POST',
                                        '/v1/models/mnist:predict',
                                        raw=b'\xff\x00{not json')
    assert status == 400
    assert response['error'].startswith('JSON Parse error')
    _assert_still_serving(predict_stub)


# ------------------------------------------------------ warmup and metrics


def test_warmup_requests_replayed_before_available(main_server, main_models):
    log = main_server.log()
    warmup_file = main_models / 'mnist' / '3' / 'assets.extra' / \
        'tf_serving_warmup_requests'
    finished = (f'Finished reading warmup data for model at {warmup_file}. '
                f'Number of warmup records read: '
                f'{conftest.MAIN_WARMUP_REQUESTS}.')
    assert finished in log
    assert log.index(finished) < log.index(
        'Successfully loaded servable version {name: mnist version: 3}')
    code, text = main_server.http('GET', '/monitoring/prometheus/metrics')
    assert code == 200
    assert (f':tensorflow:serving:model_warmup_request_count{{model_path='
            f'"{main_models / "mnist" / "3"}"}} '
            f'{conftest.MAIN_WARMUP_REQUESTS}') in text


def _scrape(server) -> dict:
    """Series (name and labels) -> value, from one Prometheus scrape."""
    code, text = server.http('GET', '/monitoring/prometheus/metrics')
    assert code == 200
    lines = text.splitlines()
    assert '# TYPE :tensorflow:serving:request_latency histogram' in lines
    return {
        line.rsplit(' ', 1)[0]: float(line.rsplit(' ', 1)[1])
        for line in lines
        if line and not line.startswith('#')
    }


def test_prometheus_metrics(main_server, predict_stub):
    # The server is shared: count what these calls add, from a baseline.
    before = _scrape(main_server)
    predict_stub.Predict(_float_request(), timeout=30)
    with pytest.raises(grpc.RpcError):
        predict_stub.Predict(_float_request(signature_name='nope'), timeout=30)
    main_server.http('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': ROWS
    })
    main_server.http('POST', '/v1/models/nope:predict', {'instances': [1]})
    after = _scrape(main_server)

    def added(series: str) -> float:
        assert series in after, f'{series} missing from metrics'
        return after[series] - before.get(series, 0)

    count = ':tensorflow:serving:request_count'
    assert added(count + '{model_name="mnist",status="OK"}') == 2
    assert added(count + '{model_name="mnist",'
                 'status="FAILED_PRECONDITION"}') == 1
    assert added(count + '{model_name="nope",status="NOT_FOUND"}') == 1
    grpc_latency = ('{model_name="mnist",API="Predict",entrypoint="GRPC"')
    assert added(':tensorflow:serving:request_latency_count' + grpc_latency +
                 '}') == 2
    assert added(':tensorflow:serving:request_latency_bucket' + grpc_latency +
                 ',le="+Inf"}') == 2
    assert added(':tensorflow:serving:request_latency_count{model_name='
                 '"mnist",API="predict",entrypoint="REST"}') == 1
    # Only the two calls that reached the model ran it.
    assert added(':tensorflow:serving:runtime_latency_count{model_name='
                 '"mnist",API="Predict",runtime="TF1"}') == 2
    assert after[':tensorflow:serving:model_versions_available{'
                 'model_name="mnist"}'] == 2
    assert after[':tensorflow:serving:model_versions_available{'
                 'model_name="every"}'] == 2
    assert any(
        s.startswith(':tensorflow:cc:saved_model:load_attempt_count{') and
        'status="success"' in s for s in after)
