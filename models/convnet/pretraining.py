"""Pretraining without labels: a masked denoising autoencoder.

The convnet's filter banks (models/convnet/model.py `filter_banks`, the
same layer names and shapes) encode an image whose patches are partly
blanked out and whose pixels carry noise; a small decoder (upsampling and
3x3 convolutions, one block per filter-bank block) rebuilds the clean
image, scored by the mean squared error over its pixels. No label is read.

Why this objective and not a contrastive one (SimCLR): the loss is a
target per pixel, so every image teaches the filter banks at any batch
size, in one forward pass, and falls from the first steps; SimCLR needs two
augmented views an image (twice the work a step) and large batches for its
negatives (4096 in the paper), and on two CPU cores in minutes it learns
little. The masking (not only noise) makes the filter banks use the
context of a blanked patch, i.e. shapes, not single pixels.

The trunk it leaves (`save_trunk`) is a SavedModel holding the filter
banks under the convnet's names (and the decoder under its own, which no
classifier matches), in a model base path: `transfer_from` takes it as it
takes a supervised model (models/transfer.py).
"""

import json
import math
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx_bsl.tfxio import dataset_options

from common import names
from common import settings
from models import inputs
from models import schedule
from models import training
from models import weights
from models.convnet import model as convnet

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras

DECODER_PREFIX = 'decoder_'


