"""Status codes and the error type every request path raises.

TF Serving reports failures as a canonical status code plus a message. gRPC
sends them as the call's status; REST maps the code to an HTTP status the way
`tensorflow_serving/model_servers/http_server.cc` does. This module imports
neither TensorFlow nor gRPC so the flag and config code can use it cheaply.
"""

import dataclasses
import enum
import re
from typing import Optional


class Code(enum.IntEnum):
    """Canonical status codes (same numbers as grpc and tensorflow.error)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# http_server.cc ToHTTPStatusCode().
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """Returns the HTTP status TF Serving's REST API uses for `code`."""
    return _HTTP_STATUS.get(code, 500)


class ServingError(Exception):
    """A request failure with a canonical status code.

    The server raises it to answer a request; the client raises it when a
    call fails (`context` then names the call, e.g. `Predict(convnet)`).

    Attributes:
        code: The canonical status code.
        message: The status message, as the server sends it.
        context: What failed, shown before the code ('' on the server).
    """

    def __init__(self, code: Code, message: str, context: str = ''):
        super().__init__(message)
        self.code = Code(code)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        prefix = f'{self.context}: ' if self.context else ''
        return f'{prefix}{self.code.name}: {self.message}'


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """The state of one version of a model, as GetModelStatus reports it.

    Attributes:
        version: The model version number.
        state: START, LOADING, AVAILABLE, UNLOADING or END.
        error: Why its last load failed, if it did.
    """

    version: int
    state: str
    error: Optional[ServingError] = None

    @property
    def error_code(self) -> int:
        """The canonical code number of the last load (0: OK)."""
        return int(self.error.code) if self.error else 0

    @property
    def error_message(self) -> str:
        """The server's message for that error ('' if none)."""
        return self.error.message if self.error else ''

    def __str__(self) -> str:
        text = f'version {self.version}: {self.state}'
        if self.error:
            text += f' (error {self.error_code}: {self.error_message})'
        return text


def invalid_argument(message: str) -> ServingError:
    """An INVALID_ARGUMENT error saying `message`."""
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """A NOT_FOUND error saying `message`."""
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    """A FAILED_PRECONDITION error saying `message`."""
    return ServingError(Code.FAILED_PRECONDITION, message)


_GRAPH_ERROR = re.compile(
    r'^Graph execution error:\s*\n\s*\nDetected at node .*?\n'
    r'(?:<stack traces unavailable>\n|(?:  .*\n)*)', re.S)
_OP_SUFFIX = re.compile(r'\s*\[Op:[^\]]*\]\s*$')


def clean_tf_message(message: str) -> str:
    """Drops the Python-only preamble TF adds to errors from a function call.

    Eager function calls report "Graph execution error: Detected at node ..."
    followed by the kernel's message; TF Serving's session run reports only
    the kernel's message, so keep just that.
    """
    message = _GRAPH_ERROR.sub('', message, count=1)
    return _OP_SUFFIX.sub('', message)


def from_exception(exc: BaseException) -> ServingError:
    """Converts any exception raised while serving into a ServingError."""
    if isinstance(exc, ServingError):
        return exc
    error_code: Optional[int] = getattr(exc, 'error_code', None)
    message = getattr(exc, 'message', None) or str(exc)
    if isinstance(error_code, int) and 0 < error_code <= 16:
        return ServingError(Code(error_code), clean_tf_message(message))
    if isinstance(exc, (TypeError, ValueError)):
        return ServingError(Code.INVALID_ARGUMENT, message)
    return ServingError(Code.INTERNAL, f'{type(exc).__name__}: {message}')
