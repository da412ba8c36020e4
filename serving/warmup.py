"""Warmup replay: `assets.extra/tf_serving_warmup_requests` before AVAILABLE.

As saved_model_warmup_util.cc does: the file is a TFRecord of PredictionLog
protos; each predict/classify/regress/multi_inference request in it is run
`num_request_iterations` times on the version being loaded (through the
batcher when batching is on). A failing record fails the load; more than
1000 records is an error; session_run logs are not supported.
"""

import logging
import os
import time

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import errors

WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
MAX_RECORDS = 1000


def run_warmup(inference, servable, iterations: int = 1, metrics=None) -> int:
    """Replays the version's warmup requests; returns how many were read.

    Raises:
      errors.ServingError: a record could not be parsed or run.
    """
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        logging.info('No warmup data file found at %s', path)
        return 0
    logging.info(
        'Starting to read warmup data for model at %s with '
        'model-warmup-options num_request_iterations: %d', path, iterations)
    start = time.perf_counter()
    records = 0
    status = 'OK'
    try:
        for record in _records(path):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception:  # pylint: disable=broad-except
                raise errors.invalid_argument(
                    f'Failed to parse warmup record: {record!r} from '
                    f'{path}') from None
            for _ in range(max(iterations, 1)):
                _replay(inference, servable, log)
            records += 1
            if records > MAX_RECORDS:
                raise errors.invalid_argument(
                    f'Number of warmup records exceeds the maximum '
                    f'({MAX_RECORDS}) at {path}')
    except errors.ServingError as e:
        status = str(e)
        raise
    finally:
        micros = int((time.perf_counter() - start) * 1e6)
        if metrics:
            metrics.warmup(servable.path, status, micros,
                           records * max(iterations, 1))
    logging.info(
        'Finished reading warmup data for model at %s. Number of '
        'warmup records read: %d. Elapsed time (microseconds): %d.', path,
        records, micros)
    return records


def _records(path: str):
    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.DataLossError as e:
        raise errors.ServingError(
            errors.Code.DATA_LOSS,
            f'{e.message}. Please verify your warmup data is in TFRecord '
            f'format.') from None


def _replay(inference, servable, log: prediction_log_pb2.PredictionLog) -> None:
    kind = log.WhichOneof('log_type')
    if kind == 'predict_log':
        inference.predict_with(servable, log.predict_log.request)
    elif kind == 'classify_log':
        inference.classify_with(servable, log.classify_log.request)
    elif kind == 'regress_log':
        inference.regress_with(servable, log.regress_log.request)
    elif kind == 'multi_inference_log':
        inference.multi_inference_with(servable,
                                       log.multi_inference_log.request)
    else:
        raise errors.ServingError(errors.Code.UNIMPLEMENTED,
                                  f'Unsupported log_type for warmup: {kind}')
