"""The Pusher's executor, pushing a model only when it is not served already.

TFX's Pusher writes a new version for every blessing. A rerun whose
components were all cached blesses the same model again (the Evaluator
reruns because its baseline, the last blessed model, is now that model), and
TFX's Pusher would copy it to a new version: the server would reload the
very model it serves. This executor compares the model with the newest
version under the push destination first and, when they hold the same files
byte for byte, records that version as the push instead of writing one.
"""

import filecmp
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

# Custom property of the PushedModel: 1 when the model was already served
# and no version was written.
ALREADY_SERVING = 'already_serving'


def newest_version(base_directory: str) -> Optional[str]:
    """The newest numbered version folder under a model base path, if any."""
    if not os.path.isdir(base_directory):
        return None
    versions = [int(d) for d in os.listdir(base_directory) if d.isdigit() and
                os.path.isdir(os.path.join(base_directory, d))]
    return (os.path.join(base_directory, str(max(versions)))
            if versions else None)


def same_files(left: str, right: str) -> bool:
    """Whether two folders hold the same relative paths with the same bytes."""
    def listing(root: str) -> List[str]:
        return sorted(os.path.relpath(os.path.join(folder, name), root)
                      for folder, _, names in os.walk(root) for name in names)
    names = listing(left)
    if not names or names != listing(right):
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return not mismatch and not errors


class Executor(pusher_executor.Executor):
    """TFX's filesystem Pusher, but a model already served is not copied."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
            destination)
        served = newest_version(destination.filesystem.base_directory)
        if served and self.CheckBlessing(input_dict):
            model_path = self.GetModelPath(input_dict)
            if same_files(model_path, served):
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                io_utils.copy_dir(model_path, model_push.uri)
                self._MarkPushed(model_push, pushed_destination=served,
                                 pushed_version=os.path.basename(served))
                model_push.set_int_custom_property(ALREADY_SERVING, 1)
                return
        super().Do(input_dict, output_dict, exec_properties)
