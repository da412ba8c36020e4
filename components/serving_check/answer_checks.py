"""Querying the served model and checking its answers.

Every answer must be a probability distribution per input over named classes,
the Classify answer must equal the SavedModel's own in process, and every
other signature must agree with the Classify answer.
"""

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from common import signatures
from components.serving_check.errors import ModelCheckFailed
from components.serving_check.errors import ServerExited
from components.serving_check.errors import WrongAnswer
from components.serving_check.request_builder import build_signature_inputs
from serving import client as client_lib
from serving.process import ServerProcess

PROBABILITY_TOLERANCE = 1e-3
AGREEMENT_TOLERANCE = 1e-4
_MIN_RPC_SECONDS = 10.0


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
        if (abs(total - 1.0) > PROBABILITY_TOLERANCE or
                values.min() < -PROBABILITY_TOLERANCE):
            raise WrongAnswer(
                f'{what}: row {i} is not a probability distribution (sum '
                f'{total:.6f}, min {values.min():.6f})')
        if any(not name for name in names):
            raise WrongAnswer(f'{what}: row {i} has an empty class name')
        if len(set(names)) != len(names):
            raise WrongAnswer(
                f'{what}: row {i} repeats class names {list(names)}')


def check_agreement(what: str,
                    expected: Sequence[Mapping[str, float]],
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
            raise WrongAnswer(f'{what}: row {i} has classes {sorted(got)}, '
                              f'{reference} has {sorted(want)}')
        worst = max(abs(want[c] - got[c]) for c in want)
        if worst > AGREEMENT_TOLERANCE:
            raise WrongAnswer(f'{what}: row {i} scores differ from '
                              f'{reference} by up to {worst:.3g}')


IN_PROCESS = f'the SavedModel\'s own {signatures.DEFAULT_SIGNATURE}'


def in_process_scores(
        model_path: str,
        serialized_examples: Sequence[bytes]) -> List[Dict[str, float]]:
    """The SavedModel's own scores, called in this process.

    {class: score} per example from the SavedModel called in this process: what
    the served model must answer.
    """
    # As TF Serving loads it: the MetaGraph tagged `serve`.
    model = tf.saved_model.load(model_path, tags=[tf.saved_model.SERVING])
    outputs = model.signatures[signatures.DEFAULT_SIGNATURE](**{
        signatures.EXAMPLES_INPUT: tf.constant(list(serialized_examples))
    })
    classes = outputs[signatures.CLASSES_OUTPUT].numpy()
    scores = outputs[signatures.SCORES_OUTPUT].numpy()
    return [{
        c.decode(): float(v) for c, v in zip(row_classes, row_scores)
    } for row_classes, row_scores in zip(classes, scores)]


def check_served_model(
        address: str,
        model_name: str,
        serialized_examples: Sequence[bytes],
        deadline: float,
        server: Optional[ServerProcess] = None,
        in_process: Optional[Sequence[Mapping[str,
                                              float]]] = None) -> List[Any]:
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
    with client_lib.ModelServerClient(address,
                                      timeout=_MIN_RPC_SECONDS) as client:
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


def _query_and_check(
        client: Any, model_name: str, serialized_examples: Sequence[bytes],
        in_process: Optional[Sequence[Mapping[str, float]]]) -> List[Any]:
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
            logging.info(
                'ServingCheck: not querying signature %r (no way to '
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
