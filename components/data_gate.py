"""A gate that stops the pipeline when ExampleValidator found anomalies.

TFX's ExampleValidator only records anomalies; this component reads them and
fails the run, before Transform and training, with every anomalous feature
and why. Transform is made to run after it (pipeline/pipeline.py).
"""

import os

from tensorflow_data_validation.utils import anomalies_util
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.errors import DataValidationError

_ANOMALIES_FILE = 'SchemaDiff.pb'


def find_anomalies(anomalies_artifact: standard_artifacts.ExampleAnomalies):
    """(split, feature, description) for every anomaly in the artifact."""
    problems = []
    for split in artifact_utils.decode_split_names(
            anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri(
            [anomalies_artifact], split), _ANOMALIES_FILE)
        anomalies = anomalies_util.load_anomalies_binary(path)
        for feature, info in sorted(anomalies.anomaly_info.items()):
            description = info.description or info.short_description
            problems.append((split, feature, description))
        if anomalies.HasField('dataset_anomaly_info'):
            info = anomalies.dataset_anomaly_info
            problems.append((split, '<dataset>', info.description))
    return problems


@component
def DataGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]):
    """Raises DataValidationError when the validated data has anomalies."""
    problems = find_anomalies(anomalies)
    if problems:
        raise DataValidationError(problems)
