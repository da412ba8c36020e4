"""The clip convnet: normalization, 3-D filter banks, nonlinearity, pooling.

Clips [frames, height, width, channels] arrive z-scored per channel by
tf.Transform (the first normalization). Each block is a 3x3x3 convolution
over frames and space (the filter bank), batch normalization and a ReLU,
then max pooling over 2 frames (while more than one is left) and 2x2
pixels, and dropout; `conv_filters` gives one width per block. A dense
layer and a softmax classifier follow.

With `clip_convolution` `per_frame`, the baseline: the image convnet's
blocks (models/convnet/model.py filter_banks), dense layer and classifier
on each frame alone, with the same weights for every frame, and the
frames' class scores averaged. It sees no motion, only what single frames
show.
"""

from typing import Any, Dict, List

import tensorflow as tf

from common import names
from common import settings
from common import signatures
from models import data_facts
from models import export
from models import recipe as recipe_lib
from models import schedule
from models.convnet import model as convnet

keras = tf.keras


def filter_banks_3d(clip_shape, conv_filters, dropout: float,
                    momentum: float) -> List[keras.layers.Layer]:
    """The 3-D blocks' layers, in order, for clips of `clip_shape`."""
    frames = int(clip_shape[0])
    layers: List[keras.layers.Layer] = []
    for block, filters in enumerate(conv_filters):
        name = f'block{block}_conv3d'
        pool_frames = 2 if frames >= 2 else 1
        frames //= pool_frames
        layers += [
            keras.layers.Conv3D(int(filters),
                                3,
                                padding='same',
                                use_bias=False,
                                name=name),
            keras.layers.BatchNormalization(momentum=momentum,
                                            name=f'{name}_bn'),
            keras.layers.ReLU(name=f'{name}_relu'),
            keras.layers.MaxPooling3D((pool_frames, 2, 2),
                                      name=f'block{block}_pool'),
            keras.layers.Dropout(dropout, name=f'block{block}_dropout'),
        ]
    return layers


def _dense(x: tf.Tensor, params: Dict[str, Any], dropout: float,
           momentum: float) -> tf.Tensor:
    x = keras.layers.Dense(int(params['dense_units']),
                           use_bias=False,
                           name='dense')(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name='dense_bn')(x)
    x = keras.layers.ReLU(name='dense_relu')(x)
    return keras.layers.Dropout(min(2 * dropout, convnet.MAX_DENSE_DROPOUT),
                                name='dense_dropout')(x)


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The clip convnet for clips of the data's `clip_shape`."""
    clip_shape = [int(d) for d in params[data_facts.CLIP_SHAPE]]
    dropout = float(settings.value(params, 'dropout'))
    momentum = schedule.batch_norm_momentum(params)
    clip = keras.Input(tuple(clip_shape), name=names.CLIP_KEY)
    if settings.value(params, 'clip_convolution') == 'per_frame':
        frame = keras.Input(tuple(clip_shape[1:]), name='frame')
        x = frame
        for layer in convnet.filter_banks(params['conv_filters'],
                                          dropout,
                                          momentum,
                                          pool_padding='same'):
            x = layer(x)
        x = _dense(
            keras.layers.Flatten(name='flatten')(x), params, dropout, momentum)
        frame_scores = keras.layers.Dense(num_classes,
                                          activation='softmax',
                                          name='classifier')(x)
        per_frame = keras.Model(frame, frame_scores, name='frame_convnet')
        scores = keras.layers.TimeDistributed(per_frame,
                                              name='each_frame')(clip)
        scores = keras.layers.GlobalAveragePooling1D(
            name='average_frames')(scores)
        return keras.Model({names.CLIP_KEY: clip}, scores, name='convnet2d')
    x = clip
    for layer in filter_banks_3d(clip_shape, params['conv_filters'], dropout,
                                 momentum):
        x = layer(x)
    x = _dense(
        keras.layers.Flatten(name='flatten')(x), params, dropout, momentum)
    scores = keras.layers.Dense(num_classes,
                                activation='softmax',
                                name='classifier')(x)
    return keras.Model({names.CLIP_KEY: clip}, scores, name='convnet3d')


def to_model_inputs(transformed: Dict[str, tf.Tensor],
                    params: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Transformed features -> the model's inputs: the z-scored clips."""
    del params  # Transform shaped them.
    return {names.CLIP_KEY: transformed[names.CLIP_KEY]}


def clip_signature(predict: export.PredictFn, params: Dict[str, Any]):
    """`serving_clip`: clips [batch, frames, height, width, channels].

    Float32, of the data's clip shape, with the values the clips' files
    hold (the transform graph z-scores them).
    """
    clip_shape = [int(d) for d in params[data_facts.CLIP_SHAPE]]

    @tf.function(input_signature=[
        tf.TensorSpec(
            [None, *clip_shape], tf.float32, name=signatures.CLIP_INPUT)
    ])
    def serve_clips(clips):
        flat = tf.reshape(clips, [tf.shape(clips)[0], -1])
        return predict({names.CLIP_KEY: export.rows_to_sparse(flat)})

    return serve_clips


def search_space(hp) -> Dict[str, Any]:
    """The Tuner's space (a KerasTuner HyperParameters) -> params."""
    width = hp.Choice('width', [8, 16, 32])
    depth = hp.Int('depth', 1, 3)
    return {
        'conv_filters': [width * 2**block for block in range(depth)],
        'dense_units': hp.Choice('dense_units', [32, 64, 128]),
        **recipe_lib.search_space(hp, batch_sizes=[16, 32, 64])
    }


RECIPE = recipe_lib.ModelRecipe(
    name='convnet3d',
    build_model=build_model,
    to_model_inputs=to_model_inputs,
    extra_signatures={signatures.CLIP_SIGNATURE: clip_signature},
    search_space=search_space)
