"""ServingCheck: TFX's InfraValidator job, without Docker.

It loads the Trainer's candidate SavedModel into a model server started as a
local subprocess (the real `tensorflow_model_server` when it is on PATH, else
this project's `python -m serving serve`, which takes the same flags), sends
real requests built from the raw examples (a Classify on `serving_default`
and a Predict on each other signature it knows how to feed), checks the
answers and always stops the server.

Its `blessing` output follows the InfraValidator contract, so the standard
Pusher honours it:

- custom property `blessed` = 1 and an empty `INFRA_BLESSED` file, or
  `blessed` = 0 and an `INFRA_NOT_BLESSED` file holding the reason;
- when blessed, a copy of the model under `<blessing>/stamped_model` with
  the requests it sent as TF Serving warmup records
  (`assets.extra/tf_serving_warmup_requests`), and `has_model` = 1.

`Pusher(model=...)` pushes the Trainer's model and only checks `blessed`;
`Pusher(model_blessing=..., infra_blessing=...)` without `model` pushes the
warmed copy.

A model that cannot be served (no SavedModel, fails to load, times out,
wrong answers) is not blessed; the component raises only for its own faults:
no server to start, or a missing split or no examples in it.
"""

import contextlib
import os
import signal
import tempfile
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils
from tfx.utils import path_utils

from models import features
from models import signatures
from serving import client as client_lib
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

PROBABILITY_TOLERANCE = 1e-3
AGREEMENT_TOLERANCE = 1e-4
_MIN_RPC_SECONDS = 10.0
_PORT_RETRIES = 3
_PORT_IN_USE_MARKERS = ('address already in use', 'failed to bind',
                        'could not bind', 'errno 98')


class ModelCheckFailed(Exception):
    """The model cannot be served as it is: the reason for not blessing it."""


class WrongAnswer(ModelCheckFailed):
    """The model served, but an answer broke the serving contract."""


class ServingCheckSpec(types.ComponentSpec):
    """ServingCheck component spec."""

    PARAMETERS = {
        SPLIT_KEY: ExecutionParameter(type=str),
        NUM_EXAMPLES_KEY: ExecutionParameter(type=int),
        TIMEOUT_SECONDS_KEY: ExecutionParameter(type=int),
        MODEL_NAME_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
    }


# --- Reading the examples ----------------------------------------------------

def read_serialized_examples(examples: types.Artifact, split: str,
                             limit: int) -> List[bytes]:
    """Reads up to `limit` serialized tf.Examples of one split of an artifact.

    Args:
        examples: An Examples artifact written by ExampleGen (gzipped
            TFRecord files under `Split-<name>/`).
        split: The split name.
        limit: The most records to read.

    Returns:
        The serialized records, in file order.

    Raises:
        ValueError: The artifact has no such split or the split is empty.
    """
    split_uri = artifact_utils.get_split_uri([examples], split)
    files = sorted(fileio.glob(os.path.join(split_uri, '*.gz')))
    if not files:
        raise ValueError(f'no *.gz TFRecord files in split {split!r} '
                         f'({split_uri})')
    dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
    records = [r.numpy() for r in dataset.take(limit)]
    if not records:
        raise ValueError(f'split {split!r} ({split_uri}) has no examples')
    return records


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


# --- Checking the answers ----------------------------------------------------

def check_probability_rows(what: str, classes: Sequence[Sequence[str]],
                           scores: Sequence[Sequence[float]],
                           batch_size: int) -> None:
    """Checks one answer: a row per input, probabilities, named classes.

    Args:
        what: Names the request in the failure message.
        classes: Class names per row.
        scores: Probabilities per row, aligned with `classes`.
        batch_size: The number of inputs sent.

    Raises:
        WrongAnswer: The batch size is wrong, a row is empty, a score is
            not finite or a row does not sum to 1, or a class name is empty
            or repeated within a row.
    """
    if len(scores) != batch_size or len(classes) != batch_size:
        raise WrongAnswer(
            f'{what}: {len(scores)} rows of scores and {len(classes)} of '
            f'classes for {batch_size} inputs')
    for i, (names, row) in enumerate(zip(classes, scores)):
        values = np.asarray(row, dtype=np.float64)
        if values.size == 0 or len(names) != values.size:
            raise WrongAnswer(
                f'{what}: row {i} has {values.size} scores and {len(names)} '
                'classes')
        if not np.all(np.isfinite(values)):
            raise WrongAnswer(
                f'{what}: row {i} has non-finite scores {values.tolist()}')
        total = float(values.sum())
        if (abs(total - 1.0) > PROBABILITY_TOLERANCE
                or values.min() < -PROBABILITY_TOLERANCE):
            raise WrongAnswer(
                f'{what}: row {i} is not a probability distribution (sum '
                f'{total:.6f}, min {values.min():.6f})')
        if any(not name for name in names):
            raise WrongAnswer(f'{what}: row {i} has an empty class name')
        if len(set(names)) != len(names):
            raise WrongAnswer(
                f'{what}: row {i} repeats class names {list(names)}')


