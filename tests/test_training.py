"""Training steps of both models under MirroredStrategy over 2 logical CPUs
(tests/conftest.py splits the CPU), and the strategy choice by name."""

import math

import numpy as np
import pytest
import tensorflow as tf

from bench import throughput
from common import settings
from models import distribute
from models import inputs
from models import schedule
from models import training
from models import weights
from models.convnet import model as convnet
from models.fcn import model as fcn
from models.inception_time import model as inception_time
from models.rnn import model as rnn
from pipeline import profiles

# Heavy (tests/conftest.py): in-process trainings under MirroredStrategy
# (the RNN's graph alone about 30 s); about 80 s of one test worker idle.
pytestmark = pytest.mark.heavy(80)


@pytest.fixture
def mirrored():
    """MirroredStrategy over the 2 logical CPUs, asked for anew by each test
    as each Trainer run asks for it."""
    strategy = distribute.make_strategy('mirrored')
    assert strategy.num_replicas_in_sync == 2
    return strategy


def _train_one_step(strategy, recipe, params, inputs, labels):
    with strategy.scope():
        model = recipe.build_model(params, num_classes=3)
        training.compile_model(model, params)
        training.apply_speedups(model, params)
    before = [w.numpy().copy() for w in model.trainable_weights]
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(8)
    history = model.fit(dataset, epochs=1, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    assert np.isfinite(history.history['loss'][0])
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    return model


def test_convnet_trains_under_mirrored_strategy_on_two_devices(mirrored):
    params = {
        'image_shape': [12, 12, 1],
        'conv_filters': [4, 8],
        'dense_units': 8,
        'learning_rate': 1e-2
    }
    images = np.random.default_rng(0).normal(size=(16, 12, 12, 1))
    model = _train_one_step(mirrored, convnet.RECIPE, params,
                            {'image': images.astype(np.float32)},
                            np.arange(16) % 3)
    scores = model({'image': images[:4].astype(np.float32)}).numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_rnn_masks_padding_and_clips_gradients_under_mirrored_strategy(
        mirrored):
    params = {
        'num_channels': 2,
        'units': [4, 4],
        'bidirectional': True,
        'cell': 'gru',
        'clip_norm': 1.0,
        'learning_rate': 1e-2
    }
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 6, size=16)
    sequences = rng.normal(size=(16, 6, 2)).astype(np.float32)
    model = _train_one_step(mirrored, rnn.RECIPE, params, {
        'sequence': sequences,
        'length': lengths
    },
                            np.arange(16) % 3)
    # Values past a sequence's length are masked: changing them changes nothing.
    noisy = sequences.copy()
    for i, length in enumerate(lengths):
        noisy[i, length:] = 1e3
    clean = model({'sequence': sequences, 'length': lengths}).numpy()
    padded = model({'sequence': noisy, 'length': lengths}).numpy()
    np.testing.assert_allclose(clean, padded, atol=1e-6)


def _holds_cudnn_kernel(graph: tf.Graph) -> bool:
    return any(
        node.op.startswith('CudnnRNN')
        for function in graph.as_graph_def().library.function
        for node in function.node_def)


def test_rnn_traces_no_cudnn_kernel_where_no_gpu_is_visible():
    """In a tf.function tf_keras traces each LSTM and GRU twice, the
    standard kernel and cuDNN's, for Grappler to choose when it runs; with
    no GPU the RNN traces the standard one only (its export traces both:
    tests/test_pipeline_e2e_sequences.py)."""
    assert not tf.config.list_logical_devices('GPU')
    specs = {
        'sequence': tf.TensorSpec([None, None, 2], tf.float32),
        'length': tf.TensorSpec([None], tf.int64)
    }
    # What tf_keras traces by default: the check sees cuDNN's kernel.
    inputs = tf.keras.Input((None, 2))
    plain = tf.keras.Model(inputs, tf.keras.layers.LSTM(4)(inputs))
    assert _holds_cudnn_kernel(
        tf.function(plain).get_concrete_function(specs['sequence']).graph)
    for cell in ('lstm', 'gru'):
        model = rnn.build_model(
            {
                'num_channels': 2,
                'units': [4],
                'bidirectional': True,
                'cell': cell
            },
            num_classes=3)
        traced = tf.function(model).get_concrete_function(specs)
        assert not _holds_cudnn_kernel(traced.graph), cell


