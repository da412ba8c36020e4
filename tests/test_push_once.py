"""The Pusher writes no new version for the model it already serves: TFX's
real Pusher executor, on real folders."""

import os

from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import path_utils
from tfx.utils import proto_utils

from components.pusher import executor as pusher_executor


def _push(model_dir, base, tmp_path, name):
    model = standard_artifacts.Model()
    model.uri = model_dir
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / f'blessing-{name}')
    blessing.set_int_custom_property('blessed', 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f'pushed-{name}')
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base))
    pusher_executor.Executor().Do(
        {
            specs.MODEL_KEY: [model],
            specs.MODEL_BLESSING_KEY: [blessing]
        }, {specs.PUSHED_MODEL_KEY: [pushed]},
        {specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)})
    return pushed


def _write_model(uri, variables):
    """A Model artifact's folder; TFX keeps the SavedModel in a sub-folder."""
    folder = path_utils.serving_model_path(uri)
    os.makedirs(os.path.join(folder, 'variables'))
    with open(os.path.join(folder, 'saved_model.pb'), 'wb') as f:
        f.write(b'graph')
    with open(os.path.join(folder, 'variables', 'variables.data'), 'wb') as f:
        f.write(variables)
    return uri


def test_the_served_model_is_not_pushed_again_and_a_new_one_is(tmp_path):
    base = str(tmp_path / 'serving' / 'convnet')
    model = _write_model(str(tmp_path / 'model'), b'weights')
    first = _push(model, base, tmp_path, 'first')
    [version] = os.listdir(base)
    assert first.get_string_custom_property('pushed_destination') == (
        os.path.join(base, version))
    assert not first.get_int_custom_property(pusher_executor.ALREADY_SERVING)

    again = _push(model, base, tmp_path, 'again')
    assert os.listdir(base) == [version]
    assert again.get_int_custom_property('pushed') == 1
    assert again.get_int_custom_property(pusher_executor.ALREADY_SERVING) == 1
    assert again.get_string_custom_property('pushed_destination') == (
        os.path.join(base, version))
    assert again.get_string_custom_property('pushed_version') == version

    # Same names, other bytes: a different model, pushed as a new version
    # (versions are Unix seconds: make the first one older).
    os.rename(os.path.join(base, version),
              os.path.join(base, str(int(version) - 10)))
    other = _write_model(str(tmp_path / 'other'), b'weightz')
    _push(other, base, tmp_path, 'other')
    assert len(os.listdir(base)) == 2
