"""Transform: TFX's component, run by this project's executor (executor.py),
which hands ExampleGen's data facts to the preprocessing_fn and on to the
Trainer."""

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.transform import executor


class Transform(tfx.components.Transform):
    """tfx.components.Transform with the data facts of its examples."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