# The FCN's two blocks; InceptionTime's three modules of kernels 5 and 3 and
# their max-pool, then a residual shortcut.
_CONVOLUTIONAL = {
    'fcn': (fcn.RECIPE, {
        'conv_filters': [4, 6],
        'kernel_sizes': [5, 3]
    }),
    'inception_time': (inception_time.RECIPE, {
        'conv_filters': [4, 4, 4],
        'kernel_sizes': [5, 4],
        'bottleneck_filters': 3
    }),
}


@pytest.mark.parametrize('family', sorted(_CONVOLUTIONAL))
def test_convolutions_batch_norm_and_pooling_ignore_padding(mirrored, family):
    """The FCN and InceptionTime: the same scores and batch-norm updates
    whatever the padding holds and however long it is."""
    recipe, layers = _CONVOLUTIONAL[family]
    params = {'num_channels': 2, 'learning_rate': 1e-2, **layers}
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 9, size=16)
    sequences = rng.normal(size=(16, 12, 2)).astype(np.float32)
    for i, length in enumerate(lengths):
        sequences[i, length:] = 0.0  # Padded as to_model_inputs pads.
    labels = np.arange(16) % 3
    model = _train_one_step(mirrored, recipe, params, {
        'sequence': sequences,
        'length': lengths
    }, labels)
    inputs = {'sequence': sequences, 'length': lengths}
    clean = model(inputs).numpy()
    # Other values past each length, and more padding: the same scores.
    noisy = np.concatenate([sequences, np.zeros((16, 7, 2), np.float32)], 1)
    for i, length in enumerate(lengths):
        noisy[i, length:] = 1e3
    np.testing.assert_allclose(model({
        'sequence': noisy,
        'length': lengths
    }).numpy(),
                               clean,
                               rtol=1e-4,
                               atol=1e-5)
    # Batch-norm statistics of a training step count real steps only: the
    # same batch padded further gives the same update.
    with mirrored.scope():
        twin = recipe.build_model(params, num_classes=3)
    twin.set_weights(model.get_weights())
    model(inputs, training=True)
    twin({'sequence': noisy, 'length': lengths}, training=True)
    for mine, theirs in zip(model.non_trainable_weights,
                            twin.non_trainable_weights):
        np.testing.assert_allclose(mine.numpy(),
                                   theirs.numpy(),
                                   rtol=1e-4,
                                   atol=1e-5)


def test_a_process_trains_models_of_other_shapes_under_mirrored_in_turn():
    # As tuner trials do: each asks for the strategy again. A second
    # MirroredStrategy over the same devices would reuse the first one's
    # collective keys, and the second all-reduce would fail on a shape
    # mismatch.
    images = np.random.default_rng(2).normal(size=(16, 12, 12, 1))
    for filters in ([3], [5, 7]):
        params = {
            'image_shape': [12, 12, 1],
            'conv_filters': filters,
            'dense_units': 6,
            'learning_rate': 1e-2
        }
        _train_one_step(distribute.make_strategy('mirrored'), convnet.RECIPE,
                        params, {'image': images.astype(np.float32)},
                        np.arange(16) % 3)


