"""The training loop every model shares: data, strategy, fit, export.

A model package supplies a `ModelRecipe` (how to build its Keras model, how
transformed features become model inputs, its extra serving signatures) and a
one-line `run_fn` that calls `run(fn_args, recipe)`. Everything else, the
same for every model, lives here once.

Hyper-parameters arrive in the Trainer's `custom_config` (from
pipeline/configs.py) and may be overridden by a Tuner's `hyperparameters`;
class names and channels come from the data, through the transform graph
(models/data_facts.py).
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
)

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import dataset_options

from models import data_facts
from models import distribute
from models import export
from models import features
from models import progress
from models import transfer
from models import workers

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras

ModelInputsFn = Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]
Params = Dict[str, Any]
LearningRate = Union[float, keras.optimizers.schedules.LearningRateSchedule]
# What `run` did, as JSON, in the Trainer's model run directory.
TRAINING_REPORT = 'training.json'


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
        compile_model: (model, params, learning rate) -> None, in place of
            `compile_model` (cross-entropy); its metrics must include one
            named `accuracy`, which chooses the kept epoch.
        export_model: In place of export.export_serving_model, with the
            same arguments and `params` and `train_data` (the training
            split's batches in a fixed order, one pass).
    """

    build_model: Callable[[Params, int], keras.Model]
    to_model_inputs: Callable[[Dict[str, tf.Tensor], Params],
                              Dict[str, tf.Tensor]]
    extra_signatures: Dict[str, export.SignatureFactory]
    search_space: Optional[Callable[[Any], Params]] = None
    compile_model: Optional[Callable[..., None]] = None
    export_model: Optional[Callable[..., None]] = None


def hyperparameters(fn_args: 'tfx.components.FnArgs') -> Dict[str, Any]:
    """The run's hyper-parameters: custom_config and what ExampleGen learned
    from the data (`class_names`, `num_channels`: models/data_facts.py),
    overridden by a Tuner's."""
    params = {**(fn_args.custom_config or {}),
              **data_facts.from_fn_args(fn_args)}
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
                 cache: bool = False,
                 num_shards: int = 1,
                 shard_index: int = 0,
                 repeat: bool = False) -> tf.data.Dataset:
    """One epoch of (model inputs, label) batches of transformed examples.

    Args:
        file_pattern: The split's transformed example files.
        data_accessor: The Trainer's TFXIO data accessor.
        schema: The transformed examples' schema.
        to_model_inputs: Transformed features -> the model's inputs.
        batch_size: Examples per batch (the global batch, or one
            replica's share of it).
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        cache: Read, decompress and parse the files once and keep the parsed
            examples in memory, so that later epochs only shuffle and batch
            them. Needs memory for the whole split.
        num_shards: Input pipelines reading the split (replicas or workers);
            this one keeps every `num_shards`-th example from `shard_index`.
        shard_index: This pipeline's index.
        repeat: Repeat the epoch forever (reshuffled each time), for a
            distributed dataset fitted for a given number of steps.
    """
    if not (cache or num_shards > 1):
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
            schema).unbatch()
        if num_shards > 1:
            # Sharded by example (DATA), not by file (AUTO, FILE): Transform
            # writes a split as one file, which cannot be divided.
            dataset = dataset.shard(num_shards, shard_index)
        if cache:
            dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed,
                                      reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    if repeat:
        dataset = dataset.repeat()
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


def compile_model(model: keras.Model, params: Dict[str, Any],
                  learning_rate: Optional[LearningRate] = None) -> None:
    """Adam on sparse categorical cross-entropy, clipped when configured.

    `learning_rate` (default: the configured one) may be a schedule.
    """
    clip_norm = params.get('clip_norm')
    if learning_rate is None:
        learning_rate = params.get('learning_rate', 1e-3)
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate,
            global_clipnorm=clip_norm or None),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy')])


def count_batches(dataset: tf.data.Dataset) -> int:
    """Batches in one epoch of `dataset` (one pass over it; a cached
    dataset's pass fills its cache)."""
    return int(dataset.reduce(tf.constant(0, tf.int64),
                              lambda count, _: count + 1))