class Corrupt(keras.layers.Layer):
    """Blanks random square patches and adds Gaussian noise, in training.

    Each `patch` x `patch` cell of the image is set to 0 (the mean of a
    z-scored image) with probability `mask_fraction`; then noise of
    standard deviation `noise` is added. At inference the image passes
    unchanged.
    """

    def __init__(self, patch: int, mask_fraction: float, noise: float,
                 **kwargs):
        super().__init__(**kwargs)
        self.patch = int(patch)
        self.mask_fraction = float(mask_fraction)
        self.noise = float(noise)
        # Off while batch norm is recalibrated on clean images.
        self.enabled = True

    def call(self, images, training=None):
        if not training or not self.enabled:
            return images
        shape = tf.shape(images)
        cells = (shape[0], -(-shape[1] // self.patch),
                 -(-shape[2] // self.patch), 1)
        keep = tf.cast(
            tf.random.uniform(cells) >= self.mask_fraction, images.dtype)
        keep = tf.repeat(tf.repeat(keep, self.patch, axis=1),
                         self.patch,
                         axis=2)[:, :shape[1], :shape[2], :]
        return (images * keep +
                tf.random.normal(shape, stddev=self.noise, dtype=images.dtype))

    def get_config(self):
        return {
            **super().get_config(), 'patch': self.patch,
            'mask_fraction': self.mask_fraction,
            'noise': self.noise
        }


def build_autoencoder(params: Dict[str, Any]) -> keras.Model:
    """The denoising autoencoder on the convnet's filter banks.

    Input: z-scored images of `image_shape`; output: the same image
    rebuilt.
    """
    height, width, channels = (int(d) for d in params['image_shape'])
    momentum = schedule.batch_norm_momentum(params)
    image = keras.Input((height, width, channels), name=names.IMAGE_KEY)
    x = Corrupt(int(settings.value(params, 'pretrain_mask_patch')),
                float(settings.value(params, 'pretrain_mask_fraction')),
                float(settings.value(params, 'pretrain_noise')),
                name='corrupt')(image)
    # No dropout: the corruption is the regularizer.
    for layer in convnet.filter_banks(params['conv_filters'], 0.0, momentum):
        x = layer(x)
    for block, filters in reversed(list(enumerate(params['conv_filters']))):
        name = f'{DECODER_PREFIX}block{block}'
        x = keras.layers.UpSampling2D(2, name=f'{name}_up')(x)
        x = keras.layers.Conv2D(int(filters),
                                3,
                                padding='same',
                                activation='relu',
                                name=f'{name}_conv')(x)
    # Pooling floors odd sizes: back to the input's exactly.
    x = keras.layers.Resizing(height, width, name=f'{DECODER_PREFIX}resize')(x)
    rebuilt = keras.layers.Conv2D(channels,
                                  3,
                                  padding='same',
                                  name=f'{DECODER_PREFIX}output')(x)
    return keras.Model({names.IMAGE_KEY: image},
                       rebuilt,
                       name='denoising_autoencoder')


def compile_autoencoder(model: keras.Model, learning_rate: float) -> None:
    """Adam on the mean squared error of the rebuilt pixels."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss='mse')


def images_dataset(images: np.ndarray, batch_size: int,
                   seed: int) -> tf.data.Dataset:
    """(image, image) pairs, shuffled and batched, for `fit`.

    Repeated: `fit` is given its steps.
    """
    data = tf.data.Dataset.from_tensor_slices({names.IMAGE_KEY: images})
    return data.map(lambda x: (x, x[names.IMAGE_KEY])).shuffle(
        min(len(images), 10000), seed=seed).repeat().batch(batch_size)


def pretrain(model: keras.Model, data: tf.data.Dataset, steps: int,
             epochs: int) -> List[float]:
    """Trains `model` for `epochs` of `steps` steps; the loss each epoch."""
    history = model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return [float(v) for v in history.history['loss']]


def recalibrate_on_clean_images(model: keras.Model, data: tf.data.Dataset,
                                batches: int) -> int:
    """Batch-norm statistics of clean images, not of corrupted ones.

    The filter banks' batch norms then hold what a classifier taking them
    sees (weights.recalibrate_batch_norm); returns the batches averaged.
    """
    corrupt = model.get_layer('corrupt')
    corrupt.enabled = False
    try:
        return weights.recalibrate_batch_norm(model, data, batches)
    finally:
        corrupt.enabled = True


def save_trunk(model: keras.Model, base_path: str) -> str:
    """Saves `model` as a new version of the model base path `base_path`.

    Returns the version's folder; the version is the time in seconds (one
    more than the newest if that is not later).
    """
    os.makedirs(base_path, exist_ok=True)
    versions = [int(n) for n in os.listdir(base_path) if n.isdigit()]
    version = max([int(time.time())] + [v + 1 for v in versions])
    path = os.path.join(base_path, str(version))
    model.save(path + '.tmp', save_format='tf', save_traces=False)
    os.rename(path + '.tmp', path)
    return path


def trunk_layers(model: keras.Model) -> Tuple[str, ...]:
    """The names of the layers with weights that a classifier can take."""
    return tuple(layer.name
                 for layer in model.layers
                 if layer.weights and not layer.name.startswith(DECODER_PREFIX))


def transformed_images(fn_args: 'tfx.components.FnArgs', batch_size: int,
                       seed: int) -> tf.data.Dataset:
    """(image, image) batches of the Transform's training split, repeated.

    Any label the examples carry is not read.
    """
    schema = tft.TFTransformOutput(
        fn_args.transform_graph_path).transformed_metadata.schema
    data = fn_args.data_accessor.tf_dataset_factory(
        fn_args.train_files,
        dataset_options.TensorFlowDatasetOptions(batch_size=batch_size,
                                                 num_epochs=None,
                                                 shuffle=True,
                                                 shuffle_seed=seed), schema)
    return data.map(lambda features: ({
        names.IMAGE_KEY: features[names.IMAGE_KEY]
    }, features[names.IMAGE_KEY]))


def run(fn_args: 'tfx.components.FnArgs') -> None:
    """The Trainer's run: pretrains on the images, exports the trunk.

    The Trainer's run of the `pretrain` family: the autoencoder trains on
    the training split's images for the schedule's epochs
    (models/schedule.py: at least `epochs`, and `min_train_steps` steps),
    its batch norms are recalibrated on clean images, and it is saved to
    the Trainer's model directory, which Pusher copies to a model base path
    that `transfer_from` names. What it did goes to the model run directory
    (`names.TRAINING_REPORT`).
    """
    params = training.hyperparameters(fn_args)
    batch_size = int(params['batch_size'])
    examples = inputs.count_examples(fn_args.train_files)
    steps = math.ceil(examples / batch_size)
    planned = schedule.training_schedule(params, steps)
    params = {**params, 'batch_norm_momentum': planned['batch_norm_momentum']}
    seed = int(settings.value(params, 'seed'))
    tf.keras.utils.set_random_seed(seed)
    model = build_autoencoder(params)
    compile_autoencoder(model, float(settings.value(params, 'learning_rate')))
    data = transformed_images(fn_args, batch_size, seed)
    began = time.monotonic()
    losses = pretrain(model, data, steps, int(planned['epochs']))
    # At most an epoch's batches: a small set's are all there are.
    recalibrate_on_clean_images(
        model, data,
        min(steps, int(settings.value(params, 'recalibration_batches'))))
    logging.info('Pretrained %d epochs of %d steps: loss %s', planned['epochs'],
                 steps, losses)
    model.save(fn_args.serving_model_dir, save_format='tf', save_traces=False)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(
            os.path.join(fn_args.model_run_dir, names.TRAINING_REPORT),
            'w') as f:
        json.dump(
            {
                'family': 'pretrain',
                'pretraining': {
                    'objective': 'masked denoising autoencoder',
                    'train_examples': examples,
                    'steps': steps * int(planned['epochs']),
                    'loss': [round(v, 5) for v in losses],
                    'trunk_layers': list(trunk_layers(model)),
                    'seconds': round(time.monotonic() - began, 1)
                }
            }, f)