@pytest.mark.parametrize('name', ['auto', 'mirrored'])
def test_xla_and_steps_per_execution_train_as_the_plain_step_does(name):
    # The Trainer's speed-ups (apply_speedups) reach the compiled model and
    # change the trained weights by rounding only. XLA stays off under
    # MirroredStrategy over logical CPUs (it cannot read the other
    # replica's variables). No dropout: XLA draws other random numbers.
    images = np.random.default_rng(3).normal(size=(32, 12, 12, 1))
    trained = {}
    for speedups in ({}, {'jit_compile': True, 'steps_per_execution': 2}):
        params = {
            'image_shape': [12, 12, 1],
            'conv_filters': [4],
            'dense_units': 8,
            'dropout': 0.0,
            'learning_rate': 1e-2,
            **speedups
        }
        tf.keras.utils.set_random_seed(5)
        model = _train_one_step(distribute.make_strategy(name), convnet.RECIPE,
                                params, {'image': images.astype(np.float32)},
                                np.arange(32) % 3)
        assert model.jit_compile == (bool(speedups) and name == 'auto')
        assert int(model.steps_per_execution.numpy()) == (2 if speedups else 1)
        assert int(model.optimizer.iterations.numpy()) == 4
        trained[bool(speedups)] = model.get_weights()
    for plain, fast in zip(trained[False], trained[True]):
        np.testing.assert_allclose(plain, fast, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('name,replicas', [('one_device', 1), ('auto', 1),
                                           ('mirrored', 2)])
def test_strategy_by_name(name, replicas):
    assert distribute.make_strategy(name).num_replicas_in_sync == replicas


def test_auto_on_cpu_feeds_the_dataset_itself_to_keras():
    # No distributed-dataset wrapper, whose per-epoch iterators stall.
    dataset = tf.data.Dataset.range(4)
    strategy = distribute.make_strategy('auto')
    assert strategy.experimental_distribute_dataset(dataset) is dataset


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match='unknown strategy'):
        distribute.make_strategy('tpu')


@pytest.mark.parametrize('save_traces', [True, False])
def test_warm_start_loads_the_previous_weights_and_refuses_other_shapes(
        tmp_path, save_traces):
    params = {'image_shape': [12, 12, 1], 'conv_filters': [4], 'dense_units': 8}
    previous = convnet.build_model(params, num_classes=3)
    previous.save(str(tmp_path / 'previous'),
                  save_format='tf',
                  save_traces=save_traces)

    fresh = convnet.build_model(params, num_classes=3)
    assert not np.allclose(
        fresh.get_layer('dense').kernel.numpy(),
        previous.get_layer('dense').kernel.numpy())
    assert weights.warm_start(fresh, str(tmp_path / 'previous'))
    for mine, theirs in zip(fresh.weights, previous.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    wider = convnet.build_model({**params, 'dense_units': 16}, num_classes=3)
    assert not weights.warm_start(wider, str(tmp_path / 'previous'))


def _write_examples(folder, count):
    """`count` gzipped tf.Examples: image [4] = its index, a var-len `steps`."""
    path = folder / 'Split-train'
    path.mkdir()
    with tf.io.TFRecordWriter(str(path / 'data.gz'), 'GZIP') as writer:
        for index in range(count):
            example = tf.train.Example(features=tf.train.Features(
                feature={
                    'image':
                        tf.train.Feature(float_list=tf.train.FloatList(
                            value=[float(index)] * 4)),
                    'steps':
                        tf.train.Feature(float_list=tf.train.FloatList(
                            value=[float(index)] * (index % 5 + 1))),
                    'label':
                        tf.train.Feature(int64_list=tf.train.Int64List(
                            value=[index % 3])),
                }))
            writer.write(example.SerializeToString())
    return [str(path / '*')]


@pytest.mark.parametrize('cache', [False, True])
def test_make_dataset_yields_every_example_once_per_epoch_reshuffled(
        tmp_path, cache):
    from tensorflow_transform.tf_metadata import schema_utils
    pattern = _write_examples(tmp_path, 300)
    schema = schema_utils.schema_from_feature_spec({
        'image': tf.io.FixedLenFeature([4], tf.float32),
        'steps': tf.io.VarLenFeature(tf.float32),
        'label': tf.io.FixedLenFeature([], tf.int64),
    })

    def to_model_inputs(transformed):
        return {
            'image': transformed['image'],
            'steps': tf.sparse.to_dense(transformed['steps'])
        }

    dataset = inputs.make_dataset(pattern,
                                  throughput.data_accessor(str(tmp_path)),
                                  schema,
                                  to_model_inputs,
                                  batch_size=32,
                                  shuffle=True,
                                  seed=1,
                                  cache=cache)
    epochs = []
    for _ in range(2):
        order = []
        for features, label in dataset:
            image = features['image'].numpy()
            steps = features['steps'].numpy()
            assert image.shape[1:] == (4,)
            assert steps.shape[1] == 5  # Padded to the batch's longest.
            index = image[:, 0].astype(int)
            np.testing.assert_array_equal(label.numpy(), index % 3)
            for row, i in enumerate(index):
                np.testing.assert_array_equal(steps[row], [i] * (i % 5 + 1) +
                                              [0] * (4 - i % 5))
            order.extend(index)
        epochs.append(order)
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(300))
    assert epochs[0] != epochs[1]  # A new order each epoch.
    assert epochs[0] != list(range(300))
    # No autotuning model thread, which made dropping each epoch's
    # iterator wait up to a minute (see make_dataset).
    assert dataset.options().autotune.enabled is False


