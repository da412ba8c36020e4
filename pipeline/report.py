"""One HTML page per pipeline run: what a TFX user on Kubeflow sees in its UI.

Built after the run from ML Metadata and the run's artifacts (nothing is
recomputed): the data's statistics and anomalies (TFDV's own HTML), drift
against the previous span, the Trainer's curves, TFMA's metrics overall and
per class by class name, the confusion matrix, the comparison with the last
blessed model and the serving check's verdict. Figures are inline SVG, so
the page is one file that can be mailed or archived.

`write_report` gathers (`gather`, here: ML Metadata and the artifacts) and
renders (pipeline/report_html.py `render`, which takes plain values and
protos, so it is tested on small inputs apart from a run; its figures are
pipeline/svg_charts.py's).
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_data_validation.utils import anomalies_util

from common import names
from models import data_facts
from pipeline import report_html
from pipeline import summary

REPORTS_DIR = 'reports'
# TFX's names for the serving check's verdict files (InfraBlessing).
_INFRA_NOT_BLESSED = 'INFRA_NOT_BLESSED'
_CONFUSION_PLOT = 'multi_class_confusion_matrix_plot'
_STATS_FILE = 'FeatureStats.pb'


def report_path(home: str, pipeline_name: str, run_id: str) -> str:
    """Where the report of run `run_id` goes, under the run's home."""
    name = re.sub(r'[^0-9A-Za-z_.-]', '-', run_id)
    return os.path.join(home, REPORTS_DIR, pipeline_name, f'{name}.html')


def write_report(store: metadata_store.MetadataStore, run_id: str, path: str,
                 run: Dict[str, Any]) -> str:
    """Writes the report of run `run_id` to `path`; returns `path`.

    Args:
        store: The pipeline's ML Metadata.
        run_id: The run (its `pipeline_run` context's name).
        path: The HTML file to write (`report_path`).
        run: The run's summary (pipeline/summary.py), shown at the top.
    """
    page = report_html.render(run_id, run, **gather(store, run_id))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(page)
    return path


def _artifacts_by_key(
        store: metadata_store.MetadataStore,
        run_id: str) -> Dict[Tuple[str, str], metadata_store_pb2.Artifact]:
    """The run's artifacts by (type, input or output key).

    (artifact type, input or output key) -> the run's artifact (the last one
    when several executions used the key).
    """
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    if context is None:
        raise LookupError(f'no pipeline run {run_id!r} in ML Metadata')
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {
        a.id: a
        for a in store.get_artifacts_by_id(list({e.artifact_id
                                                 for e in events}))
    }
    types = {
        t.id: t.name for t in store.get_artifact_types_by_id(
            list({a.type_id for a in artifacts.values()}))
    }
    found = {}
    for event in sorted(events, key=lambda e: e.execution_id):
        artifact = artifacts[event.artifact_id]
        key = event.path.steps[0].key if event.path.steps else ''
        found[(types[artifact.type_id], key)] = artifact
    return found


def _splits(uri: str, file_name: str) -> Dict[str, str]:
    """Split name -> its file in a split artifact at `uri`."""
    paths = {}
    for entry in sorted(os.listdir(uri)) if os.path.isdir(uri) else []:
        path = os.path.join(uri, entry, file_name)
        if entry.startswith('Split-') and os.path.exists(path):
            paths[entry[len('Split-'):]] = path
    return paths


def gather(store: metadata_store.MetadataStore, run_id: str) -> Dict[str, Any]:
    """What `render` shows of run `run_id`.

    Read from ML Metadata and the run's artifacts.
    """
    return gather_artifacts(_artifacts_by_key(store, run_id))


