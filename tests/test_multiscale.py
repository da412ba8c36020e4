"""The multi-scale convnet (`--set scales=[1,2,4]`): the same inputs,
outputs and serving signatures as the single-scale one, one stack of
weights when shared and one per scale when not."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from common import signatures
from models import export
from models.convnet import model as convnet
from tests import datasets
from tests import tiny_transform

SIZE = tiny_transform.SIZE
PARAMS = {
    'image_shape': [SIZE, SIZE, 1],
    'conv_filters': [4, 8],
    'dense_units': 8
}
MULTI = {**PARAMS, 'scales': [1, 2, 4]}
CLASSES = tiny_transform.PARAMS['class_names']


def _stack_weights(model, prefix):
    return sum(
        int(np.prod(w.shape)) for layer in model.layers
        if layer.name.startswith(prefix) for w in layer.weights)


def test_shared_scales_hold_one_stack_of_weights_and_separate_ones_each():
    shared = convnet.build_model({**MULTI, 'scales_share_weights': True}, 3)
    separate = convnet.build_model(MULTI, 3)
    stack = _stack_weights(shared, 'block')
    assert stack == _stack_weights(separate, 'block')
    assert _stack_weights(shared, 'scale') == 0
    assert _stack_weights(separate, 'scale2_') == stack
    assert _stack_weights(separate, 'scale4_') == stack
    assert separate.count_params() == shared.count_params() + 2 * stack
    # The shared stack sees the three resolutions.
    assert len(shared.get_layer('block0_conv0').inbound_nodes) == 3
    assert len(separate.get_layer('block0_conv0').inbound_nodes) == 1


@pytest.fixture(scope='module')
def transform_output(tiny_transformed):
    """The run's tiny real tf.Transform graph of the convnet's
    preprocessing_fn (tests/tiny_transform.py, gray SIZE x SIZE images)."""
    return tft.TFTransformOutput(str(tiny_transformed / 'transform_graph'))


def _exported(params, transform_output, path):
    model = convnet.build_model(params, len(CLASSES))
    export.export_serving_model(
        model, transform_output, CLASSES,
        lambda transformed: convnet.to_model_inputs(transformed, params), {
            name: lambda predict, make=make: make(predict, params)
            for name, make in convnet.RECIPE.extra_signatures.items()
        }, str(path))
    return tf.saved_model.load(str(path))


def _specs(loaded):
    return {
        name: (function.structured_input_signature, {
            key: (spec.dtype, spec.shape.as_list())
            for key, spec in function.structured_outputs.items()
        }) for name, function in loaded.signatures.items()
    }


def test_multi_scale_exports_and_serves_the_single_scale_signatures(
        transform_output, tmp_path):
    multi = _exported(MULTI, transform_output, tmp_path / 'multi')
    outputs = {
        signatures.SCORES_OUTPUT: (tf.float32, [None, len(CLASSES)]),
        signatures.CLASSES_OUTPUT: (tf.string, [None, len(CLASSES)])
    }

    def raw_input(name):
        return ((), {name: tf.TensorSpec([None], tf.string, name)}), outputs

    # The single-scale convnet's signatures (models/signatures.py; its
    # pushed model is served in tests/test_pipeline_e2e.py).
    assert _specs(multi) == {
        signatures.DEFAULT_SIGNATURE: raw_input(signatures.EXAMPLES_INPUT),
        signatures.IMAGE_SIGNATURE: raw_input(signatures.IMAGE_INPUT)
    }
    images, _ = datasets.images_with_labels(4, 3, 1, 20)  # another size
    answer = multi.signatures[signatures.IMAGE_SIGNATURE](**{
        signatures.IMAGE_INPUT:
            tf.constant([datasets.png_bytes(image) for image in images])
    })
    scores = answer[signatures.SCORES_OUTPUT].numpy()
    assert scores.shape == (4, len(CLASSES))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