def fitted_batch_size(params: Params, train_examples: int,
                      replicas: int = 1) -> int:
    """One replica's batch: `batch_size`, or less on a small data set.

    The global batch is at most `max_batch_fraction` of the training
    examples (the FCN authors' rule, min(N/10, 16): Wang et al. 2017, Fawaz
    et al. 2019), so that an epoch of a few dozen examples is still several
    noisy steps, not one or two near-full-batch ones. 0 turns the cap off.
    """
    batch = int(params['batch_size'])
    fraction = float(params.get('max_batch_fraction') or 0)
    if fraction > 0:
        cap = int(fraction * int(train_examples)) // max(int(replicas), 1)
        batch = min(batch, max(cap, 1))
    return batch


def training_schedule(params: Params, steps_per_epoch: int,
                      batch_size: Optional[int] = None) -> Params:
    """Epochs, batch-norm momentum, early-stopping and learning-rate
    plateau patience that fit the data's size.

    - Epochs: at least `epochs`, and enough for `min_train_steps` steps of
      the configured `batch_size`, so that a small data set (few steps an
      epoch) still trains enough. `batch_size` (the batch trained with,
      default the configured one) below the configured one (see
      fitted_batch_size) makes that many more, smaller steps: the same
      number of examples, about the same computation.
    - Batch-norm momentum: the moving averages forget all but 5% of what
      they held an epoch ago (at most 0.99, Keras's default). Each epoch's
      evaluation, which early stopping chooses by, then sees statistics of
      the current weights, not of weights many epochs old; with ten steps an
      epoch, 0.99 keeps 90% of the previous epoch's averages.
    - Patience: `early_stopping_patience` epochs, or a fifth of the epochs
      when that is more.
    - Learning-rate plateau patience: the epochs that make
      `lr_plateau_steps` steps. FCN's 50 epochs of a small set are about
      500 steps (batch N/10: 10 steps an epoch); a patience counted in
      epochs, a fortieth of ours (FCN: 50 of 2000), measured 132 steps on
      ArrowHead, too few to tell a plateau from the noise of batches of 3:
      the rate was at its floor by epoch 96 of 445, the training loss
      still 0.5.
    An explicit `batch_norm_momentum` in params wins.
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    configured = int(params.get('batch_size') or 1)
    min_steps = math.ceil(int(params.get('min_train_steps', 0)) * configured
                          / max(int(batch_size or configured), 1))
    epochs = max(int(params['epochs']),
                 math.ceil(min_steps / steps_per_epoch))
    momentum = params.get('batch_norm_momentum') or min(
        0.99, 0.05 ** (1.0 / steps_per_epoch))
    patience = max(int(params.get('early_stopping_patience', 0)), epochs // 5)
    plateau = max(1, math.ceil(int(params.get('lr_plateau_steps') or 0)
                               / steps_per_epoch))
    return {'epochs': epochs, 'batch_norm_momentum': float(momentum),
            'early_stopping_patience': patience,
            'lr_plateau_patience': plateau}


def learning_rate_plateau(params: Params, learning_rate: LearningRate
                          ) -> Optional[keras.callbacks.Callback]:
    """Halves (`lr_plateau_factor`) the learning rate when the training
    loss has not improved for `lr_plateau_patience` epochs (from
    training_schedule), down to `min_learning_rate`: the FCN authors'
    ReduceLROnPlateau (factor 0.5, patience 50 epochs, min_lr 1e-4). The
    training loss, not an eval metric: a small data set's eval split is
    too small to tell epochs apart (best_epoch_monitor).

    None when off (factor 0 or 1) or when the rate is already a schedule
    (the warm-up of many replicas), which Keras cannot reset.
    """
    factor = float(params.get('lr_plateau_factor') or 0)
    if not 0 < factor < 1 or not isinstance(learning_rate, float):
        return None
    return keras.callbacks.ReduceLROnPlateau(
        monitor='loss', mode='min', factor=factor,
        patience=int(params['lr_plateau_patience']),
        min_lr=float(params.get('min_learning_rate') or 0), verbose=1)


# With fewer eval examples than this, eval accuracy moves in steps too
# coarse to choose an epoch by (two examples: 0, 0.5 or 1; measured on
# ArrowHead's cut: an epoch at eval 1.0 gave test accuracy 0.39).
MIN_EVAL_EXAMPLES = 50


def best_epoch_monitor(eval_examples: int) -> Tuple[str, str]:
    """(Keras metric, mode) that chooses the epoch whose weights are kept.

    Eval accuracy, what the Evaluator judges, when the eval split is large
    enough to tell epochs apart; else the training loss, as the FCN's
    authors choose the epoch of a model trained without a validation set
    (Wang et al. 2017; Fawaz et al. 2019).
    """
    if eval_examples >= MIN_EVAL_EXAMPLES:
        return 'val_accuracy', 'max'
    return 'loss', 'min'


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


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """From `initial` to `target` linearly over `warmup_steps`, then flat.

    The "gradual warm-up" of large-minibatch training (Goyal et al., 2017):
    a learning rate scaled up with the global batch is reached gradually,
    from the rate of one replica's batch.
    """

    def __init__(self, initial: float, target: float, warmup_steps: int):
        super().__init__()
        self.initial = float(initial)
        self.target = float(target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        done = tf.minimum(tf.cast(step, tf.float32)
                          / float(max(self.warmup_steps, 1)), 1.0)
        return self.initial + (self.target - self.initial) * done

    def get_config(self) -> Dict[str, Any]:
        return {'initial': self.initial, 'target': self.target,
                'warmup_steps': self.warmup_steps}


def scaled_learning_rate(params: Params, replicas: int) -> float:
    """The configured learning rate scaled to the global batch.

    `learning_rate` is the rate for one replica's batch (`batch_size`);
    `learning_rate_scaling` says how it grows with the replicas: `linear`
    (Goyal et al.), `sqrt`, or `none`.
    """
    base = float(params.get('learning_rate', 1e-3))
    scaling = params.get('learning_rate_scaling', 'linear')
    factors = {'linear': replicas, 'sqrt': math.sqrt(replicas), 'none': 1}
    if scaling not in factors:
        raise ValueError(f'learning_rate_scaling {scaling!r}: expected one '
                         f'of {sorted(factors)}')
    return base * factors[scaling]


def count_examples(file_pattern: List[str]) -> int:
    """The records in a split's (gzipped) TFRecord files."""
    files = sorted(f for pattern in file_pattern
                   for f in tf.io.gfile.glob(pattern))
    compression = 'GZIP' if files and all(
        f.endswith('.gz') for f in files) else ''
    return int(tf.data.TFRecordDataset(files, compression).reduce(
        np.int64(0), lambda count, _: count + 1))


