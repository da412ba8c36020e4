"""An ensemble of networks (models/ensemble.py): one model averaging its
networks' class scores, saved and loaded as any other."""

import numpy as np
import pytest
import tensorflow as tf

from models import ensemble
from models.inception_time import model as inception_time

_PARAMS = {
    'num_channels': 2,
    'conv_filters': [4, 4, 4],
    'kernel_sizes': [5, 4],
    'bottleneck_filters': 3,
}


def _networks(count):
    networks = []
    for index in range(count):
        tf.keras.utils.set_random_seed(index)
        networks.append(inception_time.RECIPE.build_model(_PARAMS, 3))
    return networks


def _inputs():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=6)
    sequences = rng.normal(size=(6, 10, 2)).astype(np.float32)
    for i, length in enumerate(lengths):
        sequences[i, length:] = 0.0
    return {'sequence': sequences, 'length': lengths}


def test_the_ensemble_answers_the_mean_of_its_networks_scores():
    networks = _networks(3)
    inputs = _inputs()
    alone = [network(inputs).numpy() for network in networks]
    # Three networks of three seeds: three answers.
    assert not np.allclose(alone[0], alone[1], atol=1e-3)
    model = ensemble.average(networks)
    assert len(model.weights) == sum(len(n.weights) for n in networks)
    np.testing.assert_allclose(model(inputs).numpy(),
                               np.mean(alone, axis=0),
                               rtol=1e-5,
                               atol=1e-6)


def test_one_network_is_its_own_ensemble():
    [network] = _networks(1)
    assert ensemble.average([network]) is network


def test_a_saved_ensemble_loads_and_answers_as_before(tmp_path):
    model = ensemble.average(_networks(2))
    inputs = _inputs()
    expected = model(inputs).numpy()

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, 2], tf.float32),
        tf.TensorSpec([None], tf.int64)
    ])
    def serve(sequence, length):
        return model({'sequence': sequence, 'length': length}, training=False)

    model.save(str(tmp_path / 'model'),
               save_format='tf',
               signatures={'serving_default': serve},
               save_traces=False)
    loaded = tf.saved_model.load(str(tmp_path / 'model'))
    answer = loaded.signatures['serving_default'](
        sequence=tf.constant(inputs['sequence']),
        length=tf.constant(inputs['length'], tf.int64))
    np.testing.assert_allclose(next(iter(answer.values())).numpy(),
                               expected,
                               rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize('seed,index,expected', [(42, 0, 42), (42, 3, 45),
                                                 (None, 2, None)])
def test_each_network_has_its_own_seed(seed, index, expected):
    assert ensemble.seed_network({'seed': seed}, index) == expected
