"""Image augmentation (`--set augmentation=shift|shift_flip`, in the
convnet's and the embedding's Tuner space): each training image changes at
random; at inference the model answers as if there were no augmentation."""

import numpy as np
import pytest
import tensorflow as tf

from models.convnet import model as convnet

PARAMS = {
    'image_shape': [8, 8, 1],
    'conv_filters': [4],
    'dense_units': 8,
    'dropout': 0.0
}


def _images() -> np.ndarray:
    # No symmetry: a shift or a flip changes every image.
    return np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize('augmentation,layers', [
    ('none', []),
    ('shift', ['augment_shift']),
    ('shift_flip', ['augment_shift', 'augment_flip']),
])
def test_training_images_change_at_random_and_inference_ones_do_not(
        augmentation, layers):
    augment = convnet.augmentation_layers(augmentation)
    assert [layer.name for layer in augment] == layers
    images = tf.constant(_images())
    trained, served = images, images
    for layer in augment:
        trained = layer(trained, training=True)
        served = layer(served, training=False)
    np.testing.assert_array_equal(served, images)
    assert (not np.allclose(trained, images)) == bool(layers)


def test_an_augmented_convnet_answers_as_the_plain_one_with_its_weights():
    plain = convnet.build_model({**PARAMS, 'augmentation': 'none'}, 3)
    augmented = convnet.build_model({**PARAMS, 'augmentation': 'shift_flip'}, 3)
    assert augmented.get_layer('augment_flip')  # Else this tests nothing.
    augmented.set_weights(plain.get_weights())
    inputs = {'image': _images()}
    np.testing.assert_allclose(augmented.predict(inputs, verbose=0),
                               plain.predict(inputs, verbose=0),
                               rtol=1e-6)


def test_an_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augmentation 'rotate'"):
        convnet.build_model({**PARAMS, 'augmentation': 'rotate'}, 3)
