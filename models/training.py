"""The training loop every model shares: data, strategy, fit, export.

A model package supplies a `ModelRecipe` (how to build its Keras model, how
transformed features become model inputs, its extra serving signatures) and a
one-line `run_fn` that calls `run(fn_args, recipe)`. Everything else, the
same for every model, lives here once.

Hyper-parameters arrive in the Trainer's `custom_config` (from
pipeline/configs.py) and may be overridden by a Tuner's `hyperparameters`.
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, List, Optional, TYPE_CHECKING

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import dataset_options

from models import distribute
from models import export
from models import features

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras

ModelInputsFn = Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]
Params = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """What a model package contributes to the shared training loop.

    Attributes:
        build_model: (hyper-parameters, number of classes) -> an uncompiled
            Keras model with a softmax output.
        to_model_inputs: (transformed features, hyper-parameters) -> the
            model's inputs.
        extra_signatures: Serving signatures besides `serving_default`.
        search_space: Declares the family's hyper-parameters on a KerasTuner
            `HyperParameters` and returns the params their values stand for
            (models/tuning.py); None when the family is not tuned.
    """

    build_model: Callable[[Params, int], keras.Model]
    to_model_inputs: Callable[[Dict[str, tf.Tensor], Params],
                              Dict[str, tf.Tensor]]
    extra_signatures: Dict[str, export.SignatureFactory]
    search_space: Optional[Callable[[Any], Params]] = None


def hyperparameters(fn_args: 'tfx.components.FnArgs') -> Dict[str, Any]:
    """The run's hyper-parameters: custom_config, overridden by a Tuner's."""
    params = dict(fn_args.custom_config or {})
    tuned = fn_args.hyperparameters
    if tuned:
        params.update(tuned.get('values', tuned) if isinstance(tuned, dict)
                      else tuned)
    return params


# Examples parsed per step when filling the in-memory cache, and the shuffle
# buffer drawn from it (TFXIO's own default buffer).
_CACHE_PARSE_BATCH = 1024
_SHUFFLE_BUFFER = 10_000


def make_dataset(file_pattern: List[str],
                 data_accessor: 'tfx.components.DataAccessor',
                 schema: schema_pb2.Schema,
                 to_model_inputs: ModelInputsFn,
                 batch_size: int,
                 shuffle: bool,
                 seed: Optional[int] = None,
                 cache: bool = False) -> tf.data.Dataset:
    """One epoch of (model inputs, label) batches of transformed examples.

    Args:
        file_pattern: The split's transformed example files.
        data_accessor: The Trainer's TFXIO data accessor.
        schema: The transformed examples' schema.
        to_model_inputs: Transformed features -> the model's inputs.
        batch_size: Examples per batch (the global batch).
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        cache: Read, decompress and parse the files once and keep the parsed
            examples in memory, so that later epochs only shuffle and batch
            them. Needs memory for the whole split.
    """
    if not cache:
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(
                batch_size=batch_size, label_key=features.LABEL_KEY,
                num_epochs=1, shuffle=shuffle, shuffle_seed=seed),
            schema)
    else:
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(
                batch_size=_CACHE_PARSE_BATCH, label_key=features.LABEL_KEY,
                num_epochs=1, shuffle=False),
            schema).unbatch().cache()
        if shuffle:
            dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed,
                                      reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    # tf.data's autotuning thread sleeps up to 60 s between rounds, and in
    # TF 2.16 dropping an iterator waits for it to wake: Keras drops one every
    # epoch, so epochs stalled idle for up to a minute. Without it, AUTOTUNE
    # still means one map call per core and a prefetch buffer that grows when
    # the model waits for data.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.map(
        lambda inputs, label: (to_model_inputs(inputs), label),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE).with_options(options)


def compile_model(model: keras.Model, params: Dict[str, Any]) -> None:
    """Adam on sparse categorical cross-entropy, clipped when configured."""
    clip_norm = params.get('clip_norm')
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=params.get('learning_rate', 1e-3),
            global_clipnorm=clip_norm or None),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy')])


def count_batches(dataset: tf.data.Dataset) -> int:
    """Batches in one epoch of `dataset` (one pass over it; a cached
    dataset's pass fills its cache)."""
    return int(dataset.reduce(tf.constant(0, tf.int64),
                              lambda count, _: count + 1))


def training_schedule(params: Params, steps_per_epoch: int) -> Params:
    """Epochs, batch-norm momentum and early-stopping patience that fit
    the data's size.

    - Epochs: at least `epochs`, and enough for `min_train_steps` steps, so
      that a small data set (few steps an epoch) still trains enough.
    - Batch-norm momentum: the moving averages forget all but 5% of what
      they held an epoch ago (at most 0.99, Keras's default). Each epoch's
      evaluation, which early stopping chooses by, then sees statistics of
      the current weights, not of weights many epochs old; with ten steps an
      epoch, 0.99 keeps 90% of the previous epoch's averages.
    - Patience: `early_stopping_patience` epochs, or a fifth of the epochs
      when that is more.
    An explicit `batch_norm_momentum` in params wins.
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    epochs = max(int(params['epochs']),
                 math.ceil(int(params.get('min_train_steps', 0)) /
                           steps_per_epoch))
    momentum = params.get('batch_norm_momentum') or min(
        0.99, 0.05 ** (1.0 / steps_per_epoch))
    patience = max(int(params.get('early_stopping_patience', 0)), epochs // 5)
    return {'epochs': epochs, 'batch_norm_momentum': float(momentum),
            'early_stopping_patience': patience}


def recalibrate_batch_norm(model: keras.Model, dataset: tf.data.Dataset,
                           max_batches: int) -> int:
    """Sets every batch-norm layer's moving mean and variance to the
    average over training batches of the final weights (precise BN).

    The moving averages mix statistics of the weights of the last few
    hundred steps; after this pass they are those of the weights exported.
    Dropout is off during the pass, as it is when serving.

    Returns:
        The number of batches averaged (0 when the model has no batch norm).
    """
    norms = [layer for layer in model.submodules
             if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    dropouts = [layer for layer in model.submodules
                if isinstance(layer, keras.layers.Dropout)]
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


def run(fn_args: 'tfx.components.FnArgs', recipe: ModelRecipe,
        params: Optional[Params] = None, export_model: bool = True) -> float:
    """Trains the recipe's model under the configured strategy and exports it.

    Args:
        fn_args: The Trainer's (or the Tuner's) arguments.
        recipe: The model family's recipe.
        params: Hyper-parameters (default: the run's, `hyperparameters`,
            with a Tuner's best values in the recipe's search space).
        export_model: Export to `fn_args.serving_model_dir`; a Tuner's trial
            only trains.

    Returns:
        The best epoch's accuracy on the eval split (its weights are kept).
    """
    if params is None:
        params = hyperparameters(fn_args)
        if fn_args.hyperparameters and recipe.search_space:
            # KerasTuner is imported only when a Tuner ran.
            from models import tuning  # pylint: disable=import-outside-toplevel
            params.update(tuning.tuned_params(recipe.search_space,
                                              fn_args.hyperparameters))
    if params.get('seed') is not None:
        # Same data and seed, same weights: initial weights, dropout and the
        # shuffle order all draw from it.
        keras.utils.set_random_seed(int(params['seed']))
    class_names = params['class_names']
    strategy = distribute.make_strategy(params.get('strategy', 'auto'))
    replicas = strategy.num_replicas_in_sync
    global_batch = int(params['batch_size']) * replicas
    logging.info('Training with %s over %d replicas, global batch %d',
                 type(strategy).__name__, replicas, global_batch)

    # transform_graph_path: the Tuner's FnArgs leave the deprecated
    # transform_output unset.
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    schema = tf_transform_output.transformed_metadata.schema
    to_model_inputs = functools.partial(recipe.to_model_inputs, params=params)
    cache = bool(params['cache_examples'])
    train = make_dataset(fn_args.train_files, fn_args.data_accessor,
                         schema, to_model_inputs,
                         global_batch, shuffle=True, seed=params.get('seed'),
                         cache=cache)
    evaluation = make_dataset(fn_args.eval_files, fn_args.data_accessor,
                              schema, to_model_inputs,
                              global_batch, shuffle=False, cache=cache)

    steps_per_epoch = count_batches(train)
    params.update(training_schedule(params, steps_per_epoch))
    logging.info('%d steps an epoch; schedule %s', steps_per_epoch,
                 {k: params[k] for k in ('epochs', 'batch_norm_momentum',
                                         'early_stopping_patience')})

    with strategy.scope():
        model = recipe.build_model(params, len(class_names))
        compile_model(model, params)
        if fn_args.base_model and params.get('warm_start'):
            warm_start(model, fn_args.base_model)

    # Accuracy, what the Evaluator judges; the weights of the best epoch
    # are restored whether or not training stops early.
    early_stopping = keras.callbacks.EarlyStopping(
        monitor='val_accuracy', mode='max',
        patience=int(params['early_stopping_patience']),
        restore_best_weights=True, verbose=1)
    callbacks = [early_stopping]
    if fn_args.model_run_dir:  # A Tuner's trials have none.
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=fn_args.model_run_dir, update_freq='epoch'))
    model.fit(train, validation_data=evaluation,
              epochs=int(params['epochs']), callbacks=callbacks, verbose=2)
    if not export_model:
        return float(early_stopping.best)
    recalibrate_batch_norm(model, train,
                           int(params.get('recalibration_batches', 100)))
    export.export_serving_model(
        model, tf_transform_output, class_names, to_model_inputs,
        {name: functools.partial(make, params=params)
         for name, make in recipe.extra_signatures.items()},
        fn_args.serving_model_dir)
    return float(early_stopping.best)


def warm_start(model: keras.Model, base_model_dir: str) -> bool:
    """Loads the weights of a previously exported model when they match.

    Weights are matched by name (layers are named in build_model) and shape.

    Returns:
        True if every weight was loaded; False (logged) when the base model's
        architecture differs, in which case training starts afresh.
    """
    loaded = tf.saved_model.load(base_model_dir)
    # Every variable the SavedModel holds, whether or not Keras traces were
    # saved with it (export.py saves none, so `loaded.variables` is absent).
    base = {v.name: v for v in tf.train.TrackableView(loaded).descendants()
            if isinstance(v, tf.Variable)}
    if any(w.name not in base or base[w.name].shape != w.shape
           for w in model.weights):
        logging.warning('Base model %s does not match this architecture; '
                        'training from scratch', base_model_dir)
        return False
    for weight in model.weights:
        weight.assign(base[weight.name])
    logging.info('Warm-started from %s', base_model_dir)
    return True