def check_agreement(what: str, expected: Sequence[Mapping[str, float]],
                    actual: Sequence[Mapping[str, float]],
                    reference: str = signatures.DEFAULT_SIGNATURE) -> None:
    """Checks that two sources give each input the same class scores.

    Args:
        what: Names the compared signature in the failure message.
        expected: {class: score} per input from `reference`.
        actual: {class: score} per input from the other signature.
        reference: Names where `expected` comes from.

    Raises:
        WrongAnswer: The class names or scores differ (beyond 1e-4).
    """
    if len(expected) != len(actual):
        raise WrongAnswer(f'{what}: {len(actual)} answers, {reference} '
                          f'gives {len(expected)}')
    for i, (want, got) in enumerate(zip(expected, actual)):
        if set(want) != set(got):
            raise WrongAnswer(
                f'{what}: row {i} has classes {sorted(got)}, '
                f'{reference} has {sorted(want)}')
        worst = max(abs(want[c] - got[c]) for c in want)
        if worst > AGREEMENT_TOLERANCE:
            raise WrongAnswer(
                f'{what}: row {i} scores differ from '
                f'{reference} by up to {worst:.3g}')


IN_PROCESS = f'the SavedModel\'s own {signatures.DEFAULT_SIGNATURE}'


def in_process_scores(model_path: str, serialized_examples: Sequence[bytes]
                      ) -> List[Dict[str, float]]:
    """{class: score} per example from the SavedModel called in this process:
    what the served model must answer."""
    # As TF Serving loads it: the MetaGraph tagged `serve`.
    model = tf.saved_model.load(model_path, tags=[tf.saved_model.SERVING])
    outputs = model.signatures[signatures.DEFAULT_SIGNATURE](
        **{signatures.EXAMPLES_INPUT: tf.constant(list(serialized_examples))})
    classes = outputs[signatures.CLASSES_OUTPUT].numpy()
    scores = outputs[signatures.SCORES_OUTPUT].numpy()
    return [{c.decode(): float(v) for c, v in zip(row_classes, row_scores)}
            for row_classes, row_scores in zip(classes, scores)]


def _feature(example: Any, key: str, kind: str, signature: str) -> Any:
    feature = example.features.feature
    if key not in feature or not getattr(feature[key], kind).value:
        raise WrongAnswer(
            f'the model declares {signature} but the examples have no '
            f'{key!r} feature to feed it')
    return getattr(feature[key], kind).value


def build_signature_inputs(signature: str, signature_def: Any,
                           serialized_examples: Sequence[bytes]
                           ) -> Optional[Dict[str, np.ndarray]]:
    """The inputs for an extra signature, made from the raw examples.

    Args:
        signature: The signature name.
        signature_def: Its SignatureDef (for the input dtypes).
        serialized_examples: The serialized tf.Examples.

    Returns:
        {input name: array}, or None for a signature we cannot feed.

    Raises:
        WrongAnswer: The examples lack the features the signature needs.
    """
    input_names = set(signature_def.inputs)
    examples = [example_pb2.Example.FromString(s) for s in serialized_examples]
    if (signature == signatures.IMAGE_SIGNATURE
            and input_names == {signatures.IMAGE_INPUT}):
        images = [_feature(e, features.IMAGE_KEY, 'bytes_list', signature)[0]
                  for e in examples]
        return {signatures.IMAGE_INPUT: np.array(images, dtype=object)}
    if (signature == signatures.SEQUENCE_SIGNATURE and input_names
            == {signatures.SEQUENCE_INPUT, signatures.LENGTH_INPUT}):
        sequences = []
        for i, e in enumerate(examples):
            values = np.array(
                _feature(e, features.SEQUENCE_KEY, 'float_list', signature),
                dtype=np.float32)
            length = int(_feature(e, features.LENGTH_KEY, 'int64_list',
                                  signature)[0])
            if length <= 0 or values.size % length:
                raise WrongAnswer(
                    f'example {i}: {values.size} sequence values do not '
                    f'reshape to length {length}')
            sequences.append(values.reshape(length, -1))
        dtypes = {name: tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
                  for name, info in signature_def.inputs.items()}
        padded, lengths = client_lib.pad_sequences(
            sequences, dtype=dtypes[signatures.SEQUENCE_INPUT])
        return {signatures.SEQUENCE_INPUT: padded,
                signatures.LENGTH_INPUT: lengths.astype(
                    dtypes[signatures.LENGTH_INPUT])}
    return None


