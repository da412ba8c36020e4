"""An ensemble: networks trained apart whose class scores are averaged.

Fawaz et al.'s InceptionTime ("InceptionTime: Finding AlexNet for time
series classification", 2020) is not one network but five, each trained
from its own random initialization, whose softmax scores are averaged; the
published figures are the ensemble's. With `ensemble_size` N,
models/training.py trains N networks one after the other, each with the
whole schedule and stopping rule and the seed `seed + k`, and `average`
joins them into the one model that is exported and served: the same inputs
and signatures, N times the work per request.
"""

from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from common import settings

keras = tf.keras


def size(params: Dict[str, Any]) -> int:
    """How many networks train: `ensemble_size`."""
    return int(settings.value(params, 'ensemble_size'))


def seed_network(params: Dict[str, Any], index: int) -> Optional[int]:
    """Seeds network `index` (`seed + index`); returns the seed.

    Network 0 keeps the seed the training started with, so that an
    ensemble's first network is the network trained alone.
    """
    if params.get('seed') is None:
        return None
    seed = int(params['seed']) + index
    if index:
        keras.utils.set_random_seed(seed)
    return seed


def _inputs_like(model: keras.Model) -> Dict[str, keras.Input]:
    """New Keras inputs named and shaped as `model`'s (a sequence family's)."""
    return {
        name: keras.Input(type_spec=tensor.type_spec, name=name)
        for name, tensor in model.input.items()
    }


def average(networks: Sequence[keras.Model]) -> keras.Model:
    """One model: the networks' inputs, the mean of their class scores."""
    if len(networks) == 1:
        return networks[0]
    name = networks[0].name
    # Keras wants the layers of one model uniquely named; a family names
    # every network it builds alike.
    for index, network in enumerate(networks):
        network._name = f'{name}_{index}'  # pylint: disable=protected-access
    inputs = _inputs_like(networks[0])
    scores = keras.layers.Average(name='mean_scores')(
        [network(inputs) for network in networks])
    return keras.Model(inputs, scores, name=f'{name}_ensemble')


def network_report(seed: Optional[int], steps: int, kept_epoch: int,
                   stop_reason: str, best_val_accuracy: float,
                   epoch_seconds: List[float]) -> Dict[str, Any]:
    """One network's training, as training.json's `ensemble` lists it."""
    return {
        'seed': seed,
        'steps': steps,
        'epochs': len(epoch_seconds),
        'kept_epoch': kept_epoch,
        'stop_reason': stop_reason,
        'best_val_accuracy': round(best_val_accuracy, 4),
        'seconds': round(sum(epoch_seconds), 1),
    }
