"""The training loop every model shares: data, strategy, fit, export.

A model package supplies a `ModelRecipe` (models/recipe.py: how to build
its Keras model, how transformed features become model inputs, its extra
serving signatures); `train` does the rest, the same for every model. The
Trainer's entry point around it is models/trainer.py.

Hyper-parameters arrive in the Trainer's `custom_config` (from
pipeline/configs.py) and may be overridden by a Tuner's `hyperparameters`;
class names and channels come from the data, through the transform graph
(models/data_facts.py).
"""

import contextlib
import functools
import math
import os
import shutil
import tempfile
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterator,
    List,
    Optional,
)

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from common import names
from common import settings
from models import data_facts
from models import distribute
from models import export
from models import inputs
from models import progress
from models import recipe as recipe_lib
from models import schedule
from models import tracing
from models import transfer
from models import weights
from models.schedule import LearningRate  # Type aliases.
from models.schedule import Params  # Type aliases.

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras


def hyperparameters(fn_args: 'tfx.components.FnArgs') -> Dict[str, Any]:
    """The run's hyper-parameters.

    The run's hyper-parameters: custom_config and what ExampleGen learned from
    the data (`class_names`, `num_channels`: models/data_facts.py), overridden
    by a Tuner's.
    """
    params = {
        **(fn_args.custom_config or {}),
        **data_facts.from_fn_args(fn_args)
    }
    tuned = fn_args.hyperparameters
    if tuned:
        params.update(
            tuned.get('values', tuned) if isinstance(tuned, dict) else tuned)
    return params


def compile_model(model: keras.Model,
                  params: Dict[str, Any],
                  learning_rate: Optional[LearningRate] = None) -> None:
    """Adam on sparse categorical cross-entropy, clipped when configured.

    `learning_rate` (default: the configured one) may be a schedule.
    """
    clip_norm = params.get('clip_norm')
    if learning_rate is None:
        learning_rate = settings.value(params, 'learning_rate')
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate,
                                        global_clipnorm=clip_norm or None),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy')])


def apply_speedups(model: keras.Model, params: Dict[str, Any]) -> None:
    """Applies the speed-ups a plain Keras script does not.

    What the Trainer does that a plain Keras script does not, on a compiled
    model (inside the strategy's scope): the training, eval and predict steps
    compiled by XLA (`jit_compile`) and `steps_per_execution` steps run per call
    of the step function.

    XLA only without distribution (TensorFlow's default strategy, what
    `auto` is on a machine without GPUs): under MirroredStrategy over
    logical CPU devices, XLA cannot read a replica's variables from another
    device (https://www.tensorflow.org/xla/known_issues).

    Export does not depend on them: the serving signatures call the model
    through their own tf.functions, without XLA.
    """
    # Inside a strategy's scope, has_strategy() tells a distributing one.
    model.jit_compile = (bool(settings.value(params, 'jit_compile')) and
                         not tf.distribute.has_strategy())
    steps = int(settings.value(params, 'steps_per_execution'))
    if steps > 1:
        model.steps_per_execution = steps


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


# Parsed examples take about this many times their serialized bytes in
# memory (tensors, plus the cache's per-element overhead).
_PARSED_BYTES_PER_SERIALIZED = 2


