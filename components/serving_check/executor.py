"""The ServingCheck's executor.

Serves the candidate model in a local model server subprocess, queries it
(answer_checks.py) and writes the blessing.
"""

import contextlib
import os
import signal
import tempfile
import time
from typing import Any, Dict, Iterator, List, Sequence

from absl import logging
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.serving_check.answer_checks import check_served_model
from components.serving_check.answer_checks import in_process_scores
from components.serving_check.errors import ModelCheckFailed
from components.serving_check.errors import ServerExited
from components.serving_check.errors import WrongAnswer
from components.serving_check.request_builder import read_serialized_examples
from serving.process import ServerProcess
from serving.process import free_port
from serving.process import server_command

MODEL_KEY = standard_component_specs.MODEL_KEY
EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
BLESSING_KEY = standard_component_specs.BLESSING_KEY
SPLIT_KEY = 'split'
NUM_EXAMPLES_KEY = 'num_examples'
TIMEOUT_SECONDS_KEY = 'timeout_seconds'
MODEL_NAME_KEY = 'model_name'

DEFAULT_SPLIT = 'test'
DEFAULT_NUM_EXAMPLES = 16
DEFAULT_TIMEOUT_SECONDS = 120
DEFAULT_MODEL_NAME = 'model'

# The InfraValidator's names, which the Pusher reads.
BLESSED_KEY = 'blessed'
HAS_MODEL_KEY = 'has_model'
BLESSED_FILENAME = 'INFRA_BLESSED'
NOT_BLESSED_FILENAME = 'INFRA_NOT_BLESSED'

_PORT_RETRIES = 3


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into an exception so that the server is still stopped.

    Only possible on the main thread; elsewhere SIGTERM keeps its default.
    """

    def _handler(signum, frame):
        del frame
        raise SystemExit(f'ServingCheck got signal {signum}')

    try:
        previous = signal.signal(signal.SIGTERM, _handler)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _to_prediction_log(request: Any) -> Any:
    if isinstance(request, classification_pb2.ClassificationRequest):
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request))
    if isinstance(request, predict_pb2.PredictRequest):
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
    raise TypeError(f'no PredictionLog for {type(request).__name__}')


def _answers_in_process(model_path: str,
                        serialized: Sequence[bytes]) -> List[Dict[str, float]]:
    """`in_process_scores`, its failure as a ModelCheckFailed."""
    try:
        return in_process_scores(model_path, serialized)
    except Exception as e:  # pylint: disable=broad-except
        raise ModelCheckFailed(
            f'the SavedModel does not answer in process: {e}') from None


def mark_blessed(blessing: types.Artifact, model_path: str,
                 requests: Sequence[Any]) -> None:
    """Blesses: copies the model into the blessing with its warmup requests.

    Args:
        blessing: The InfraBlessing artifact.
        model_path: The candidate SavedModel directory.
        requests: The requests that passed, written as PredictionLogs.
    """
    stamped = path_utils.stamped_model_path(blessing.uri)
    io_utils.copy_dir(src=model_path, dst=stamped)
    io_utils.write_tfrecord_file(path_utils.warmup_file_path(stamped),
                                 *[_to_prediction_log(r) for r in requests])
    io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILENAME), '')
    blessing.set_int_custom_property(HAS_MODEL_KEY, 1)
    blessing.set_int_custom_property(BLESSED_KEY, 1)
    logging.info(
        'ServingCheck: model blessed; warmed copy with %d warmup '
        'requests at %s.', len(requests), stamped)


def mark_not_blessed(blessing: types.Artifact, reason: str) -> None:
    """Refuses the model, recording why in `INFRA_NOT_BLESSED`."""
    logging.error('ServingCheck: model NOT blessed: %s', reason)
    io_utils.write_string_file(os.path.join(blessing.uri, NOT_BLESSED_FILENAME),
                               reason + '\n')
    blessing.set_int_custom_property(HAS_MODEL_KEY, 0)
    blessing.set_int_custom_property(BLESSED_KEY, 0)


# --- Executor and component --------------------------------------------------


class Executor(base_executor.BaseExecutor):
    """Serves the candidate model locally, queries it, blesses it or not."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        """Runs the check.

        Args:
            input_dict: `model`: the Trainer's Model; `examples`: raw Examples.
            output_dict: `blessing`: the InfraBlessing to mark.
            exec_properties: `split`, `num_examples`, `timeout_seconds`,
                `model_name`.

        Raises:
            RuntimeError: No model server can be started.
            ValueError: The examples have no such split, or it is empty.
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        split = exec_properties.get(SPLIT_KEY) or DEFAULT_SPLIT
        num_examples = int(
            exec_properties.get(NUM_EXAMPLES_KEY) or DEFAULT_NUM_EXAMPLES)
        timeout = float(
            exec_properties.get(TIMEOUT_SECONDS_KEY) or DEFAULT_TIMEOUT_SECONDS)
        model_name = exec_properties.get(MODEL_NAME_KEY) or DEFAULT_MODEL_NAME

        serialized = read_serialized_examples(examples, split, num_examples)
        model_path = path_utils.serving_model_path(
            model.uri, path_utils.is_old_model_artifact(model))
        try:
            requests = self._check(model_path, model_name, serialized, timeout)
        except ModelCheckFailed as e:
            mark_not_blessed(blessing, str(e))
            return
        mark_blessed(blessing, model_path, requests)

    def _check(self, model_path: str, model_name: str,
               serialized: Sequence[bytes], timeout: float) -> List[Any]:
        if not fileio.exists(os.path.join(model_path, 'saved_model.pb')):
            raise ModelCheckFailed(f'no SavedModel (saved_model.pb) in '
                                   f'{model_path}')
        deadline = time.monotonic() + timeout
        in_process = None
        # A local folder even when the pipeline root is remote: the server
        # subprocess reads it.
        with tempfile.TemporaryDirectory(prefix='serving_check_') as tmp, \
                _sigterm_raises():
            base_path = os.path.join(tmp, model_name)
            io_utils.copy_dir(model_path, os.path.join(base_path, '1'))
            log_path = os.path.join(tmp, 'server.log')
            for attempt in range(1, _PORT_RETRIES + 1):
                port = free_port()
                server = ServerProcess(
                    server_command(port, model_name, base_path), log_path)
                logging.info('Started model server %d: %s', server.pid,
                             ' '.join(server.command))
                try:
                    if in_process is None:
                        # While the server process starts (it imports
                        # TensorFlow and loads the model: seconds), the
                        # SavedModel's own answers, which the server's must
                        # equal.
                        in_process = _answers_in_process(model_path, serialized)
                    return check_served_model(f'127.0.0.1:{port}', model_name,
                                              serialized, deadline, server,
                                              in_process)
                except ServerExited as e:
                    if e.port_was_taken() and attempt < _PORT_RETRIES:
                        logging.warning('Port %d was taken; retrying.', port)
                        continue
                    raise
                except WrongAnswer:
                    raise
                except ModelCheckFailed as e:
                    tail = server.log_tail(1500)
                    if not tail or in_process is None:
                        # No server log, or the model failed in process,
                        # which the log says nothing of.
                        raise
                    raise ModelCheckFailed(
                        f'{e}\n--- model server log (end) ---\n{tail}'
                    ) from None
                finally:
                    logging.info('Stopping model server %d.', server.pid)
                    server.stop()
        raise AssertionError('unreachable')