def test_schedule_gives_a_small_data_set_enough_steps_and_fitting_momentum():
    params = {
        'epochs': 15,
        'min_train_steps': 1000,
        'early_stopping_patience': 10
    }
    small = schedule.training_schedule(params, steps_per_epoch=10)
    assert small['epochs'] == 100  # 1000 steps, not 150.
    assert small['early_stopping_patience'] == 20
    # An epoch later, 5% of the old moving averages is left, not 0.99**10.
    assert small['batch_norm_momentum']**10 == pytest.approx(0.05)
    large = schedule.training_schedule(params, steps_per_epoch=469)
    assert large['epochs'] == 15
    assert large['early_stopping_patience'] == 10
    assert large['batch_norm_momentum'] == 0.99
    explicit = schedule.training_schedule({
        **params, 'batch_norm_momentum': 0.9
    }, 10)
    assert explicit['batch_norm_momentum'] == 0.9


def test_a_small_set_trains_on_a_tenth_of_it_a_batch_in_more_steps():
    """FCN's min(N/10, 16) batch; min_train_steps counts steps of the
    configured batch, so the capped batch takes as many examples in more,
    smaller steps. A large set keeps its batch and schedule."""
    fcn_full = {
        'epochs': 60,
        'min_train_steps': 1000,
        'batch_size': 16,
        'max_batch_fraction': 0.1,
        'early_stopping_patience': 10,
        'lr_plateau_steps': 500
    }
    # ArrowHead: 36 training series, 34 of them the training split.
    batch = schedule.fitted_batch_size(fcn_full, train_examples=34)
    assert batch == 3
    small = schedule.training_schedule(fcn_full, math.ceil(34 / 3), batch)
    assert small['epochs'] == math.ceil(math.ceil(1000 * 16 / 3) / 12) == 445
    # 500 steps: 42 epochs of 12 steps, FCN's 50 epochs of 10.
    assert small['lr_plateau_patience'] == 42
    # Two replicas share the capped global batch.
    assert schedule.fitted_batch_size(fcn_full, 34, replicas=2) == 1
    assert schedule.fitted_batch_size(fcn_full, 5) == 1  # Never 0.
    assert schedule.fitted_batch_size({
        **fcn_full, 'max_batch_fraction': 0
    }, 34) == 16
    convnet_full = {**fcn_full, 'epochs': 15, 'batch_size': 128}
    for examples in (60_000, 1350):  # Fashion-MNIST; 1350 image folders.
        assert schedule.fitted_batch_size(convnet_full, examples) == 128
    large = schedule.training_schedule(convnet_full, 469, 128)
    assert large == {
        'epochs': 15,
        'batch_norm_momentum': 0.99,
        'early_stopping_patience': 10,
        'lr_plateau_patience': 2,
        # The default fitted_steps (200) is within one epoch of 469 steps.
        'fitted_patience': 1
    }


