"""A model's weights apart from fitting.

What is done to a model's weights apart from fitting: a warm start from an
earlier model, batch-norm statistics recalibrated before export, and a digest to
compare workers' weights by.
"""

import hashlib

import numpy as np
import tensorflow as tf
from absl import logging

from models import transfer

keras = tf.keras


def recalibrate_batch_norm(model: keras.Model, dataset: tf.data.Dataset,
                           max_batches: int) -> int:
    """Recomputes batch-norm statistics (precise BN).

    Sets every batch-norm layer's moving mean and variance to the average over
    training batches of the final weights (precise BN).

    The moving averages mix statistics of the weights of the last few
    hundred steps; after this pass they are those of the weights exported.
    Dropout is off during the pass, as it is when serving.

    Returns:
        The number of batches averaged (0 when the model has no batch norm).
    """
    norms = [
        layer for layer in model.submodules
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not norms:
        return 0
    dropouts = [
        layer for layer in model.submodules
        if isinstance(layer, keras.layers.Dropout)
    ]
    rates = [layer.rate for layer in dropouts]
    momenta = [layer.momentum for layer in norms]
    for layer in dropouts:
        layer.rate = 0.0
    batches = 0
    try:
        for inputs, _ in dataset.take(max_batches):
            batches += 1
            # Momentum 1 - 1/n: the running mean of the n batches' statistics.
            for layer in norms:
                layer.momentum = 1.0 - 1.0 / batches
            model(inputs, training=True)
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    logging.info('Batch-norm statistics recalibrated over %d batches', batches)
    return batches


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight's value: equal on workers that agree."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def warm_start(model: keras.Model, base_model_dir: str) -> bool:
    """Loads the weights of a previously exported model when they match.

    Weights are matched by name (layers are named in build_model) and shape.

    Returns:
        True if every weight was loaded; False (logged) when the base model's
        architecture differs, in which case training starts afresh.
    """
    base = transfer.saved_model_variables(base_model_dir)
    if any(w.name not in base or base[w.name].shape != w.shape
           for w in model.weights):
        logging.warning(
            'Base model %s does not match this architecture; '
            'training from scratch', base_model_dir)
        return False
    for weight in model.weights:
        weight.assign(base[weight.name])
    logging.info('Warm-started from %s', base_model_dir)
    return True
