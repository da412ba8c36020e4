"""TFX's Pusher, made atomic: TF Serving never sees a half-copied version.

TFX's Pusher copies the model straight into `<base>/<version>/` (the
`saved_model.pb` last). A model server polling the base path can see that
folder while its variables are still being copied, and a push killed half
way leaves a broken version behind for good. This executor lets TFX's copy
go to a hidden staging folder, `<base>/.staging/<version>/` (model servers
load numbered folders only), then renames it into place: one atomic step on
one file system. Staging left by a killed push is removed first.
"""

import os
import shutil
from typing import Any, Dict, List

from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

STAGING_DIR = '.staging'


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
        staging = os.path.join(base, STAGING_DIR)
        shutil.rmtree(staging, ignore_errors=True)
        destination.filesystem.base_directory = staging
        super().Do(input_dict, output_dict,
                   {**exec_properties,
                    key: proto_utils.proto_to_json(destination)})
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