def gather_artifacts(
    found: Dict[Tuple[str, str],
                metadata_store_pb2.Artifact]) -> Dict[str, Any]:
    """What `render` shows, read from the run's artifacts.

    `found`: (artifact type, input or output key) -> artifact, as
    `_artifacts_by_key` finds them.
    """
    # The data's facts: Transform copies ExampleGen's into its graph (the
    # `examples` a pretraining run's last component reads are Transform's);
    # a compiled job's report task is given ExampleGen's examples only.
    source = (found.get(('TransformGraph', 'transform_graph')) or found.get(
        ('Examples', 'examples')))
    facts = data_facts.read(source.uri) if source else {}
    gathered: Dict[str, Any] = {
        'class_names': facts.get(data_facts.CLASS_NAMES) or [],
        'statistics': {},
        'anomalies': {},
        'drift': None,
        'trainer': None,
        'metrics': None,
        'confusion': None,
        'blessing': None,
        'serving': None
    }
    statistics = found.get(('ExampleStatistics', 'statistics'))
    if statistics:
        gathered['statistics'] = {
            split: tfdv.load_stats_binary(path)
            for split, path in _splits(statistics.uri, _STATS_FILE).items()
        }
    anomalies = found.get(('ExampleAnomalies', 'anomalies'))
    if anomalies:
        gathered['anomalies'] = {
            split: anomalies_util.load_anomalies_binary(path) for split, path in
            _splits(anomalies.uri, names.ANOMALIES_FILE).items()
        }
    drift = found.get(('ExampleAnomalies', 'drift'))
    if drift:
        paths = _splits(drift.uri, names.ANOMALIES_FILE)
        baseline = found.get(('ExampleStatistics', 'baseline_statistics'))
        gathered['drift'] = {
            'compared':
                baseline is not None,
            'anomalies': [
                anomalies_util.load_anomalies_binary(p) for p in paths.values()
            ]
        }
    model_run = found.get(('ModelRun', 'model_run'))
    report_file = (os.path.join(model_run.uri, names.TRAINING_REPORT)
                   if model_run else '')
    if report_file and os.path.exists(report_file):
        with open(report_file, encoding='utf-8') as f:
            gathered['trainer'] = json.load(f)
    evaluation = found.get(('ModelEvaluation', 'evaluation'))
    if evaluation:
        gathered['metrics'] = _metrics(evaluation.uri)
        gathered['confusion'] = _confusion(evaluation.uri)
        gathered['validation'] = _failures(evaluation.uri)
    blessing = found.get(('ModelBlessing', 'blessing'))
    if blessing:
        gathered['blessing'] = {
            name:
                summary._property(blessing,
                                  name)  # pylint: disable=protected-access
            for name in ('blessed', 'current_model', 'baseline_model')
        }
    infra = found.get(('InfraBlessing', 'blessing'))
    if infra:
        reason_file = os.path.join(infra.uri, _INFRA_NOT_BLESSED)
        reason = ''
        if os.path.exists(reason_file):
            with open(reason_file, encoding='utf-8') as f:
                reason = f.read().strip()
        gathered['serving'] = {
            'blessed': bool(summary._property(infra, 'blessed')),  # pylint: disable=protected-access
            'reason': reason
        }
    return gathered


def _metrics(evaluation_uri: str) -> Dict[str, Any]:
    """The evaluation metrics, overall and per class.

    {'overall': row, 'per_class': {label index: row}}, a row mapping (metric,
    'candidate' | 'baseline' | 'diff') to its value.
    """
    result: Dict[str, Any] = {'overall': {}, 'per_class': {}}
    for metrics in tfma.load_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        if not keys:
            row = result['overall']
        elif len(keys) == 1 and keys[0].WhichOneof('kind') == 'int64_value':
            row = result['per_class'].setdefault(keys[0].int64_value, {})
        else:
            continue
        for entry in metrics.metric_keys_and_values:
            if entry.value.WhichOneof('type') != 'double_value':
                continue
            key = entry.key
            model = ('diff' if key.is_diff else 'baseline'
                     if key.model_name == 'baseline' else 'candidate')
            row[(key.name, model)] = entry.value.double_value.value
    return result


def _confusion(evaluation_uri: str) -> Optional[List[List[float]]]:
    """The candidate's confusion matrix, if the eval config asked.

    The candidate's confusion matrix on the overall slice, [true][pred] (the
    last column: no prediction), if the eval config asked for it.
    """
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for entry in plots.plot_keys_and_values:
            if (entry.key.name != _CONFUSION_PLOT or
                    entry.key.model_name == 'baseline'):
                continue
            matrices = (
                entry.value.multi_class_confusion_matrix_at_thresholds.matrices)
            if not matrices:
                continue
            cells = matrices[0].entries
            size = 1 + max(
                [max(c.actual_class_id, c.predicted_class_id) for c in cells] or
                [0])
            matrix = [[0.0] * size for _ in range(size)]
            for cell in cells:
                if cell.predicted_class_id >= 0:
                    matrix[cell.actual_class_id][cell.predicted_class_id] = (
                        cell.num_weighted_examples)
            return matrix
    return None


def _failures(evaluation_uri: str) -> List[str]:
    """The Evaluator's failed thresholds, one line each."""
    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = 'change against the baseline' if key.is_diff else 'value'
            lines.append(f'{key.name} {kind} '
                         f'{failure.metric_value.double_value.value:.4f} fails '
                         f'{failure.metric_threshold}'.replace('\n', ' '))
    return lines


# Rendering -----------------------------------------------------------------
