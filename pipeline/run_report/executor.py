"""RunReport's executor: the report, metrics and confusion matrix.

RunReport's executor: the run's report page, headline metrics and confusion
matrix as artifacts the Kubeflow UI shows (system/).
"""

import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from pipeline import report
from pipeline import report_html

# Inputs: each is the artifact `report.gather_artifacts` knows by
# (type, key).
INPUTS = {
    'examples': ('Examples', 'examples'),
    'statistics': ('ExampleStatistics', 'statistics'),
    'anomalies': ('ExampleAnomalies', 'anomalies'),
    'drift': ('ExampleAnomalies', 'drift'),
    'model_run': ('ModelRun', 'model_run'),
    'evaluation': ('ModelEvaluation', 'evaluation'),
    'blessing': ('ModelBlessing', 'blessing'),
    'infra_blessing': ('InfraBlessing', 'blessing'),
}
PUSHED_MODEL_KEY = 'pushed_model'
MODEL_NAME_KEY = 'model_name'
# Outputs.
REPORT_KEY = 'report'
METRICS_KEY = 'metrics'
CONFUSION_MATRIX_KEY = 'confusion_matrix'
# ClassificationMetrics' metadata key, as KFP's SDK writes it.
CONFUSION_MATRIX_METADATA = 'confusionMatrix'
# The custom properties `report` reads, as plain values.
_PROPERTIES = ('blessed', 'current_model', 'baseline_model', 'drifted_features',
               'pushed', 'pushed_destination')


def _plain(artifact: types.Artifact) -> metadata_store_pb2.Artifact:
    """The artifact as ML Metadata holds it after a local run.

    Its URI and the custom properties the report reads, as plain numbers and
    strings (a Kubeflow run hands them over as JSON values).
    """
    plain = metadata_store_pb2.Artifact(uri=artifact.uri)
    for name in _PROPERTIES:
        if not artifact.has_custom_property(name):
            continue
        value = artifact.get_custom_property(name)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            plain.custom_properties[name].int_value = value
        elif isinstance(value, float):
            plain.custom_properties[name].double_value = value
        elif value is not None:
            plain.custom_properties[name].string_value = str(value)
    return plain


def _custom(input_dict: Dict[str, List[types.Artifact]], key: str,
            name: str) -> Any:
    """A custom property of input `key`'s artifact, None if absent."""
    artifacts = input_dict.get(key) or []
    if not artifacts or not artifacts[0].has_custom_property(name):
        return None
    return artifacts[0].get_custom_property(name)


def headline_metrics(gathered: Dict[str, Any]) -> Dict[str, float]:
    """TFMA's overall metrics of the candidate model, by name."""
    overall = (gathered.get('metrics') or {}).get('overall', {})
    return {
        name: value
        for (name, model), value in sorted(overall.items())
        if model == 'candidate'
    }


def confusion_matrix(gathered: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The confusion matrix as KFP's ClassificationMetrics metadata.

    The classes by name, then a row of counts per true class.
    """
    matrix: Optional[List[List[float]]] = gathered.get('confusion')
    if not matrix:
        return None
    names = list(gathered.get('class_names') or [])
    size = max(len(matrix), len(names))
    names += [str(i) for i in range(len(names), size)]
    rows = [[0] * size for _ in range(size)]
    for true, row in enumerate(matrix):
        for predicted, count in enumerate(row):
            rows[true][predicted] = int(round(count))
    return {
        'annotationSpecs': [{
            'displayName': name
        } for name in names],
        'rows': [{
            'row': row
        } for row in rows]
    }


class Executor(base_executor.BaseExecutor):
    """Writes the report page and the metrics artifacts of the run."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        found = {
            INPUTS[key]: _plain(artifacts[0])
            for key, artifacts in input_dict.items()
            if key in INPUTS and artifacts
        }
        gathered = report.gather_artifacts(found)
        pushed = _custom(input_dict, PUSHED_MODEL_KEY, 'pushed')
        run = {
            'model':
                exec_properties.get(MODEL_NAME_KEY, ''),
            'blessed':
                bool(_custom(input_dict, 'blessing', 'blessed')),
            'pushed_model': (_custom(input_dict, PUSHED_MODEL_KEY,
                                     'pushed_destination') if pushed else None),
        }
        metrics = headline_metrics(gathered)
        if 'accuracy' in metrics:
            run['accuracy'] = metrics['accuracy']
        page = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        # KFP's launcher puts outputs at <root>/<run>/<task>/<key>.
        run_id = (getattr(self._context, 'pipeline_run_id', None) or
                  os.path.basename(os.path.dirname(os.path.dirname(page.uri))))
        fileio.makedirs(os.path.dirname(page.uri))
        with fileio.open(page.uri, 'w') as f:
            f.write(report_html.render(run_id, run, **gathered))

        numbers = artifact_utils.get_single_instance(output_dict[METRICS_KEY])
        for name, value in metrics.items():
            numbers.set_float_custom_property(name, value)

        matrix = artifact_utils.get_single_instance(
            output_dict[CONFUSION_MATRIX_KEY])
        cells = confusion_matrix(gathered)
        if cells:
            matrix.set_json_value_custom_property(CONFUSION_MATRIX_METADATA,
                                                  cells)
        # The same numbers as files at the URIs, for readers other than the
        # UI (both URIs are files, as the page's is).
        for artifact, content in ((numbers, metrics), (matrix, cells or {})):
            fileio.makedirs(os.path.dirname(artifact.uri))
            with fileio.open(artifact.uri, 'w') as f:
                f.write(json.dumps(content, indent=1))
