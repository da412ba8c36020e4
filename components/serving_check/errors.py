"""Why a model is not blessed: the ServingCheck's failures.

As TFX's InfraValidator has `error_types`.
"""

_PORT_IN_USE_MARKERS = ('address already in use', 'failed to bind',
                        'could not bind', 'errno 98')


class ModelCheckFailed(Exception):
    """The model cannot be served as it is: the reason for not blessing it."""


class WrongAnswer(ModelCheckFailed):
    """The model served, but an answer broke the serving contract."""


class ServerExited(ModelCheckFailed):
    """The model server stopped by itself (e.g. the model failed to load)."""

    def __init__(self, code: int, log_tail: str):
        self.log_tail = log_tail
        super().__init__(
            f'the model server exited with status {code} before it served the '
            f'model:\n{log_tail}')

    def port_was_taken(self) -> bool:
        """True if the log says the port was in use (a race, not the model)."""
        return any(m in self.log_tail.lower() for m in _PORT_IN_USE_MARKERS)
