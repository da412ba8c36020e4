"""RunReport: a Kubeflow run's report as artifacts its UI shows.

RunReport: a compiled (Kubeflow) run's report, metrics and confusion matrix, as
artifacts the Kubeflow UI shows.

A local run writes its report after the run from ML Metadata
(pipeline/report.py); on Kubeflow that is this last component, reading the
same artifacts as its inputs. Its outputs are KFP v2's visualization types
(system/): `report` (system.HTML, the page of pipeline/report.py),
`metrics` (system.Metrics, TFMA's overall metrics of the candidate) and
`confusion_matrix` (system.ClassificationMetrics, the test split's matrix
by class name).
"""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

import system
from pipeline.run_report import executor

_INPUT_TYPES = {
    'examples': standard_artifacts.Examples,
    'statistics': standard_artifacts.ExampleStatistics,
    'anomalies': standard_artifacts.ExampleAnomalies,
    'drift': standard_artifacts.ExampleAnomalies,
    'model_run': standard_artifacts.ModelRun,
    'evaluation': standard_artifacts.ModelEvaluation,
    'blessing': standard_artifacts.ModelBlessing,
    'infra_blessing': standard_artifacts.InfraBlessing,
    executor.PUSHED_MODEL_KEY: standard_artifacts.PushedModel,
}


class RunReportSpec(types.ComponentSpec):
    """RunReport component spec: every input optional."""

    PARAMETERS = {
        executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        key: ChannelParameter(type=artifact_type, optional=True)
        for key, artifact_type in _INPUT_TYPES.items()
    }
    OUTPUTS = {
        executor.REPORT_KEY:
            ChannelParameter(type=system.HTML),
        executor.METRICS_KEY:
            ChannelParameter(type=system.Metrics),
        executor.CONFUSION_MATRIX_KEY:
            ChannelParameter(type=system.ClassificationMetrics),
    }


class RunReport(base_component.BaseComponent):
    """The run's report page and metrics for the Kubeflow UI."""

    SPEC_CLASS = RunReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model_name: str,
                 infra_blessing: Optional[types.BaseChannel] = None,
                 **inputs: types.BaseChannel):
        super().__init__(
            spec=RunReportSpec(model_name=model_name,
                               infra_blessing=infra_blessing,
                               report=types.Channel(type=system.HTML),
                               metrics=types.Channel(type=system.Metrics),
                               confusion_matrix=types.Channel(
                                   type=system.ClassificationMetrics),
                               **inputs))
