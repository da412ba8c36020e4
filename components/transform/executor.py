"""TFX's Transform executor, given what ExampleGen learned from the data.

The preprocessing_fn gets ExampleGen's data facts (class names, channels per
time step: models/data_facts.py) in its `custom_config`, and the transform
graph it writes carries them on to the Trainer and a Tuner.
"""

import json
from typing import Any, Dict, List

from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs

from models import data_facts


class Executor(transform_executor.Executor):
    """Transform, with the data facts of its input examples."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.EXAMPLES_KEY])
        facts = data_facts.read(examples.uri)
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom_config = json.loads(exec_properties.get(key) or 'null') or {}
        exec_properties = {
            **exec_properties, key: json.dumps({
                **custom_config,
                **facts
            })
        }
        super().Do(input_dict, output_dict, exec_properties)
        data_facts.write(
            artifact_utils.get_single_instance(
                output_dict[standard_component_specs.TRANSFORM_GRAPH_KEY]).uri,
            facts)
