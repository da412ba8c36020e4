"""A multi-scale convnet trunk.

The same image at several resolutions at once, each through a stack of filter
banks, merged before the head.

The lower resolutions are made inside the model by average pooling, so the
model's input, tf.Transform and the serving signatures are those of the
single-scale convnet. Each scale's feature maps are averaged over space
(global pooling), which makes every scale's features the same length
whatever its resolution, and the scales' features are concatenated.

With shared weights, one stack of filter banks sees every resolution (the
same filters at several scales: as many weights as one scale); without,
each scale learns its own filters (a stack's weights per scale). The
full-resolution stack keeps the single-scale convnet's layer names, so a
single-scale model's filter banks transfer into it (models/transfer.py).
"""

from typing import Callable, List, Sequence

import tensorflow as tf

keras = tf.keras

# (layer-name prefix, pooling padding) -> a fresh stack of layers.
StackFactory = Callable[..., List[keras.layers.Layer]]


def merged_scales(image: tf.Tensor, scales: Sequence[int], shared: bool,
                  make_stack: StackFactory) -> tf.Tensor:
    """Features of `image` at each of `scales`, concatenated.

    Args:
        image: The model's image (augmented in training), [batch, height,
            width, channels].
        scales: Downsampling factors, 1 for the full resolution (e.g.
            [1, 2, 4]: full, half and quarter).
        shared: One stack of filter banks for every scale, or one each.
        make_stack: `make_stack(prefix=, pool_padding=)` -> the layers of
            one stack, new weights each call.

    Returns:
        [batch, scales * the last block's filters] features.
    """
    if len(set(scales)) != len(scales) or min(scales) < 1:
        raise ValueError(f'scales {list(scales)}: expected distinct factors '
                         '1 or more')
    # Padding 'same' rounds sizes up: a quarter-size image still has
    # pixels after every block's pooling.
    stack = make_stack(prefix='', pool_padding='same') if shared else None
    features = []
    for scale in scales:
        view = image if scale == 1 else keras.layers.AveragePooling2D(
            scale, padding='same', name=f'scale{scale}_downsample')(image)
        layers = stack or make_stack(
            prefix='' if scale == 1 else f'scale{scale}_', pool_padding='same')
        for layer in layers:
            view = layer(view)
        features.append(
            keras.layers.GlobalAveragePooling2D(
                name=f'scale{scale}_pool')(view))
    return keras.layers.Concatenate(name='scales')(features)