def check_served_model(address: str, model_name: str,
                       serialized_examples: Sequence[bytes],
                       deadline: float,
                       server: Optional[ServerProcess] = None,
                       in_process: Optional[Sequence[Mapping[str, float]]]
                       = None) -> List[Any]:
    """Waits for the model, queries every signature it can feed, checks them.

    Args:
        address: The server's gRPC HOST:PORT.
        model_name: The served model's name.
        serialized_examples: Serialized raw tf.Examples to send.
        deadline: time.monotonic() by which the model must be AVAILABLE.
        server: The server process, to notice if it dies while loading.
        in_process: {class: score} per example from the model called in
            process (`in_process_scores`), which the served answers must
            equal.

    Returns:
        The requests sent (a ClassificationRequest, then PredictRequests),
        for the warmup file.

    Raises:
        ModelCheckFailed: The model did not load in time, or an answer is
            wrong.
    """
    with client_lib.ModelServerClient(
            address, timeout=_MIN_RPC_SECONDS) as client:
        _wait_for_model(client, model_name, deadline, server)
        client.timeout = max(deadline - time.monotonic(), _MIN_RPC_SECONDS)
        try:
            return _query_and_check(client, model_name, serialized_examples,
                                    in_process)
        except client_lib.ServingError as e:
            raise ModelCheckFailed(str(e)) from None


def _wait_for_model(client: Any, model_name: str, deadline: float,
                    server: Optional[ServerProcess]) -> None:
    while True:
        if server is not None and server.exit_code() is not None:
            raise ServerExited(server.exit_code(), server.log_tail())
        remaining = deadline - time.monotonic()
        try:
            # Short waits so that a dead server is noticed quickly.
            client.wait_until_available(model_name,
                                        timeout=max(0.0, min(remaining, 2.0)))
            return
        except client_lib.ModelNotAvailableError as e:
            if e.statuses and all(s.state == 'END' for s in e.statuses):
                raise ModelCheckFailed(str(e)) from None
            if remaining <= 2.0:
                raise ModelCheckFailed(
                    f'{e} (the time limit is the timeout_seconds parameter)'
                ) from None


def _query_and_check(client: Any, model_name: str,
                     serialized_examples: Sequence[bytes],
                     in_process: Optional[Sequence[Mapping[str, float]]]
                     ) -> List[Any]:
    batch = len(serialized_examples)
    signature_defs = client.model_metadata(model_name)
    default = signature_defs.get(signatures.DEFAULT_SIGNATURE)
    if default is None or set(default.inputs) != {signatures.EXAMPLES_INPUT}:
        raise WrongAnswer(
            f'the model has no {signatures.DEFAULT_SIGNATURE} signature taking '
            f'{signatures.EXAMPLES_INPUT!r} (signatures: '
            f'{", ".join(sorted(signature_defs)) or "none"})')

    classify = client_lib.build_classification_request(
        model_name, serialized_examples, signatures.DEFAULT_SIGNATURE)
    # All classes, unsorted by `top_k`, to check whole distributions.
    predictions = client.send_classify(classify, top_k=None)
    what = f'Classify({signatures.DEFAULT_SIGNATURE})'
    check_probability_rows(what, [p.classes for p in predictions],
                           [p.scores for p in predictions], batch)
    expected = [dict(p.pairs()) for p in predictions]
    if in_process is not None:
        check_agreement(what, in_process, expected, IN_PROCESS)
    requests: List[Any] = [classify]

    for name in sorted(signature_defs):
        if name == signatures.DEFAULT_SIGNATURE:
            continue
        inputs = build_signature_inputs(name, signature_defs[name],
                                        serialized_examples)
        if inputs is None:
            logging.info('ServingCheck: not querying signature %r (no way to '
                         'feed it).', name)
            continue
        request = client_lib.build_predict_request(model_name, inputs, name)
        outputs = client.send_predict(request)
        what = f'Predict({name})'
        rows = client_lib.predictions_from_outputs(outputs, what=what)
        check_probability_rows(what, [p.classes for p in rows],
                               [p.scores for p in rows], batch)
        check_agreement(what, expected, [dict(p.pairs()) for p in rows])
        requests.append(request)
        logging.info('ServingCheck: %s agrees with %s on %d examples.', name,
                     signatures.DEFAULT_SIGNATURE, batch)
    return requests