def test_inception_time_trains_the_papers_batch_and_patience():
    """InceptionTime's full profile: batches of 64 however small the set
    (the paper's), not the FCN's cap; the rate halves after the paper's 50
    epochs on ACSF1 (91 training series, two steps an epoch)."""
    inception = profiles.MODELS['inception_time'].profiles['full']
    fcn = profiles.MODELS['fcn'].profiles['full']
    for examples in (34, 91, 182):  # ArrowHead, ACSF1, OSULeaf.
        assert schedule.fitted_batch_size(inception, examples) == 64
        assert schedule.fitted_batch_size(fcn,
                                          examples) == min(16, examples // 10)
    batch, steps_per_epoch, acsf1 = schedule.fitted_to_data(inception,
                                                            train_examples=91,
                                                            eval_examples=9)
    assert (batch, steps_per_epoch) == (64, 2)
    assert acsf1['lr_plateau_patience'] == 50


def test_a_set_too_small_to_evaluate_trains_while_its_loss_falls():
    """Under MIN_EVAL_EXAMPLES eval examples the training loss chooses the
    kept epoch; training may then go on to `max_train_steps` and stops when
    the loss has not improved for two plateau patiences (a halved rate did
    not help), not at the fixed `min_train_steps` budget."""
    fcn_full = {
        'epochs': 60,
        'min_train_steps': 1000,
        'max_train_steps': 5000,
        'batch_size': 16,
        'early_stopping_patience': 10,
        'lr_plateau_steps': 500
    }
    # 182 training series in batches of 16 (12 steps), 18 eval series.
    fixed = schedule.training_schedule(fcn_full, 12, 16)
    assert fixed['epochs'] == 84  # 1000 steps: min_train_steps.
    small = schedule.training_schedule(fcn_full, 12, 16, eval_examples=18)
    assert small['epochs'] == math.ceil(5000 / 12) == 417
    assert small['lr_plateau_patience'] == 42
    assert small['early_stopping_patience'] == 2 * 42
    # A capped batch: max_train_steps counts steps of batch_size, as
    # min_train_steps does (ArrowHead: 34 series, batches of 3).
    capped = schedule.training_schedule(fcn_full, 12, 3, eval_examples=2)
    assert capped['epochs'] == math.ceil(math.ceil(5000 * 16 / 3) / 12)
    # Enough eval examples (eval accuracy chooses), or the cap off: the
    # fixed budget and patience.
    for eval_examples, cap in ((settings.MIN_EVAL_EXAMPLES, 5000), (18, 0)):
        assert schedule.training_schedule({
            **fcn_full, 'max_train_steps': cap
        }, 12, 16, eval_examples) == fixed
    assert fixed['early_stopping_patience'] == 16


def test_the_learning_rate_halves_when_the_training_loss_stalls():
    """FCN's ReduceLROnPlateau on the training loss: a rate too small to
    move the loss (a plateau) is halved every `patience` epochs, down to
    `min_learning_rate`; off at factor 0 and under a warm-up schedule."""
    params = {
        'lr_plateau_factor': 0.5,
        'lr_plateau_patience': 2,
        'min_learning_rate': 2e-7,
        'learning_rate': 1e-6
    }
    plateau = schedule.learning_rate_plateau(params, 1e-6)
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, 'softmax')])
    training.compile_model(model, params)
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(32, 4)),
                        rng.integers(0, 2, 32),
                        epochs=8,
                        verbose=0,
                        callbacks=[plateau])
    # Epochs 1-2 do not improve on epoch 0: halved after epoch 2, and so on.
    np.testing.assert_allclose(history.history['lr'],
                               [1e-6] * 3 + [5e-7] * 2 + [2.5e-7] * 2 + [2e-7],
                               rtol=1e-4)
    assert schedule.learning_rate_plateau({
        **params, 'lr_plateau_factor': 0
    }, 1e-6) is None
    warmup = schedule.LinearWarmup(1e-3, 2e-3, 10)
    assert schedule.learning_rate_plateau(params, warmup) is None


