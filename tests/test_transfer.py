"""Transfer (models/transfer.py): a model takes another trained model's
lower layers by name and shape, never its head, keeps them frozen for the
first epochs and then fine-tunes them at a lower learning rate; for every
model family. Smoke-sized models saved as real SavedModels."""

import numpy as np
import pytest
import tensorflow as tf

from models import training
from models import transfer
from models.convnet import model as convnet
from models.fcn import model as fcn
from models.rnn import model as rnn

CONVNET = {
    'image_shape': [16, 16, 1],
    'conv_filters': [4, 8],
    'dense_units': 8,
    'dropout': 0.0
}
CONV_LAYERS = [
    f'block{b}_conv{c}{bn}' for b in range(2) for c in range(2)
    for bn in ('', '_bn')
]


def _save(model, path):
    model.save(str(path), save_format='tf', save_traces=False)
    return str(path)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A 10-class convnet of 16x16 images, as a model base path with two
    versions: the newest is the one taken."""
    base = tmp_path_factory.mktemp('source')
    _save(convnet.build_model(CONVNET, num_classes=10), base / '1')
    model = convnet.build_model(CONVNET, num_classes=10)
    _save(model, base / '2')
    return str(base), model


def _values(model, layer_names, weights='weights'):
    return [
        w.numpy().copy()
        for name in layer_names
        for w in getattr(model.get_layer(name), weights)
    ]


@pytest.mark.parametrize('size', [16, 24])
def test_matching_lower_layers_are_copied_and_the_head_is_new(source, size):
    base, theirs = source
    # Other classes; at 16x16 even the dense layer's shape matches.
    mine = convnet.build_model({
        **CONVNET, 'image_shape': [size, size, 1]
    },
                               num_classes=4)
    report = transfer.transfer_layers(mine, base)
    assert report['transfer_from'].endswith('/2')
    assert report['layers'] == CONV_LAYERS
    assert report['new_layers'] == ['dense', 'dense_bn', 'classifier']
    for value, mine_value in zip(_values(theirs, CONV_LAYERS),
                                 _values(mine, CONV_LAYERS)):
        np.testing.assert_array_equal(value, mine_value)
    assert not any(
        np.array_equal(a, b)
        for a, b in zip(_values(theirs, ['dense']), _values(mine, ['dense'])))


def test_gray_into_colour_starts_the_first_convolution_afresh(source):
    """Other channels change only the first convolution's kernel shape:
    that layer is new, every other filter bank is the source's."""
    base, theirs = source
    mine = convnet.build_model({
        **CONVNET, 'image_shape': [16, 16, 3]
    },
                               num_classes=4)
    report = transfer.transfer_layers(mine, base)
    assert report['layers'] == CONV_LAYERS[1:]
    assert report['new_layers'] == [
        'block0_conv0', 'dense', 'dense_bn', 'classifier'
    ]
    for value, mine_value in zip(_values(theirs, CONV_LAYERS[1:]),
                                 _values(mine, CONV_LAYERS[1:]),
                                 strict=True):
        np.testing.assert_array_equal(value, mine_value)


def test_a_single_scale_model_fills_the_full_resolution_stack(source):
    """A multi-scale model keeps the single-scale layer names in its
    full-resolution stack: they take the source's filter banks; the other
    scales' stacks are new."""
    base, theirs = source
    mine = convnet.build_model({**CONVNET, 'scales': [1, 2]}, num_classes=4)
    report = transfer.transfer_layers(mine, base)
    assert report['layers'] == CONV_LAYERS
    scale2 = [f'scale2_{name}' for name in CONV_LAYERS]
    assert report['new_layers'] == scale2 + ['dense', 'dense_bn', 'classifier']
    for value, mine_value in zip(_values(theirs, CONV_LAYERS),
                                 _values(mine, CONV_LAYERS),
                                 strict=True):
        np.testing.assert_array_equal(value, mine_value)