# --- The blessing ------------------------------------------------------------

def _to_prediction_log(request: Any) -> Any:
    if isinstance(request, classification_pb2.ClassificationRequest):
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request))
    if isinstance(request, predict_pb2.PredictRequest):
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
    raise TypeError(f'no PredictionLog for {type(request).__name__}')


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
    io_utils.write_tfrecord_file(
        path_utils.warmup_file_path(stamped),
        *[_to_prediction_log(r) for r in requests])
    io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILENAME), '')
    blessing.set_int_custom_property(HAS_MODEL_KEY, 1)
    blessing.set_int_custom_property(BLESSED_KEY, 1)
    logging.info('ServingCheck: model blessed; warmed copy with %d warmup '
                 'requests at %s.', len(requests), stamped)


def mark_not_blessed(blessing: types.Artifact, reason: str) -> None:
    """Refuses the model, recording why in `INFRA_NOT_BLESSED`."""
    logging.error('ServingCheck: model NOT blessed: %s', reason)
    io_utils.write_string_file(
        os.path.join(blessing.uri, NOT_BLESSED_FILENAME), reason + '\n')
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
        num_examples = int(exec_properties.get(NUM_EXAMPLES_KEY)
                           or DEFAULT_NUM_EXAMPLES)
        timeout = float(exec_properties.get(TIMEOUT_SECONDS_KEY)
                        or DEFAULT_TIMEOUT_SECONDS)
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
        try:
            in_process = in_process_scores(model_path, serialized)
        except Exception as e:  # pylint: disable=broad-except
            raise ModelCheckFailed(
                f'the SavedModel does not answer in process: {e}') from None
        deadline = time.monotonic() + timeout
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
                    return check_served_model(
                        f'127.0.0.1:{port}', model_name, serialized,
                        deadline, server, in_process)
                except ServerExited as e:
                    if e.port_was_taken() and attempt < _PORT_RETRIES:
                        logging.warning('Port %d was taken; retrying.', port)
                        continue
                    raise
                except WrongAnswer:
                    raise
                except ModelCheckFailed as e:
                    tail = server.log_tail(1500)
                    if not tail:
                        raise
                    raise ModelCheckFailed(
                        f'{e}\n--- model server log (end) ---\n{tail}'
                    ) from None
                finally:
                    logging.info('Stopping model server %d.', server.pid)
                    server.stop()
        raise AssertionError('unreachable')


class ServingCheck(base_component.BaseComponent):
    """Checks that the candidate model loads and answers in a model server.

    Outputs `blessing` (InfraBlessing), as TFX's InfraValidator does, for
    `tfx.components.Pusher(infra_blessing=...)`.
    """

    SPEC_CLASS = ServingCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 model_name: str = DEFAULT_MODEL_NAME,
                 split: str = DEFAULT_SPLIT,
                 num_examples: int = DEFAULT_NUM_EXAMPLES,
                 timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS):
        """Constructs a ServingCheck.

        Args:
            model: The Trainer's `model` channel.
            examples: The raw ExampleGen `examples` channel.
            model_name: The name to serve the model under (use the name it is
                pushed as, e.g. 'convnet').
            split: The split whose examples become requests.
            num_examples: How many examples to send.
            timeout_seconds: The time limit for the model to load and answer.
        """
        if num_examples < 1:
            raise ValueError(
                f'num_examples must be positive, got {num_examples}')
        if timeout_seconds < 1:
            raise ValueError(
                f'timeout_seconds must be positive, got {timeout_seconds}')
        spec = ServingCheckSpec(
            model=model, examples=examples,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            split=split, num_examples=num_examples,
            timeout_seconds=timeout_seconds, model_name=model_name)
        super().__init__(spec=spec)