def test_a_cosine_decay_takes_the_rate_to_its_floor_over_the_training():
    """`cosine`: from the rate to min_learning_rate along a half cosine
    over every step the training takes (epochs x steps an epoch), after a
    warm-up when there is one; no plateau halving on top. `plateau`: the
    rate as it is."""
    params = {
        'learning_rate_decay': 'cosine',
        'epochs': 5,
        'min_learning_rate': 1e-4,
        'lr_plateau_factor': 0.5,
        'lr_plateau_patience': 2
    }
    rate = schedule.decayed_learning_rate(params, 1e-3, steps_per_epoch=20)
    steps = 5 * 20
    assert float(rate(0)) == pytest.approx(1e-3)
    assert float(rate(steps // 2)) == pytest.approx((1e-3 + 1e-4) / 2)
    assert float(rate(steps)) == pytest.approx(1e-4)
    assert float(rate(10 * steps)) == pytest.approx(1e-4)
    assert schedule.learning_rate_plateau(params, rate) is None
    warmup = schedule.LinearWarmup(1e-3, 2e-3, warmup_steps=20)
    warmed = schedule.decayed_learning_rate(params, warmup, 20)
    assert float(warmed(10)) == pytest.approx(1.5e-3)
    assert float(warmed(20)) == pytest.approx(2e-3)
    assert float(warmed(steps)) == pytest.approx(1e-4)
    assert schedule.decayed_learning_rate(
        {
            **params, 'learning_rate_decay': 'plateau'
        }, 1e-3, 20) == 1e-3
    with pytest.raises(ValueError, match='learning_rate_decay'):
        schedule.decayed_learning_rate({
            **params, 'learning_rate_decay': 'step'
        }, 1e-3, 20)


def test_a_tuner_trial_trains_its_fraction_of_the_epochs():
    params = {'epochs': 15, 'min_train_steps': 1000, 'batch_size': 128}
    assert schedule.training_schedule(params, 422)['epochs'] == 15
    assert schedule.training_schedule({
        **params, 'epochs_fraction': 1 / 3
    }, 422)['epochs'] == 5
    assert schedule.training_schedule({
        **params, 'epochs_fraction': 0.01
    }, 422)['epochs'] == 1


def test_training_length_multiplies_the_epochs_and_both_step_budgets():
    """The search space's `training_length`: a large set's epochs, a small
    set's min_train_steps, and max_train_steps when the training loss
    chooses the epoch."""
    params = {
        'epochs': 15,
        'min_train_steps': 1000,
        'max_train_steps': 5000,
        'batch_size': 128
    }
    for length, large, small, loss_chosen in [(1.0, 15, 100, 500),
                                              (2.0, 30, 200, 1000),
                                              (0.5, 8, 50, 250)]:
        scaled = {**params, 'training_length': length}
        assert schedule.training_schedule(scaled, 422)['epochs'] == large
        assert schedule.training_schedule(scaled, 10)['epochs'] == small
        assert schedule.training_schedule(
            scaled, 10, eval_examples=10)['epochs'] == loss_chosen
    # A trial of a third of the budget, twice as long.
    assert schedule.training_schedule(
        {
            **params, 'training_length': 2.0,
            'epochs_fraction': 1 / 3
        }, 422)['epochs'] == 10


def _epochs_until_stopped(callbacks, losses, accuracies, monitor='loss'):
    """Feeds `callbacks` (on a compiled one-layer model, at rate 1e-3) an
    epoch's logs per loss and accuracy, as model.fit would; returns the
    epochs run (up to the one that stopped training) and each one's rate."""
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, 'softmax')])
    model.build((None, 4))
    training.compile_model(model, {'learning_rate': 1e-3})
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    rates = []
    for epoch, (loss, accuracy) in enumerate(zip(losses, accuracies)):
        logs = {'loss': loss, 'accuracy': accuracy, 'val_accuracy': 0.5}
        rates.append(float(model.optimizer.learning_rate.numpy()))
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if model.stop_training:
            return epoch + 1, rates
    return len(losses), rates


