"""The convnet: normalization, filter banks, nonlinearity, pooling.

The convnet: the classic stack of normalization, filter bank, nonlinearity and
pooling, repeated.

Inputs arrive z-scored by tf.Transform (the first normalization). Each block
is, twice, a 3x3 convolution (the filter bank), batch normalization and a
ReLU, then 2x2 max pooling and dropout; `conv_filters` in config gives one
width per block. A dense layer and a softmax classifier follow. Trained with
cross-entropy on shuffled mini-batches by models/training.py.

With `augmentation` `shift` each training image is moved at random by up
to a tenth of its height and width before the first block, with
`shift_flip` also mirrored left to right at random; at inference the image
passes unchanged. Off by default; the Tuner's search space holds all three.

With `scales` (e.g. [1, 2, 4]) the same image is seen at several
resolutions at once, each through its own stack of filter banks or one
shared stack (`scales_share_weights`), merged before the dense layer
(models/convnet/multiscale.py).
"""

import functools
from typing import Any, Dict, List, Sequence, Tuple

import tensorflow as tf

from common import names
from common import settings
from common import signatures
from models import export
from models import recipe as recipe_lib
from models import schedule
from models.convnet import multiscale

keras = tf.keras

MAX_DENSE_DROPOUT = 0.75
# Random changes to a training image that keep its class, for most image
# sets: none, a shift, a shift and a left-right flip (not for text or
# digits, whose mirror is another class: the Tuner's eval score tells).
AUGMENTATIONS = settings.AUGMENTATIONS
MAX_SHIFT = 0.1  # Of the image's height and width.


def augmentation_layers(augmentation: str) -> List[keras.layers.Layer]:
    """The random layers that augment each training image.

    The layers that change each training image at random as `augmentation` (one
    of AUGMENTATIONS) says; Keras's random layers pass an image through
    unchanged at inference.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f'augmentation {augmentation!r}: expected one of '
                         f'{AUGMENTATIONS}')
    layers: List[keras.layers.Layer] = []
    if augmentation.startswith('shift'):
        # 'nearest': the edge's pixels (an image's background) fill in.
        layers.append(
            keras.layers.RandomTranslation(MAX_SHIFT,
                                           MAX_SHIFT,
                                           fill_mode='nearest',
                                           name='augment_shift'))
    if augmentation.endswith('flip'):
        layers.append(keras.layers.RandomFlip('horizontal',
                                              name='augment_flip'))
    return layers


def filter_banks(conv_filters: Sequence[int],
                 dropout: float,
                 momentum: float,
                 prefix: str = '',
                 pool_padding: str = 'valid') -> List[keras.layers.Layer]:
    """The filter-bank stack's layers, made once.

    The layers of the filter-bank stack, in order, made once (so that calling
    them on several inputs shares their weights).

    Each block is, twice, a 3x3 convolution, batch normalization and a
    ReLU, then 2x2 max pooling and dropout; `prefix` goes before each
    layer's name (`block0_conv0`, ...).
    """
    layers: List[keras.layers.Layer] = []
    for block, filters in enumerate(conv_filters):
        for layer in range(2):
            name = f'{prefix}block{block}_conv{layer}'
            layers += [
                keras.layers.Conv2D(int(filters),
                                    3,
                                    padding='same',
                                    use_bias=False,
                                    name=name),
                keras.layers.BatchNormalization(momentum=momentum,
                                                name=f'{name}_bn'),
                keras.layers.ReLU(name=f'{name}_relu')
            ]
        layers += [
            keras.layers.MaxPooling2D(2,
                                      padding=pool_padding,
                                      name=f'{prefix}block{block}_pool'),
            keras.layers.Dropout(dropout, name=f'{prefix}block{block}_dropout')
        ]
    return layers


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The convnet for images of `image_shape`.

    The convnet for images of config `image_shape`; multi-scale when config
    `scales` names more than the full resolution (models/convnet/
    multiscale.py).
    """
    image, x = trunk(params)
    scores = keras.layers.Dense(num_classes,
                                activation='softmax',
                                name='classifier')(x)
    return keras.Model({names.IMAGE_KEY: image}, scores, name='convnet')


def trunk(params: Dict[str, Any]) -> Tuple[tf.Tensor, tf.Tensor]:
    """(image input, the dense layer's features): all below the classifier.

    The convnet without its classifier: the augmentation, the filter banks
    (one scale or many) and the dense layer with its batch norm, ReLU and
    dropout; the multi-task model (models/multitask/) shares it between
    its heads.
    """
    height, width, channels = (int(d) for d in params['image_shape'])
    dropout = float(settings.value(params, 'dropout'))
    momentum = schedule.batch_norm_momentum(params)
    image = keras.Input((height, width, channels), name=names.IMAGE_KEY)
    x = image
    for layer in augmentation_layers(settings.value(params, 'augmentation')):
        x = layer(x)
    scales = [int(s) for s in settings.value(params, 'scales')]
    if scales == [1]:
        for layer in filter_banks(params['conv_filters'], dropout, momentum):
            x = layer(x)
        x = keras.layers.Flatten(name='flatten')(x)
    else:
        x = multiscale.merged_scales(
            x, scales, bool(settings.value(params, 'scales_share_weights')),
            functools.partial(filter_banks, params['conv_filters'], dropout,
                              momentum))
    x = keras.layers.Dense(int(params.get('dense_units', 256)),
                           use_bias=False,
                           name='dense')(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name='dense_bn')(x)
    x = keras.layers.ReLU(name='dense_relu')(x)
    # Twice the blocks' rate, below 1 (a rate of 1 drops every unit, which
    # Keras refuses): the search space's dropout goes up to 0.5.
    x = keras.layers.Dropout(min(2 * dropout, MAX_DENSE_DROPOUT),
                             name='dense_dropout')(x)
    return image, x


def to_model_inputs(transformed: Dict[str, tf.Tensor],
                    params: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Transformed features -> the convnet's inputs."""
    del params  # The transformed image is the input as it is.
    return {names.IMAGE_KEY: transformed[names.IMAGE_KEY]}


def image_signature(predict: export.PredictFn, params: Dict[str, Any]):
    """`serving_image`: encoded image bytes as a client sends them.

    `serving_image`: encoded image bytes (PNG, JPEG, ...) as a client sends
    them.
    """
    del params  # Any size and colour: the transform graph resizes.

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=signatures.IMAGE_INPUT)
    ])
    def serve_images(images):
        return predict({names.IMAGE_KEY: export.rows_to_sparse(images)})

    return serve_images


def search_space(hp) -> Dict[str, Any]:
    """The Tuner's space (a KerasTuner HyperParameters) -> params."""
    width = hp.Choice('width', [16, 32, 64])
    depth = hp.Int('depth', 1, 3)
    return {
        'conv_filters': [width * 2**block for block in range(depth)],
        'dense_units': hp.Choice('dense_units', [64, 128, 256]),
        'augmentation': hp.Choice('augmentation', list(AUGMENTATIONS)),
        **recipe_lib.search_space(hp, batch_sizes=[32, 64, 128])
    }


RECIPE = recipe_lib.ModelRecipe(
    name='convnet',
    build_model=build_model,
    to_model_inputs=to_model_inputs,
    extra_signatures={signatures.IMAGE_SIGNATURE: image_signature},
    search_space=search_space)