def test_transferred_layers_stay_frozen_then_fine_tune_at_a_lower_rate(source):
    base, _ = source
    mine = convnet.build_model(CONVNET, num_classes=3)
    params = {
        'transfer_from': base,
        'epochs': 3,
        'transfer_frozen_fraction': 0.3,
        'transfer_learning_rate_factor': 0.1
    }
    steps, rate = 4, 0.01
    started = transfer.start_from(mine, params)
    assert started.report['frozen_epochs'] == 1
    training.compile_model(mine, params, rate)

    kept, steps_taken = [], []
    before = {}
    parts = {'lower': CONV_LAYERS, 'head': ['classifier']}

    def step_begin(batch, logs):
        for part, names in parts.items():
            before[part] = _values(mine, names, 'trainable_weights')

    def step_end(batch, logs):
        # The largest move of a weight the optimizer updates (none when
        # frozen).
        steps_taken.append([
            max((np.abs(a - b).max() for a, b in zip(
                _values(mine, names, 'trainable_weights'), before[part])),
                default=0.0) for part, names in parts.items()
        ])

    after_epoch = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: kept.append(
            (_values(mine, CONV_LAYERS), _values(mine, ['classifier']),
             [mine.get_layer(n).trainable for n in CONV_LAYERS])),
        on_train_batch_begin=step_begin,
        on_train_batch_end=step_end)
    start = _values(mine, CONV_LAYERS), _values(mine, ['classifier'])
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 16, 16, 1)).astype('float32')
    labels = rng.integers(0, 3, 32)
    mine.fit(images,
             labels,
             batch_size=8,
             epochs=3,
             verbose=0,
             callbacks=[started.callback, after_epoch])

    assert int(mine.optimizer.iterations) == 3 * steps
    (lower_1, head_1, trainable_1), (lower_2, _, trainable_2) = kept[:2]
    assert trainable_1 == [False] * len(CONV_LAYERS)
    assert trainable_2 == [True] * len(CONV_LAYERS)
    for before_value, after in zip(start[0], lower_1):  # frozen: unchanged
        np.testing.assert_array_equal(before_value, after)
    assert not np.array_equal(start[1][0], head_1[0])  # the head learns
    assert any(not np.array_equal(a, b) for a, b in zip(lower_1, lower_2))
    assert all(mine.get_layer(n).trainable for n in CONV_LAYERS)
    # Fine-tuning: the layers taken move at a tenth of the rate, the new
    # head at the rate itself, which the optimizer keeps. An Adam step moves
    # a weight by at most about the rate, and by about the rate when its
    # gradients keep their sign; a head whose gradients all turn in one step
    # moves less, so the head's largest move is taken over the steps.
    assert float(mine.optimizer.learning_rate) == pytest.approx(rate)
    lower_steps, head_steps = zip(*steps_taken[steps:])
    assert all(0 < step < 0.3 * rate for step in lower_steps), lower_steps
    assert max(head_steps) > 0.5 * rate, head_steps


def test_scaled_updates_are_the_optimizers_steps_times_the_factor():
    scaled, unscaled, other = (tf.Variable([1.0, -2.0, 3.0]) for _ in range(3))
    optimizer = tf.keras.optimizers.Adam(0.01)
    optimizer.build([scaled, other])
    transfer.scale_updates(optimizer, [scaled], 0.1)
    reference = tf.keras.optimizers.Adam(0.01)
    reference.build([unscaled])
    for gradient in ([0.5, -1.0, 2.0], [0.1, 0.3, -0.2], [1.0, 1.0, 1.0]):
        was, was_unscaled = scaled.numpy(), unscaled.numpy()
        optimizer.apply_gradients([(tf.constant(gradient), scaled),
                                   (tf.constant(gradient), other)])
        reference.apply_gradients([(tf.constant(gradient), unscaled)])
        # To float32's rounding of weights near 1 (1e-7).
        np.testing.assert_allclose(scaled.numpy() - was,
                                   0.1 * (unscaled.numpy() - was_unscaled),
                                   rtol=1e-3)
    # A variable not named keeps the optimizer's own step.
    np.testing.assert_allclose(other.numpy(), unscaled.numpy(), rtol=1e-6)


def test_sequence_models_transfer_their_lower_layers_too(tmp_path):
    fcn_params = {
        'num_channels': 2,
        'conv_filters': [4, 8],
        'kernel_sizes': [5, 3],
        'dropout': 0.0
    }
    base = _save(fcn.build_model(fcn_params, num_classes=5), tmp_path / 'f')
    mine = fcn.build_model(fcn_params, num_classes=2)
    assert transfer.transfer_layers(mine, base)['layers'] == [
        'block0_conv', 'block0_bn', 'block1_conv', 'block1_bn'
    ]

    rnn_params = {
        'num_channels': 2,
        'cell': 'gru',
        'units': [6],
        'bidirectional': True,
        'dropout': 0.0
    }
    base = _save(rnn.build_model(rnn_params, num_classes=5), tmp_path / 'r')
    report = transfer.transfer_layers(
        rnn.build_model(rnn_params, num_classes=2), base)
    assert report['layers'] == ['birnn0']
    assert report['new_layers'] == ['classifier']


def test_a_source_with_nothing_that_matches_is_refused(source):
    base, _ = source
    other = rnn.build_model(
        {
            'num_channels': 2,
            'cell': 'gru',
            'units': [6],
            'bidirectional': False
        },
        num_classes=2)
    with pytest.raises(transfer.TransferError, match='nothing to transfer'):
        transfer.transfer_layers(other, base)
