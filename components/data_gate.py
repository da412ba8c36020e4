"""A gate between data validation and Transform: anomalies and drift.

TFX's ExampleValidator only records anomalies; this component reads them and
fails the run, before Transform and training, naming every anomalous feature
and why. It also compares the training split's statistics with those of the
last span that passed the gate, with TFDV's drift comparator: a
Jensen-Shannon divergence above `drift_threshold` in a numeric feature's
distribution (labels, lengths, sequence values) is reported by feature in the
`drift` output, and stops the run when `stop_on_drift` is set. Image bytes are
not compared: every image is its own category.

A span that passes leaves its training split's statistics in the
`checked_statistics` output, the next run's `baseline_statistics`. A span
the gate stops publishes nothing, so it never becomes a baseline: otherwise
a second drifted span would be compared with the first and let through.
"""

import os
from typing import List, Tuple

import tensorflow_data_validation as tfdv
from tensorflow_data_validation.utils import anomalies_util
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from common import names
from components.errors import DataValidationError

_DRIFT_SPLIT = 'train'
Problem = Tuple[str, str, str]  # (split, feature, description)


def find_anomalies(anomalies_artifact) -> List[Problem]:
    """(split, feature, description) for every anomaly in the artifact."""
    problems = []
    for split in artifact_utils.decode_split_names(
            anomalies_artifact.split_names):
        path = os.path.join(
            artifact_utils.get_split_uri([anomalies_artifact], split),
            names.ANOMALIES_FILE)
        problems.extend(
            _problems(split, anomalies_util.load_anomalies_binary(path)))
    return problems


def _problems(split: str, anomalies: anomalies_pb2.Anomalies) -> List[Problem]:
    problems = [(split, feature, info.description or info.short_description)
                for feature, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField('dataset_anomaly_info'):
        problems.append(
            (split, '<dataset>', anomalies.dataset_anomaly_info.description))
    return problems


def _load_statistics(artifact, split: str):
    # By path: a resolved artifact may come without its split_names property.
    return tfdv.load_stats_binary(
        os.path.join(artifact.uri, f'Split-{split}', 'FeatureStats.pb'))


def drift_anomalies(schema: schema_pb2.Schema, statistics, baseline,
                    threshold: float) -> anomalies_pb2.Anomalies:
    """TFDV's drift check of `statistics` against `baseline` statistics."""
    schema = schema_pb2.Schema.FromString(schema.SerializeToString())
    for feature in schema.feature:
        if feature.type == schema_pb2.BYTES:
            continue
        feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
    anomalies = tfdv.validate_statistics(statistics=statistics,
                                         schema=schema,
                                         previous_statistics=baseline)
    # Only the drift findings: schema anomalies are ExampleValidator's job.
    for name in list(anomalies.anomaly_info):
        info = anomalies.anomaly_info[name]
        if not any(r.type in (anomalies_pb2.AnomalyInfo.
                              COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
                              anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH)
                   for r in info.reason):
            del anomalies.anomaly_info[name]
    return anomalies


@component
def DataGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
             statistics: InputArtifact[standard_artifacts.ExampleStatistics],
             schema: InputArtifact[standard_artifacts.Schema],
             drift: OutputArtifact[standard_artifacts.ExampleAnomalies],
             checked_statistics: OutputArtifact[
                 standard_artifacts.ExampleStatistics],
             baseline_statistics: InputArtifact[
                 standard_artifacts.ExampleStatistics] = None,
             drift_threshold: Parameter[float] = 0.3,
             stop_on_drift: Parameter[bool] = False):
    """Fails on anomalies; reports (and optionally fails on) drift."""
    problems = find_anomalies(anomalies)
    if problems:
        raise DataValidationError(problems)
    drift.split_names = artifact_utils.encode_split_names([_DRIFT_SPLIT])
    report = anomalies_pb2.Anomalies()
    if baseline_statistics is not None:
        report = drift_anomalies(
            tfdv.load_schema_text(os.path.join(schema.uri, 'schema.pbtxt')),
            _load_statistics(statistics, _DRIFT_SPLIT),
            _load_statistics(baseline_statistics, _DRIFT_SPLIT),
            drift_threshold)
    io_utils.write_bytes_file(
        os.path.join(artifact_utils.get_split_uri([drift], _DRIFT_SPLIT),
                     names.ANOMALIES_FILE), report.SerializeToString())
    drifted = _problems(_DRIFT_SPLIT, report)
    drift.set_int_custom_property('drifted_features', len(drifted))
    if drifted and stop_on_drift:
        raise DataValidationError(drifted)
    checked_statistics.split_names = artifact_utils.encode_split_names(
        [_DRIFT_SPLIT])
    io_utils.copy_dir(
        os.path.join(statistics.uri, f'Split-{_DRIFT_SPLIT}'),
        artifact_utils.get_split_uri([checked_statistics], _DRIFT_SPLIT))
