"""What a pipeline run did, read back from ML Metadata.

The final JSON line of `python -m pipeline run` comes from here: whether the
model was blessed, where it was pushed, its test accuracy, the span read.
"""

import json
import os
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import names

_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT,
                  metadata_store_pb2.Event.DECLARED_OUTPUT)


def run_outputs(store: metadata_store.MetadataStore,
                run_id: str) -> Dict[str, List[metadata_store_pb2.Artifact]]:
    """Artifacts output by one run's executions, by type name.

    Artifact type name -> artifacts output by one run's executions (cached
    executions included).
    """
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    if context is None:
        raise LookupError(f'no pipeline run {run_id!r} in ML Metadata')
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifact_ids = sorted(
        {e.artifact_id for e in events if e.type in _OUTPUT_EVENTS})
    outputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    artifacts = store.get_artifacts_by_id(artifact_ids)
    types = {
        t.id: t.name for t in store.get_artifact_types_by_id(
            list({a.type_id for a in artifacts}))
    }
    for artifact in artifacts:
        outputs.setdefault(types[artifact.type_id], []).append(artifact)
    return outputs


def _property(artifact, name: str) -> Any:
    for properties in (artifact.custom_properties, artifact.properties):
        if name in properties:
            value = properties[name]
            return getattr(value, value.WhichOneof('value'))
    return None


def accuracy(evaluation_uri: str) -> Optional[float]:
    """The candidate model's overall accuracy in an Evaluator output."""
    for metrics in tfma.load_metrics(evaluation_uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for entry in metrics.metric_keys_and_values:
            key = entry.key
            if (key.name == names.ACCURACY_METRIC and not key.is_diff and
                    key.model_name in ('', 'candidate')):
                return round(entry.value.double_value.value, 4)
    return None


def run_summary(store: metadata_store.MetadataStore,
                run_id: str) -> Dict[str, Any]:
    """blessed, pushed_model, accuracy and span of one pipeline run."""
    outputs = run_outputs(store, run_id)
    blessing = (outputs.get('ModelBlessing') or [None])[-1]
    evaluation = (outputs.get('ModelEvaluation') or [None])[-1]
    pushed = (outputs.get('PushedModel') or [None])[-1]
    infra = (outputs.get('InfraBlessing') or [None])[-1]
    examples = (outputs.get('Examples') or [None])[0]
    model_run = (outputs.get('ModelRun') or [None])[-1]
    drift = [
        a for a in outputs.get('ExampleAnomalies', [])
        if _property(a, 'drifted_features') is not None
    ]
    blessed = bool(blessing and _property(blessing, 'blessed'))
    return {
        'blessed':
            blessed and (infra is None or bool(_property(infra, 'blessed'))),
        'pushed_model': (_property(pushed, 'pushed_destination')
                         if pushed and _property(pushed, 'pushed') else None),
        # False when the blessed model was the version already served and
        # no new version was written (components/pusher/executor.py).
        'new_version':
            bool(pushed and _property(pushed, 'pushed') and
                 not _property(pushed, 'already_serving')),
        'accuracy':
            accuracy(evaluation.uri) if evaluation else None,
        'span':
            _property(examples, 'span') if examples else None,
        'drift':
            drifted_features(drift[-1].uri) if drift else [],
        'training':
            training_summary(model_run.uri) if model_run else None,
    }


# What the JSON line shows of the Trainer's report (models/training.py).
TRAINING_KEYS = ('strategy', 'replicas', 'workers', 'per_replica_batch',
                 'global_batch', 'learning_rate', 'warmup_steps',
                 'epoch_seconds', 'stop_reason', 'transfer', 'pretraining')
# Shown too where the report has them: parameter_server's cluster, an
# ensemble's networks.
TRAINING_KEYS_WHEN_SET = ('parameter_servers', 'workers_lost', 'ensemble')


def training_summary(model_run_uri: str) -> Optional[Dict[str, Any]]:
    """What the Trainer wrote of its training, if it did.

    Strategy, replicas, batch sizes, learning rate and epoch times of the
    Trainer whose model run is at `model_run_uri`, if it wrote them.
    """
    path = os.path.join(model_run_uri, names.TRAINING_REPORT)
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        report = json.load(f)
    return {
        **{
            key: report.get(key) for key in TRAINING_KEYS
        },
        **{
            key: report[key] for key in TRAINING_KEYS_WHEN_SET if key in report
        }
    }


def drifted_features(drift_uri: str) -> List[str]:
    """'feature: why' for each feature the DataGate found drifted."""
    from tensorflow_data_validation.utils import anomalies_util  # pylint: disable=import-outside-toplevel

    path = os.path.join(drift_uri, 'Split-train', names.ANOMALIES_FILE)
    if not os.path.exists(path):
        return []
    anomalies = anomalies_util.load_anomalies_binary(path)
    return [
        f'{feature}: {info.description}'
        for feature, info in sorted(anomalies.anomaly_info.items())
    ]