def free_memory_bytes() -> int:
    """The memory the kernel says is available (MemAvailable)."""
    try:
        with open('/proc/meminfo', encoding='ascii') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def cache_plan(params: Params, split_bytes: Dict[str, int]) -> Dict[str, Any]:
    """Which splits the Trainer keeps in memory, and why.

    The training split is cached if its parsed examples (estimated at
    _PARSED_BYTES_PER_SERIALIZED times its records' bytes) fit in the
    budget, `cache_memory_mb` MiB or, at 0, a quarter of the free memory;
    then the eval split in what is left. A split that does not fit is read,
    decompressed and parsed from its files every epoch (streamed), in
    memory no larger than the shuffle buffer and a batch.

    Returns:
        `cached_splits` (split -> bool), `cache_budget_bytes` and the
        `split_bytes` estimated in memory: for the training report.
    """
    budget_mb = float(settings.value(params, 'cache_memory_mb') or 0)
    budget = (int(budget_mb *
                  2**20) if budget_mb > 0 else free_memory_bytes() // 4)
    needed = {
        split: size * _PARSED_BYTES_PER_SERIALIZED
        for split, size in split_bytes.items()
    }
    cached, left = {}, budget
    for split in ('train', 'eval'):
        cached[split] = (bool(settings.value(params, 'cache_examples')) and
                         needed[split] <= left)
        left -= needed[split] if cached[split] else 0
    for split, keep in cached.items():
        if not keep:
            logging.info(
                'streaming the %s split: %d bytes parsed, over the '
                'memory budget of %d bytes', split, needed[split], budget)
    return {
        'cached_splits': cached,
        'cache_budget_bytes': budget,
        'split_bytes_in_memory': needed
    }


def train(fn_args: 'tfx.components.FnArgs',
          recipe: recipe_lib.ModelRecipe,
          params: Params,
          export_model: bool = True) -> Dict[str, Any]:
    """Trains (and exports) in this process.

    Trains (and exports) in this process, as one replica set of the cluster.

    Returns:
        What the training did: strategy, replicas, workers, batch sizes,
        learning rate, steps, epoch seconds, the best eval accuracy, where
        the model went, a digest of the final weights.
    """
    tracing.skip_autograph_of_tf_keras()
    name = settings.value(params, 'strategy')
    # The strategy first: MultiWorkerMirroredStrategy must be made before
    # anything starts TensorFlow (the seed, listing devices, any op).
    distribute.prepare_devices(name, int(settings.value(params, 'cpu_devices')))
    strategy = distribute.make_strategy(name)
    if params.get('seed') is not None:
        # Same data and seed, same weights: initial weights, dropout and the
        # shuffle order all draw from it.
        keras.utils.set_random_seed(int(params['seed']))
    class_names = params['class_names']
    replicas = strategy.num_replicas_in_sync
    train_examples, train_bytes = inputs.split_size(fn_args.train_files)
    eval_examples, eval_bytes = inputs.split_size(fn_args.eval_files)
    cached = cache_plan(params, {'train': train_bytes, 'eval': eval_bytes})
    # The last batch of an epoch may be short (no drop_remainder).
    per_replica_batch, steps_per_epoch, fitted = schedule.fitted_to_data(
        params, train_examples, eval_examples, replicas)
    global_batch = per_replica_batch * replicas
    chief, num_workers = distribute.chief_and_workers(strategy)

    # transform_graph_path: the Tuner's FnArgs leave the deprecated
    # transform_output unset.
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    schema = tf_transform_output.transformed_metadata.schema
    to_model_inputs = functools.partial(recipe.to_model_inputs, params=params)
    make = functools.partial(inputs.make_dataset,
                             data_accessor=fn_args.data_accessor,
                             schema=schema,
                             to_model_inputs=to_model_inputs)
    learning_rate: LearningRate = float(settings.value(params, 'learning_rate'))
    report: Dict[str, Any] = {
        'strategy': name,
        'replicas': replicas,
        'workers': num_workers,
        'per_replica_batch': per_replica_batch,
        'global_batch': global_batch,
        'learning_rate': learning_rate,
        'warmup_steps': 0,
        'steps_per_epoch': None,
        'train_examples': train_examples,
        **cached
    }
    if names.FAMILY in params:  # A Tuner chose the family.
        report[names.FAMILY] = params[names.FAMILY]
    fit_args: Dict[str, Any] = {}
    if distribute.is_default(strategy):
        train_data = make(fn_args.train_files,
                          cache=cached['cached_splits']['train'],
                          batch_size=global_batch,
                          shuffle=True,
                          seed=params.get('seed'))
        evaluation = make(fn_args.eval_files,
                          cache=cached['cached_splits']['eval'],
                          batch_size=global_batch,
                          shuffle=False)
    else:
        # Each replica (or worker) reads its own shard through its own
        # iterator, made once for the whole fit: Keras then drops no
        # MultiDeviceIterator between epochs (a stall of up to 60 s each).
        pipelines: List[Dict[str, int]] = []
        train_data = inputs.distributed_dataset(
            strategy, global_batch, pipelines,
            functools.partial(make,
                              fn_args.train_files,
                              cache=cached['cached_splits']['train'],
                              shuffle=True,
                              seed=params.get('seed'),
                              repeat=True))
        evaluation = inputs.distributed_dataset(
            strategy, global_batch, [],
            functools.partial(make,
                              fn_args.eval_files,
                              cache=cached['cached_splits']['eval'],
                              shuffle=False,
                              repeat=True))
        # It repeats: Keras is told where an epoch ends.
        fit_args = dict(steps_per_epoch=steps_per_epoch,
                        validation_steps=math.ceil(eval_examples /
                                                   global_batch))
        target = schedule.scaled_learning_rate(params, replicas)
        warmup = round(
            float(settings.value(params, 'warmup_epochs')) * steps_per_epoch)
        if target != learning_rate and warmup > 0:
            learning_rate = schedule.LinearWarmup(learning_rate, target, warmup)
        else:
            learning_rate = target
        report.update(learning_rate=target,
                      warmup_steps=warmup if isinstance(
                          learning_rate, schedule.LinearWarmup) else 0,
                      steps_per_epoch=steps_per_epoch,
                      per_replica_batch=pipelines[0]['batch'],
                      input_shards=[[p['shard'], p['shards']] for p in pipelines
                                   ])
    logging.info('Training with %s: %s', type(strategy).__name__, report)

    params.update(fitted)
    logging.info(
        '%d training examples, batch %d, %d steps an epoch; '
        'schedule %s', train_examples, per_replica_batch, steps_per_epoch,
        fitted)
    learning_rate = schedule.decayed_learning_rate(params, learning_rate,
                                                   steps_per_epoch)

    transferred = None
    with strategy.scope():
        model = recipe.build_model(params, len(class_names))
        if params.get('transfer_from'):
            transferred = transfer.start_from(model, params)
            report['transfer'] = transferred.report
        (recipe.compile_model or compile_model)(model, params, learning_rate)
        apply_speedups(model, params)
        if fn_args.base_model and params.get('warm_start'):
            weights.warm_start(model, fn_args.base_model)

    # The weights of the best epoch are restored whether or not training
    # stops early.
    monitor, mode = schedule.best_epoch_monitor(eval_examples)
    report.update(eval_examples=eval_examples, best_epoch_by=monitor)
    early_stopping = schedule.ConvergenceStop(
        monitor,
        mode,
        patience=int(params['early_stopping_patience']),
        min_improvement=float(settings.value(params, 'min_loss_improvement')),
        fitted_loss=float(settings.value(params, 'fitted_loss')),
        fitted_patience=int(params.get('fitted_patience') or 0))
    timer = _EpochTimer()
    callbacks = [early_stopping, timer, progress.TrainingProgress()]
    plateau = schedule.learning_rate_plateau(params, learning_rate)
    if plateau:
        callbacks.insert(0, plateau)
    report.update(fitted,
                  steps_per_epoch=steps_per_epoch,
                  lr_plateau=bool(plateau),
                  learning_rate_decay=settings.value(params,
                                                     'learning_rate_decay'),
                  jit_compile=bool(model.jit_compile),
                  steps_per_execution=int(
                      settings.value(params, 'steps_per_execution')))
    if transferred:
        callbacks.append(transferred.callback)
    with contextlib.ExitStack() as stack:
        if fn_args.model_run_dir:  # A Tuner's trials have none.
            log_dir = stack.enter_context(_own_dir(fn_args.model_run_dir,
                                                   chief))
            callbacks.append(
                keras.callbacks.TensorBoard(log_dir=log_dir,
                                            update_freq='epoch'))
        history = model.fit(train_data,
                            validation_data=evaluation,
                            epochs=int(params['epochs']),
                            callbacks=callbacks,
                            verbose=0,
                            **fit_args)
    kept_epoch = early_stopping.best_epoch
    report.update(
        chief=chief,
        # The eval accuracy of the epoch whose weights are kept.
        best_val_accuracy=float(history.history['val_accuracy'][kept_epoch]),
        steps=int(model.optimizer.iterations.numpy()),
        epoch_seconds=timer.seconds,
        val_accuracy=[
            round(float(v), 4) for v in history.history.get('val_accuracy', [])
        ],
        kept_epoch=kept_epoch,
        # Why it stopped: schedule.STOP_REASONS.
        stop_reason=early_stopping.stop_reason,
        # The rate each epoch trained at (lr_plateau).
        epoch_learning_rates=[float(v) for v in history.history.get('lr', [])],
        # Every metric by epoch: the run's report draws them.
        history={
            name: [round(float(v), 4) for v in values]
            for name, values in history.history.items()
            if name != 'lr'
        })
    if not export_model:
        return report
    if distribute.is_default(strategy):
        # Outside one device, the pass would have to run per replica.
        weights.recalibrate_batch_norm(
            model, train_data,
            int(settings.value(params, 'recalibration_batches')))
    # Every worker saves (the variables are read collectively), only the
    # chief where the model belongs; the others into a folder they remove.
    exporter = export.export_serving_model
    if recipe.export_model is not None:
        exporter = functools.partial(recipe.export_model,
                                     params=params,
                                     train_data=make(
                                         fn_args.train_files,
                                         cache=cached['cached_splits']['train'],
                                         batch_size=global_batch,
                                         shuffle=False))
    with _own_dir(fn_args.serving_model_dir, chief) as export_dir:
        exporter(
            model, tf_transform_output, class_names, to_model_inputs, {
                name: functools.partial(make_signature, params=params)
                for name, make_signature in recipe.extra_signatures.items()
            }, export_dir)
    report.update(export_dir=export_dir,
                  weights_sha256=weights.weights_digest(model))
    return report


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