class _EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def __init__(self):
        super().__init__()
        self.seconds: List[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.monotonic() - self._started, 2))


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight's value: equal on workers that agree."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def run(fn_args: 'tfx.components.FnArgs', recipe: ModelRecipe,
        params: Optional[Params] = None, export_model: bool = True) -> float:
    """Trains the recipe's model under the configured strategy and exports it.

    `multi_worker` outside a cluster (no TF_CONFIG) starts the configured
    number of worker processes here (models/workers.py), each of which trains
    (`train`) inside the cluster. The chief writes what the training did
    (`TRAINING_REPORT` in the model run directory).

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
    if (params.get('strategy') == 'multi_worker' and export_model
            and not workers.in_cluster()):
        report = workers.launch(fn_args, recipe, params)
    else:
        report = train(fn_args, recipe, params, export_model)
    if report['chief'] and export_model:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir,
                                            TRAINING_REPORT), 'w') as f:
            json.dump(report, f)
    return report['best_val_accuracy']


def train(fn_args: 'tfx.components.FnArgs', recipe: ModelRecipe,
          params: Params, export_model: bool = True) -> Dict[str, Any]:
    """Trains (and exports) in this process, as one replica set of the
    cluster.

    Returns:
        What the training did: strategy, replicas, workers, batch sizes,
        learning rate, steps, epoch seconds, the best eval accuracy, where
        the model went, a digest of the final weights.
    """
    name = params.get('strategy', 'auto')
    # The strategy first: MultiWorkerMirroredStrategy must be made before
    # anything starts TensorFlow (the seed, listing devices, any op).
    distribute.prepare_devices(name, int(params.get('cpu_devices', 2)))
    strategy = distribute.make_strategy(name)
    if params.get('seed') is not None:
        # Same data and seed, same weights: initial weights, dropout and the
        # shuffle order all draw from it.
        keras.utils.set_random_seed(int(params['seed']))
    class_names = params['class_names']
    replicas = strategy.num_replicas_in_sync
    train_examples = count_examples(fn_args.train_files)
    per_replica_batch = fitted_batch_size(params, train_examples, replicas)
    global_batch = per_replica_batch * replicas
    chief, num_workers = distribute.chief_and_workers(strategy)

    # transform_graph_path: the Tuner's FnArgs leave the deprecated
    # transform_output unset.
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    schema = tf_transform_output.transformed_metadata.schema
    to_model_inputs = functools.partial(recipe.to_model_inputs, params=params)
    make = functools.partial(make_dataset, data_accessor=fn_args.data_accessor,
                             schema=schema, to_model_inputs=to_model_inputs,
                             cache=bool(params['cache_examples']))
    learning_rate: LearningRate = float(params.get('learning_rate', 1e-3))
    report: Dict[str, Any] = {
        'strategy': name, 'replicas': replicas,
        'workers': num_workers, 'per_replica_batch': per_replica_batch,
        'global_batch': global_batch, 'learning_rate': learning_rate,
        'warmup_steps': 0, 'steps_per_epoch': None,
        'train_examples': train_examples}
    fit_args: Dict[str, Any] = {}
    eval_examples = count_examples(fn_args.eval_files)
    if distribute.is_default(strategy):
        train_data = make(fn_args.train_files, batch_size=global_batch,
                          shuffle=True, seed=params.get('seed'))
        evaluation = make(fn_args.eval_files, batch_size=global_batch,
                          shuffle=False)
    else:
        # Each replica (or worker) reads its own shard through its own
        # iterator, made once for the whole fit: Keras then drops no
        # MultiDeviceIterator between epochs (a stall of up to 60 s each).
        inputs: List[Dict[str, int]] = []
        train_data = distributed_dataset(
            strategy, global_batch, inputs, functools.partial(
                make, fn_args.train_files, shuffle=True,
                seed=params.get('seed'), repeat=True))
        evaluation = distributed_dataset(
            strategy, global_batch, [], functools.partial(
                make, fn_args.eval_files, shuffle=False, repeat=True))
        steps = math.ceil(train_examples / global_batch)
        fit_args = dict(steps_per_epoch=steps, validation_steps=math.ceil(
            eval_examples / global_batch))
        target = scaled_learning_rate(params, replicas)
        warmup = round(float(params.get('warmup_epochs', 1)) * steps)
        if target != learning_rate and warmup > 0:
            learning_rate = LinearWarmup(learning_rate, target, warmup)
        else:
            learning_rate = target
        report.update(learning_rate=target, warmup_steps=warmup
                      if isinstance(learning_rate, LinearWarmup) else 0,
                      steps_per_epoch=steps,
                      per_replica_batch=inputs[0]['batch'],
                      input_shards=[[i['shard'], i['shards']] for i in inputs])
    logging.info('Training with %s: %s', type(strategy).__name__, report)

    # Distributed input repeats: its steps were counted from the examples.
    steps_per_epoch = (fit_args['steps_per_epoch'] if fit_args
                       else count_batches(train_data))
    schedule = training_schedule(params, steps_per_epoch, per_replica_batch)
    params.update(schedule)
    logging.info('%d training examples, batch %d, %d steps an epoch; '
                 'schedule %s', train_examples, per_replica_batch,
                 steps_per_epoch, schedule)

    transferred = None
    with strategy.scope():
        model = recipe.build_model(params, len(class_names))
        if params.get('transfer_from'):
            transferred = transfer.start_from(model, params, steps_per_epoch,
                                              learning_rate)
            learning_rate = transferred.learning_rate
            report['transfer'] = transferred.report
        (recipe.compile_model or compile_model)(model, params,
                                                 learning_rate)
        if fn_args.base_model and params.get('warm_start'):
            warm_start(model, fn_args.base_model)

    # The weights of the best epoch are restored whether or not training
    # stops early.
    monitor, mode = best_epoch_monitor(eval_examples)
    report.update(eval_examples=eval_examples, best_epoch_by=monitor)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode,
        patience=int(params['early_stopping_patience']),
        restore_best_weights=True, verbose=1)
    timer = _EpochTimer()
    callbacks = [early_stopping, timer, progress.TrainingProgress()]
    plateau = learning_rate_plateau(params, learning_rate)
    if plateau:
        callbacks.insert(0, plateau)
    report.update(schedule, steps_per_epoch=steps_per_epoch,
                  lr_plateau=bool(plateau))
    if transferred:
        callbacks.append(transferred.callback)
    with contextlib.ExitStack() as stack:
        if fn_args.model_run_dir:  # A Tuner's trials have none.
            log_dir = stack.enter_context(
                _own_dir(fn_args.model_run_dir, chief))
            callbacks.append(keras.callbacks.TensorBoard(
                log_dir=log_dir, update_freq='epoch'))
        history = model.fit(
            train_data, validation_data=evaluation,
            epochs=int(params['epochs']), callbacks=callbacks, verbose=0,
            **fit_args)
    kept_epoch = early_stopping.best_epoch
    report.update(chief=chief,
                  # The eval accuracy of the epoch whose weights are kept.
                  best_val_accuracy=float(
                      history.history['val_accuracy'][kept_epoch]),
                  steps=int(model.optimizer.iterations.numpy()),
                  epoch_seconds=timer.seconds,
                  val_accuracy=[round(float(v), 4) for v in
                                history.history.get('val_accuracy', [])],
                  kept_epoch=kept_epoch,
                  # The rate each epoch trained at (lr_plateau).
                  epoch_learning_rates=[
                      float(v) for v in history.history.get('lr', [])],
                  # Every metric by epoch: the run's report draws them.
                  history={name: [round(float(v), 4) for v in values]
                           for name, values in history.history.items()
                           if name != 'lr'})
    if not export_model:
        return report
    if distribute.is_default(strategy):
        # Outside one device, the pass would have to run per replica.
        recalibrate_batch_norm(model, train_data,
                               int(params.get('recalibration_batches', 100)))
    # Every worker saves (the variables are read collectively), only the
    # chief where the model belongs; the others into a folder they remove.
    exporter = export.export_serving_model
    if recipe.export_model is not None:
        exporter = functools.partial(
            recipe.export_model, params=params, train_data=make(
                fn_args.train_files, batch_size=global_batch, shuffle=False))
    with _own_dir(fn_args.serving_model_dir, chief) as export_dir:
        exporter(
            model, tf_transform_output, class_names, to_model_inputs,
            {name: functools.partial(make_signature, params=params)
             for name, make_signature in recipe.extra_signatures.items()},
            export_dir)
    report.update(export_dir=export_dir, weights_sha256=weights_digest(model))
    return report


def distributed_dataset(strategy: tf.distribute.Strategy, global_batch: int,
                        inputs: List[Dict[str, int]],
                        make: Callable[..., tf.data.Dataset]):
    """`make(batch_size=, num_shards=, shard_index=)` for every replica (one
    strategy over local devices) or every worker (many workers), each with
    its shard of the examples and its share of the global batch.

    `inputs` gets, for each input pipeline made here, its per-replica
    `batch`, its `shard` and the number of `shards`.
    """
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(global_batch)
        inputs.append({'batch': batch, 'shard': context.input_pipeline_id,
                       'shards': context.num_input_pipelines})
        return make(batch_size=batch,
                    num_shards=context.num_input_pipelines,
                    shard_index=context.input_pipeline_id)

    if isinstance(strategy, tf.distribute.MirroredStrategy):
        # One pipeline per replica, each iterated by itself on the host:
        # no MultiDeviceIterator, whose own tf.data pipeline keeps the
        # autotuning thread that stalls dropping an iterator.
        options = tf.distribute.InputOptions(
            experimental_replication_mode=(
                tf.distribute.InputReplicationMode.PER_REPLICA),
            experimental_fetch_to_device=False)
    else:
        options = tf.distribute.InputOptions()
    return strategy.distribute_datasets_from_function(dataset_fn, options)


@contextlib.contextmanager
def _own_dir(path: str, chief: bool) -> Iterator[str]:
    """`path` on the chief; elsewhere a temporary folder, removed after."""
    if chief:
        yield path
        return
    temporary = tempfile.mkdtemp(prefix='worker-')
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


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
        logging.warning('Base model %s does not match this architecture; '
                        'training from scratch', base_model_dir)
        return False
    for weight in model.weights:
        weight.assign(base[weight.name])
    logging.info('Warm-started from %s', base_model_dir)
    return True