def _stop(monitor='loss', patience=20, fitted_patience=3):
    return schedule.ConvergenceStop(monitor,
                                    'min' if monitor == 'loss' else 'max',
                                    patience=patience,
                                    min_improvement=0.01,
                                    fitted_loss=0.01,
                                    fitted_patience=fitted_patience)


def test_a_fitted_training_set_stops_a_patience_after_it_fits():
    """Training accuracy 1.0 for the fitted patience at a median loss
    under fitted_loss ends training, though the loss still shrinks by a
    third an epoch (a fitted set's logits grow: the loss never stops
    falling), or jumps from epoch to epoch."""
    losses = [0.5 * 0.7**epoch for epoch in range(200)]
    accuracies = [0.9] * 5 + [1.0] * 195
    fitted = next(e for e, loss in enumerate(losses) if loss < 0.01)
    stop = _stop(fitted_patience=3)
    epochs, _ = _epochs_until_stopped([stop], losses, accuracies)
    # The median of epochs fitted - 1, fitted, fitted + 1 is under 0.01.
    assert epochs == fitted + 2
    assert stop.stop_reason == schedule.STOP_FITTED
    assert stop.best_epoch == fitted + 1  # The lowest loss is kept.
    # Small batches: a fitted set's loss jumps, mostly under fitted_loss.
    jumping = [0.3, 0.1] + [0.001, 0.05, 0.002] * 66
    stop = _stop(fitted_patience=3)
    assert _epochs_until_stopped([stop], jumping,
                                 [0.9] * 2 + [1.0] * 198)[0] == 5
    assert stop.stop_reason == schedule.STOP_FITTED
    # One epoch short of fitted (accuracy 0.99) starts the count again.
    accuracies[fitted + 1] = 0.99
    stop = _stop(fitted_patience=3)
    assert _epochs_until_stopped([stop], losses, accuracies)[0] == fitted + 5
    # Off at fitted_patience 0: the loss still counts as falling.
    stop = _stop(fitted_patience=0)
    assert _epochs_until_stopped([stop], losses, accuracies)[0] == 200
    assert stop.stop_reason == schedule.STOP_CAP


def test_the_default_fitted_loss_stops_arrowheads_fcn_where_it_is_fitted():
    """The default fitted_loss ends a run whose small batches hold
    accuracy 1.0 at a median loss just under 0.05: the training losses of
    the last 17 epochs (200 steps) of ArrowHead's FCN in batches of 3,
    where it stopped with the default (a 0.01 tolerance trained it a fifth
    longer, to a lower test accuracy: docs/training-stops.md)."""
    losses = [
        0.0351, 0.0761, 0.0956, 0.0399, 0.0422, 0.0647, 0.0398, 0.0685, 0.0656,
        0.04, 0.0466, 0.0477, 0.0499, 0.0404, 0.051, 0.0745, 0.0899
    ]
    stop = schedule.ConvergenceStop('loss',
                                    'min',
                                    patience=1000,
                                    min_improvement=0.01,
                                    fitted_loss=settings.value({},
                                                               'fitted_loss'),
                                    fitted_patience=len(losses))
    epochs, _ = _epochs_until_stopped([stop], losses + [0.04] * 10,
                                      [1.0] * (len(losses) + 10))
    assert (epochs, stop.stop_reason) == (len(losses), schedule.STOP_FITTED)


