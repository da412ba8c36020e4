"""TFX's Pusher, made atomic: TF Serving never sees a half-copied version.

TFX's Pusher copies the model straight into `<base>/<version>/` (the
`saved_model.pb` last). A model server polling the base path can see that
folder while its variables are still being copied, and a push killed half
way leaves a broken version behind for good. This executor lets TFX's copy
go to a hidden staging folder, `<base>/.staging/<version>/` (model servers
load numbered folders only), then renames it into place: one atomic step on
one file system. Staging left by a killed push is removed first.

A model already served is not pushed again: a rerun whose components were
all cached blesses the same model once more (the Evaluator reruns because
its baseline, the last blessed model, is now that model). When the model
holds the same files byte for byte as the newest version, that version is
recorded as the push and nothing is written.
"""

import filecmp
import os
import shutil
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

STAGING_DIR = '.staging'
# Custom property of the PushedModel: 1 when the model was already served
# and no version was written.
ALREADY_SERVING = 'already_serving'


def newest_version(base_directory: str) -> Optional[str]:
    """The newest numbered version folder under a model base path, if any."""
    if not os.path.isdir(base_directory):
        return None
    versions = [
        int(d)
        for d in os.listdir(base_directory)
        if d.isdigit() and os.path.isdir(os.path.join(base_directory, d))
    ]
    return (os.path.join(base_directory, str(max(versions)))
            if versions else None)


def same_files(left: str, right: str) -> bool:
    """Whether two folders hold the same relative paths with the same bytes."""

    def listing(root: str) -> List[str]:
        return sorted(
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root)
            for name in names)

    names = listing(left)
    if not names or names != listing(right):
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return not mismatch and not errors


class Executor(tfx_pusher_executor.Executor):
    """Pushes to a file system base path through a staging folder."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        key = standard_component_specs.PUSH_DESTINATION_KEY
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[key], destination)
        if destination.WhichOneof('destination') != 'filesystem':
            super().Do(input_dict, output_dict, exec_properties)
            return
        base = destination.filesystem.base_directory
        if self._already_serving(input_dict, output_dict, base):
            return
        staging = os.path.join(base, STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        destination.filesystem.base_directory = staging
        super().Do(input_dict, output_dict, {
            **exec_properties, key: proto_utils.proto_to_json(destination)
        })
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not pushed.get_int_custom_property('pushed'):
            return
        version = pushed.get_string_custom_property('pushed_version')
        final = os.path.join(base, version)
        if not os.path.exists(final):
            os.rename(os.path.join(staging, version), final)
        shutil.rmtree(staging, ignore_errors=True)
        pushed.set_string_custom_property('pushed_destination', final)

    def _already_serving(self, input_dict: Dict[str, List[types.Artifact]],
                         output_dict: Dict[str, List[types.Artifact]],
                         base: str) -> bool:
        """Records the newest version as the push when it is this model."""
        served = newest_version(base)
        if not served or not self.CheckBlessing(input_dict):
            return False
        model_path = self.GetModelPath(input_dict)
        if not same_files(model_path, served):
            return False
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push,
                         pushed_destination=served,
                         pushed_version=os.path.basename(served))
        model_push.set_int_custom_property(ALREADY_SERVING, 1)
        return True
