"""Transform: TFX's component, run by this project's executor.

The executor (executor.py) hands ExampleGen's data facts to the
preprocessing_fn and on to the Trainer.
"""

from tfx.components.transform import component
from tfx.dsl.components.base import executor_spec

from components.transform import executor


class Transform(component.Transform):
    """TFX's Transform with the data facts of its examples."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