def test_a_loss_lower_only_by_crumbs_is_a_plateau():
    """New lows smaller than min_improvement of the loss (the issue's loss
    shrinking by 1e-7) do not count: early stopping after its patience,
    the rate halved after the plateau's."""
    losses = [0.3 - 1e-6 * epoch for epoch in range(100)]
    accuracies = [0.95] * 100
    stop = _stop(patience=20)
    plateau = schedule.learning_rate_plateau(
        {
            'lr_plateau_factor': 0.5,
            'lr_plateau_patience': 8,
            'min_learning_rate': 1e-4,
            'min_loss_improvement': 0.01
        }, 1e-3)
    epochs, rates = _epochs_until_stopped([plateau, stop], losses, accuracies)
    assert epochs == 21
    assert stop.stop_reason == schedule.STOP_PLATEAU
    assert stop.best_epoch == 0
    np.testing.assert_allclose(rates, [1e-3] * 9 + [5e-4] * 8 + [2.5e-4] * 4,
                               rtol=1e-5)
    # Chosen by eval accuracy: no better one for the patience.
    stop = _stop('val_accuracy', patience=20)
    assert _epochs_until_stopped([stop], losses, accuracies)[0] == 21
    assert stop.stop_reason == schedule.STOP_EVAL


def test_a_loss_still_falling_meaningfully_keeps_training():
    """A loss 2% lower each epoch, large (0.5) or small (1e-3), not fitted:
    no early stop and no halved rate, whatever its scale (Keras's plateau
    counted 1e-4 as the least improvement, which halved a small loss's
    rate while it still fell 2% an epoch)."""
    for start in (0.5, 1e-3):
        losses = [start * 0.98**epoch for epoch in range(100)]
        stop = _stop(patience=10)
        plateau = schedule.learning_rate_plateau(
            {
                'lr_plateau_factor': 0.5,
                'lr_plateau_patience': 5,
                'min_learning_rate': 1e-4,
                'min_loss_improvement': 0.01
            }, 1e-3)
        epochs, rates = _epochs_until_stopped([plateau, stop], losses,
                                              [0.99] * 100)
        assert epochs == 100, start
        assert stop.stop_reason == schedule.STOP_CAP
        assert stop.best_epoch == 99
        assert rates == [pytest.approx(1e-3)] * 100, start


def test_the_kept_epoch_is_chosen_by_eval_accuracy_only_when_it_can_tell():
    # A 2-example eval split scores 0, 0.5 or 1: the training loss chooses.
    assert schedule.best_epoch_monitor(2) == ('loss', 'min')
    assert schedule.best_epoch_monitor(settings.MIN_EVAL_EXAMPLES -
                                       1) == ('loss', 'min')
    assert schedule.best_epoch_monitor(
        settings.MIN_EVAL_EXAMPLES) == ('val_accuracy', 'max')
    assert schedule.best_epoch_monitor(6000) == ('val_accuracy', 'max')


def test_batch_norm_recalibration_sets_the_training_data_statistics():
    params = {
        'image_shape': [6, 6, 1],
        'conv_filters': [3],
        'dense_units': 4,
        'dropout': 0.3,
        'batch_norm_momentum': 0.99
    }
    model = convnet.build_model(params, num_classes=2)
    images = np.random.default_rng(2).normal(3.0, 2.0,
                                             size=(64, 6, 6,
                                                   1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(({
        'image': images
    }, np.zeros(64))).batch(16)
    assert weights.recalibrate_batch_norm(model, dataset, 100) == 4
    # The first conv's outputs over all training images: their mean and
    # variance are now the layer's moving statistics.
    conv = keras_model_until(model, 'block0_conv0')(images).numpy()
    norm = model.get_layer('block0_conv0_bn')
    np.testing.assert_allclose(norm.moving_mean.numpy(),
                               conv.mean(axis=(0, 1, 2)),
                               rtol=1e-3,
                               atol=1e-4)
    batch_variances = np.mean(
        [conv[i:i + 16].var(axis=(0, 1, 2)) for i in range(0, 64, 16)], axis=0)
    np.testing.assert_allclose(norm.moving_variance.numpy(),
                               batch_variances,
                               rtol=1e-2)
    # Dropout and momentum are as they were.
    assert model.get_layer('dense_dropout').rate == 0.6
    assert norm.momentum == 0.99


def keras_model_until(model, layer_name):
    return tf.keras.Model(model.inputs, model.get_layer(layer_name).output)
