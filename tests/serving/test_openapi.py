"""The REST API's OpenAPI 3 document against real answers of a real model.

The server serves `serving/openapi.json` (docs/openapi.json links to it) at
GET /v1/openapi.json; every operation's documented response schema must
accept what the session's `main_server` really answers, errors included.
"""

import json
import re

import jsonschema
import pytest

from tests.serving import server_utils
from tests.serving import testmodels

DOCUMENT = server_utils.REPO_ROOT / 'serving' / 'openapi.json'
ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]]
VALUES = (testmodels.image(3).astype('float32') / 255).ravel().tolist()

# (method, path, body, status): at least one call of each operation and of
# each way to name a version, and documented errors.
CALLS = [
    ('GET', '/v1/models/mnist', None, 200),
    ('GET', '/v1/models/mnist/versions/2', None, 200),
    ('GET', '/v1/models/mnist/labels/stable', None, 200),
    ('GET', '/v1/models/mnist/metadata', None, 200),
    ('GET', '/v1/models/mnist/labels/canary/metadata', None, 200),
    ('GET', '/v1/models/every/versions/1/metadata', None, 200),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_float',
        'instances': ROWS
    }, 200),
    ('POST', '/v1/models/mnist/versions/3:predict', {
        'signature_name': 'serving_float',
        'inputs': ROWS
    }, 200),
    ('POST', '/v1/models/mnist:predict', {
        'signature_name': 'serving_multi',
        'instances': [{
            'a': [1.0, 2.0],
            'b': {
                'b64': 'AAE='
            }
        }]
    }, 200),
    ('POST', '/v1/models/mnist:classify', {
        'examples': [{
            'image/float': VALUES
        }, {
            'image/float': VALUES
        }]
    }, 200),
    ('POST', '/v1/models/mnist/labels/stable:regress', {
        'signature_name': 'regress',
        'context': {
            'image/float': VALUES
        },
        'examples': [{}]
    }, 200),
    ('GET', '/v1/models/nope', None, 404),
    ('POST', '/v1/models/mnist:predict', {
        'instances': [1],
        'inputs': [1]
    }, 400),
]


@pytest.fixture(scope='module')
def document():
    return json.loads(DOCUMENT.read_text())


def _operation(document, method: str, path: str):
    """The documented operation whose path template matches `path`."""
    for template, item in document['paths'].items():
        pattern = re.sub(r'\\\{[a-z]+\\\}', '[^/:]+', re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return item[method.lower()]
    raise AssertionError(f'{method} {path} is not in {DOCUMENT}')


def _schema(document, node):
    """A JSON Schema for `node`, its $refs resolved within the document."""
    while '$ref' in node and 'content' not in node:
        node = _resolve(document, node['$ref'])
    schema = node['content']['application/json']['schema']
    return dict(schema, components=document['components'])


def _resolve(document, ref: str):
    node = document
    for key in ref.lstrip('#/').split('/'):
        node = node[key]
    return node


def test_the_server_serves_the_document_of_docs(main_server, document):
    docs = server_utils.REPO_ROOT / 'docs' / 'openapi.json'
    assert docs.read_text() == DOCUMENT.read_text()  # A link to it.
    code, served = main_server.http('GET', '/v1/openapi.json')
    assert code == 200
    assert served == document
    jsonschema.Draft202012Validator.check_schema(
        dict(document['components']['schemas']['PredictResponse'],
             components=document['components']))
    assert document['openapi'].startswith('3.')


@pytest.mark.parametrize('method, path, body, status', CALLS)
def test_real_responses_match_the_schema(main_server, document, method, path,
                                         body, status):
    code, answer = main_server.http(method, path, body)
    assert code == status, answer
    operation = _operation(document, method, path)
    responses = operation['responses']
    spec = responses.get(str(code)) or responses['default']
    jsonschema.validate(answer,
                        _schema(document, spec),
                        cls=jsonschema.Draft202012Validator)
    if body is not None:
        request_schema = dict(
            operation['requestBody']['content']['application/json']['schema'],
            components=document['components'])
        if status == 200:
            jsonschema.validate(body,
                                request_schema,
                                cls=jsonschema.Draft202012Validator)
