"""ServingCheck: TFX's InfraValidator job, without Docker.

It loads the Trainer's candidate SavedModel into a model server started as a
local subprocess (the real `tensorflow_model_server` when it is on PATH, else
this project's `python -m serving serve`, which takes the same flags), sends
real requests built from the raw examples (a Classify on `serving_default`
and a Predict on each other signature it knows how to feed), checks the
answers and always stops the server.

Its `blessing` output follows the InfraValidator contract, so the standard
Pusher honours it:

- custom property `blessed` = 1 and an empty `INFRA_BLESSED` file, or
  `blessed` = 0 and an `INFRA_NOT_BLESSED` file holding the reason;
- when blessed, a copy of the model under `<blessing>/stamped_model` with
  the requests it sent as TF Serving warmup records
  (`assets.extra/tf_serving_warmup_requests`), and `has_model` = 1.

`Pusher(model=...)` pushes the Trainer's model and only checks `blessed`;
`Pusher(model_blessing=..., infra_blessing=...)` without `model` pushes the
warmed copy.

A model that cannot be served (no SavedModel, fails to load, times out,
wrong answers) is not blessed; the component raises only for its own faults:
no server to start, or a missing split or no examples in it.
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.serving_check import executor
from components.serving_check.executor import BLESSING_KEY
from components.serving_check.executor import DEFAULT_MODEL_NAME
from components.serving_check.executor import DEFAULT_NUM_EXAMPLES
from components.serving_check.executor import DEFAULT_SPLIT
from components.serving_check.executor import DEFAULT_TIMEOUT_SECONDS
from components.serving_check.executor import EXAMPLES_KEY
from components.serving_check.executor import MODEL_KEY
from components.serving_check.executor import MODEL_NAME_KEY
from components.serving_check.executor import NUM_EXAMPLES_KEY
from components.serving_check.executor import SPLIT_KEY
from components.serving_check.executor import TIMEOUT_SECONDS_KEY


class ServingCheckSpec(types.ComponentSpec):
    """ServingCheck component spec."""

    PARAMETERS = {
        SPLIT_KEY: ExecutionParameter(type=str),
        NUM_EXAMPLES_KEY: ExecutionParameter(type=int),
        TIMEOUT_SECONDS_KEY: ExecutionParameter(type=int),
        MODEL_NAME_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
    }


class ServingCheck(base_component.BaseComponent):
    """Checks that the candidate model loads and answers in a model server.

    Outputs `blessing` (InfraBlessing), as TFX's InfraValidator does, for
    `tfx.components.Pusher(infra_blessing=...)`.
    """

    SPEC_CLASS = ServingCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self,
                 model: types.BaseChannel,
                 examples: types.BaseChannel,
                 model_name: str = DEFAULT_MODEL_NAME,
                 split: str = DEFAULT_SPLIT,
                 num_examples: int = DEFAULT_NUM_EXAMPLES,
                 timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS):
        """Constructs a ServingCheck.

        Args:
            model: The Trainer's `model` channel.
            examples: The raw ExampleGen `examples` channel.
            model_name: The name to serve the model under (use the name it is
                pushed as, e.g. 'convnet').
            split: The split whose examples become requests.
            num_examples: How many examples to send.
            timeout_seconds: The time limit for the model to load and answer.
        """
        if num_examples < 1:
            raise ValueError(
                f'num_examples must be positive, got {num_examples}')
        if timeout_seconds < 1:
            raise ValueError(
                f'timeout_seconds must be positive, got {timeout_seconds}')
        spec = ServingCheckSpec(
            model=model,
            examples=examples,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            split=split,
            num_examples=num_examples,
            timeout_seconds=timeout_seconds,
            model_name=model_name)
        super().__init__(spec=spec)
