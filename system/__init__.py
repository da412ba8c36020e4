"""KFP v2's visualization artifact types, as TFX artifact classes.

The Kubeflow UI draws an artifact by its type's schema title:
`system.HTML` (a page at the artifact's URI), `system.Metrics` (the numbers
in its metadata) and `system.ClassificationMetrics` (a confusion matrix in
its metadata, `confusionMatrix`). TFX's Kubeflow V2 compiler takes a custom
artifact class's TYPE_NAME as its schema title, and TFX's container
entrypoint imports the class back by that title as a dotted path
(`tfx/orchestration/kubeflow/v2/container/kubeflow_v2_entrypoint_utils.py`),
so these classes live in a top-level package named `system`.
"""

from tfx.types import artifact


class HTML(artifact.Artifact):
    """A page the Kubeflow UI shows: the file at the artifact's URI."""
    TYPE_NAME = 'system.HTML'


class Metrics(artifact.Artifact):
    """Named numbers the Kubeflow UI tabulates: the artifact's metadata."""
    TYPE_NAME = 'system.Metrics'


class ClassificationMetrics(artifact.Artifact):
    """A confusion matrix the Kubeflow UI draws.

    From the artifact's metadata `confusionMatrix` ({annotationSpecs:
    [{displayName}], rows: [{row: [count per predicted class]}]} by true class).
    """
    TYPE_NAME = 'system.ClassificationMetrics'
