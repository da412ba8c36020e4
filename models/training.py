"""The training loop every model shares: data, strategy, fit, export.

A model package supplies a `ModelRecipe` (models/recipe.py: how to build
its Keras model, how transformed features become model inputs, its extra
serving signatures); `train` does the rest, the same for every model, in
named steps, and returns a `TrainingReport` (models/training_report.py).
The Trainer's entry point around it is models/trainer.py.

Hyper-parameters arrive in the Trainer's `custom_config` (from
pipeline/configs.py) and may be overridden by a Tuner's `hyperparameters`;
class names and channels come from the data, through the transform graph
(models/data_facts.py).
"""

import contextlib
import dataclasses
import functools
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
)

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from common import names
from common import settings
from models import data_facts
from models import distribute
from models import ensemble
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
from models.training_report import TrainingReport

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras


def hyperparameters(fn_args: 'tfx.components.FnArgs') -> Dict[str, Any]:
    """The run's hyper-parameters: custom_config, the data's, a Tuner's.

    custom_config and what ExampleGen learned from the data (`class_names`,
    `num_channels`: models/data_facts.py), overridden by a Tuner's values.
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

    On a compiled model (inside the strategy's scope): the training, eval and
    predict steps compiled by XLA (`jit_compile`) and `steps_per_execution`
    steps run per call of the step function.

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


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How this process trains: cluster, batches, the data's size, cache."""
    strategy_name: str
    replicas: int
    chief: bool
    workers: int
    # None without parameter servers.
    parameter_servers: Optional[int]
    per_replica_batch: int
    global_batch: int
    # The last batch of an epoch may be short (no drop_remainder).
    steps_per_epoch: int
    # What the training reads: the training split's files, and the eval
    # split's too when it is trained on (train_on_small_eval).
    train_files: List[str]
    train_examples: int
    eval_examples: int
    trained_on_eval: bool
    # cache_plan's.
    cache: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _InputData:
    """The datasets a fit reads, and how to make more of them."""
    tf_transform_output: tft.TFTransformOutput
    to_model_inputs: Callable[..., Any]
    # inputs.make_dataset over the run's data: files -> dataset.
    make: Callable[..., tf.data.Dataset]
    train: Any
    evaluation: Any
    # Where an epoch ends, for datasets that repeat (distributing).
    fit_args: Dict[str, int]
    # Each training input pipeline's per-replica batch, shard and shards
    # (distributing strategies; inputs.distributed_dataset).
    pipelines: List[Dict[str, int]]


@dataclasses.dataclass(frozen=True)
class _LearningRate:
    """The rate to train at, the rate reported and its warm-up steps."""
    rate: LearningRate
    reported: float
    warmup_steps: int


@dataclasses.dataclass(frozen=True)
class _Fit:
    """What `model.fit` did, and the settings it ran under."""
    history: Dict[str, List[float]]
    stopping: schedule.ConvergenceStop
    # The metric the kept epoch is chosen by.
    best_epoch_by: str
    epoch_seconds: List[float]
    steps: int
    lr_plateau: bool
    jit_compile: bool


@dataclasses.dataclass(frozen=True)
class _Network:
    """One trained network: its model, seed, fit and what it transferred."""
    model: keras.Model
    seed: Optional[int]
    fit: _Fit
    transferred: Optional[transfer.Transfer]


def train(fn_args: 'tfx.components.FnArgs',
          recipe: recipe_lib.ModelRecipe,
          params: Params,
          export_model: bool = True) -> TrainingReport:
    """Trains (and exports) in this process, as one replica set of a cluster.

    The steps: the strategy; the plan (batches, cache); the input data; the
    learning rate; the schedule fitted to the data's size (into `params`);
    the model and its fit (each network's, for an ensemble:
    models/ensemble.py); the export.

    Returns:
        What the training did (models/training_report.py).
    """
    tracing.skip_autograph_of_tf_keras()
    strategy = _start_strategy(params)
    plan = _plan(fn_args, params, strategy)
    data = _input_data(fn_args, recipe, params, strategy, plan)
    rate = _learning_rate(params, strategy, plan)
    logging.info('Training with %s: %s, %s',
                 type(strategy).__name__, plan, rate)
    _, _, fitted = schedule.fitted_to_data(params, plan.train_examples,
                                           plan.eval_examples, plan.replicas)
    params.update(fitted)
    logging.info(
        '%d training examples, batch %d, %d steps an epoch; '
        'schedule %s', plan.train_examples, plan.per_replica_batch,
        plan.steps_per_epoch, fitted)
    learning_rate = schedule.decayed_learning_rate(params, rate.rate,
                                                   plan.steps_per_epoch)
    warm_start_from = _warm_start_from(fn_args, params)
    networks = [
        _train_network(fn_args, recipe, params, strategy, plan, data,
                       learning_rate, index, warm_start_from)
        for index in range(ensemble.size(params))
    ]
    model = networks[0].model
    report = _report(params, plan, data, rate, fitted, networks[0].fit,
                     networks[0].transferred)
    if len(networks) > 1:
        report = dataclasses.replace(report,
                                     ensemble=_ensemble_report(networks))
        with strategy.scope():
            model = ensemble.average([network.model for network in networks])
    if not export_model:
        return report
    export_dir = _export(fn_args, recipe, params, model, strategy, plan, data)
    return dataclasses.replace(report,
                               export_dir=export_dir,
                               weights_sha256=weights.weights_digest(model))


def _start_strategy(params: Params) -> tf.distribute.Strategy:
    """The configured strategy, made first; then the seed."""
    name = settings.value(params, 'strategy')
    # MultiWorkerMirroredStrategy must be made before anything starts
    # TensorFlow (the seed, listing devices, any op).
    distribute.prepare_devices(name, int(settings.value(params, 'cpu_devices')))
    strategy = distribute.make_strategy(name)
    if params.get('seed') is not None:
        # Same data and seed, same weights: initial weights, dropout and the
        # shuffle order all draw from it.
        keras.utils.set_random_seed(int(params['seed']))
    return strategy


def _plan(fn_args: 'tfx.components.FnArgs', params: Params,
          strategy: tf.distribute.Strategy) -> _Plan:
    """The batches, steps and cache that fit the data and the replicas."""
    replicas = strategy.num_replicas_in_sync
    train_examples, train_bytes = inputs.split_size(fn_args.train_files)
    eval_examples, eval_bytes = inputs.split_size(fn_args.eval_files)
    train_files = list(fn_args.train_files)
    trained_on_eval = _trains_on_eval(params, eval_examples)
    if trained_on_eval:
        train_files += fn_args.eval_files
        train_examples += eval_examples
        train_bytes += eval_bytes
    cache = cache_plan(params, {'train': train_bytes, 'eval': eval_bytes})
    per_replica_batch, steps_per_epoch, _ = schedule.fitted_to_data(
        params, train_examples, eval_examples, replicas)
    global_batch = per_replica_batch * replicas
    chief, workers = distribute.chief_and_workers(strategy)
    return _Plan(strategy_name=settings.value(params, 'strategy'),
                 replicas=replicas,
                 chief=chief,
                 workers=workers,
                 parameter_servers=distribute.parameter_servers(strategy),
                 per_replica_batch=per_replica_batch,
                 global_batch=global_batch,
                 steps_per_epoch=steps_per_epoch,
                 train_files=train_files,
                 train_examples=train_examples,
                 eval_examples=eval_examples,
                 trained_on_eval=trained_on_eval,
                 cache=cache)


def _trains_on_eval(params: Params, eval_examples: int) -> bool:
    """Whether the training reads the eval split too (train_on_small_eval).

    Only where the eval split is too small to choose the epoch by (the
    training loss chooses it): there it would serve nothing but the printed
    val_ metrics.
    """
    return (bool(settings.value(params, 'train_on_small_eval')) and
            schedule.eval_too_small(eval_examples))


def _input_data(fn_args: 'tfx.components.FnArgs',
                recipe: recipe_lib.ModelRecipe, params: Params,
                strategy: tf.distribute.Strategy, plan: _Plan) -> _InputData:
    """The training and eval datasets, whole or one shard per replica."""
    # transform_graph_path: the Tuner's FnArgs leave the deprecated
    # transform_output unset.
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    schema = tf_transform_output.transformed_metadata.schema
    to_model_inputs = functools.partial(recipe.to_model_inputs, params=params)
    make = functools.partial(
        inputs.make_dataset,
        data_accessor=fn_args.data_accessor,
        schema=schema,
        to_model_inputs=to_model_inputs,
        to_targets=(functools.partial(recipe.to_targets, params=params)
                    if recipe.to_targets else None))
    cached = plan.cache['cached_splits']
    pipelines: List[Dict[str, int]] = []
    if distribute.is_default(strategy):
        train_data = make(plan.train_files,
                          cache=cached[names.TRAIN],
                          batch_size=plan.global_batch,
                          shuffle=True,
                          seed=params.get('seed'))
        evaluation = make(fn_args.eval_files,
                          cache=cached[names.EVAL],
                          batch_size=plan.global_batch,
                          shuffle=False)
        fit_args = {}
    elif distribute.is_parameter_server(strategy):
        # Keras's fit under ParameterServerStrategy: a dataset per worker,
        # made on it, repeated; an epoch is steps sent to any free worker.
        train_data = inputs.per_worker_dataset(
            plan.global_batch, pipelines,
            functools.partial(make,
                              plan.train_files,
                              cache=cached[names.TRAIN],
                              shuffle=True,
                              repeat=True))
        # Shuffled too: the validation steps, spread over workers that each
        # read the split from its start, would see its first part only.
        evaluation = inputs.per_worker_dataset(
            plan.global_batch, [],
            functools.partial(make,
                              fn_args.eval_files,
                              cache=cached[names.EVAL],
                              shuffle=True,
                              repeat=True))
        fit_args = _steps(plan)
    else:
        # Each replica (or worker) reads its own shard through its own
        # iterator, made once for the whole fit: Keras then drops no
        # MultiDeviceIterator between epochs (a stall of up to 60 s each).
        train_data = inputs.distributed_dataset(
            strategy, plan.global_batch, pipelines,
            functools.partial(make,
                              plan.train_files,
                              cache=cached[names.TRAIN],
                              shuffle=True,
                              seed=params.get('seed'),
                              repeat=True))
        evaluation = inputs.distributed_dataset(
            strategy, plan.global_batch, [],
            functools.partial(make,
                              fn_args.eval_files,
                              cache=cached[names.EVAL],
                              shuffle=False,
                              repeat=True))
        fit_args = _steps(plan)
    return _InputData(tf_transform_output=tf_transform_output,
                      to_model_inputs=to_model_inputs,
                      make=make,
                      train=train_data,
                      evaluation=evaluation,
                      fit_args=fit_args,
                      pipelines=pipelines)


def _steps(plan: _Plan) -> Dict[str, int]:
    """Where an epoch ends, for Keras, of datasets that repeat."""
    return dict(steps_per_epoch=plan.steps_per_epoch,
                validation_steps=math.ceil(plan.eval_examples /
                                           plan.global_batch))


def _learning_rate(params: Params, strategy: tf.distribute.Strategy,
                   plan: _Plan) -> _LearningRate:
    """The configured rate; distributing, scaled, after a linear warm-up."""
    configured = float(settings.value(params, 'learning_rate'))
    if distribute.is_default(strategy):
        return _LearningRate(rate=configured,
                             reported=configured,
                             warmup_steps=0)
    target = schedule.scaled_learning_rate(params, plan.replicas)
    warmup = round(
        float(settings.value(params, 'warmup_epochs')) * plan.steps_per_epoch)
    if target != configured and warmup > 0:
        return _LearningRate(rate=schedule.LinearWarmup(configured, target,
                                                        warmup),
                             reported=target,
                             warmup_steps=warmup)
    return _LearningRate(rate=target, reported=target, warmup_steps=0)


def _warm_start_from(fn_args: 'tfx.components.FnArgs',
                     params: Params) -> Optional[str]:
    """The last model to start from: when the run asks, for one network."""
    if not (fn_args.base_model and params.get('warm_start')):
        return None
    if ensemble.size(params) > 1:
        # Warm-started from the last model, all would start from its first
        # network and learn alike.
        logging.info(
            'An ensemble of %d networks: each starts afresh, not '
            'from %s', ensemble.size(params), fn_args.base_model)
        return None
    return fn_args.base_model


def _train_network(fn_args: 'tfx.components.FnArgs',
                   recipe: recipe_lib.ModelRecipe, params: Params,
                   strategy: tf.distribute.Strategy, plan: _Plan,
                   data: _InputData, learning_rate: LearningRate, index: int,
                   warm_start_from: Optional[str]) -> _Network:
    """Builds and fits network `index` (of an ensemble; 0 alone)."""
    seed = ensemble.seed_network(params, index)
    model, transferred = _build_model(recipe, params, strategy,
                                      len(params['class_names']), learning_rate,
                                      warm_start_from)
    fit = _fit(fn_args, model, params, plan, data, learning_rate, transferred,
               f'network{index}' if index else None)
    return _Network(model=model, seed=seed, fit=fit, transferred=transferred)


def _build_model(
    recipe: recipe_lib.ModelRecipe,
    params: Params,
    strategy: tf.distribute.Strategy,
    num_classes: int,
    learning_rate: LearningRate,
    warm_start_from: Optional[str] = None
) -> Tuple[keras.Model, Optional[transfer.Transfer]]:
    """The compiled model in the strategy's scope, and what it transferred.

    Its weights start from the SavedModel `warm_start_from` when given
    (`_warm_start_from`).
    """
    transferred = None
    with strategy.scope():
        model = recipe.build_model(params, num_classes)
        if params.get('transfer_from'):
            transferred = transfer.start_from(model, params)
        (recipe.compile_model or compile_model)(model, params, learning_rate)
        apply_speedups(model, params)
        if warm_start_from:
            weights.warm_start(model, warm_start_from)
    return model, transferred


def _fit(fn_args: 'tfx.components.FnArgs',
         model: keras.Model,
         params: Params,
         plan: _Plan,
         data: _InputData,
         learning_rate: LearningRate,
         transferred: Optional[transfer.Transfer],
         log_subdir: Optional[str] = None) -> _Fit:
    """Fits until the schedule or the stopping rules end it.

    The weights of the best epoch are restored whether or not training
    stops early. TensorBoard's logs go to the model run directory, or
    `log_subdir` in it (an ensemble's later networks).
    """
    monitor, mode = schedule.best_epoch_monitor(plan.eval_examples)
    stopping = schedule.ConvergenceStop(
        monitor,
        mode,
        patience=int(params['early_stopping_patience']),
        min_improvement=float(settings.value(params, 'min_loss_improvement')),
        fitted_loss=float(settings.value(params, 'fitted_loss')),
        fitted_patience=int(params.get('fitted_patience') or 0))
    timer = _EpochTimer()
    callbacks = [
        stopping, timer,
        (progress.EpochProgress()
         if plan.parameter_servers else progress.TrainingProgress())
    ]
    plateau = schedule.learning_rate_plateau(params, learning_rate)
    if plateau:
        callbacks.insert(0, plateau)
    jit_compile = bool(model.jit_compile)
    if transferred:
        callbacks.append(transferred.callback)
    with contextlib.ExitStack() as stack:
        if fn_args.model_run_dir:  # A Tuner's trials have none.
            log_dir = stack.enter_context(
                _own_dir(fn_args.model_run_dir, plan.chief))
            if log_subdir:
                log_dir = os.path.join(log_dir, log_subdir)
            callbacks.append(
                keras.callbacks.TensorBoard(log_dir=log_dir,
                                            update_freq='epoch'))
        history = model.fit(data.train,
                            validation_data=data.evaluation,
                            epochs=int(params['epochs']),
                            callbacks=callbacks,
                            verbose=0,
                            **data.fit_args)
    return _Fit(history=history.history,
                stopping=stopping,
                best_epoch_by=monitor,
                epoch_seconds=timer.seconds,
                steps=int(model.optimizer.iterations.numpy()),
                lr_plateau=bool(plateau),
                jit_compile=jit_compile)


def _report(params: Params, plan: _Plan, data: _InputData, rate: _LearningRate,
            fitted: Params, fit: _Fit,
            transferred: Optional[transfer.Transfer]) -> TrainingReport:
    """What the training did, from its steps."""
    history = fit.history
    kept_epoch = fit.stopping.best_epoch
    return TrainingReport(
        strategy=plan.strategy_name,
        replicas=plan.replicas,
        workers=plan.workers,
        # Distributing, as the input pipelines split the global batch.
        per_replica_batch=(data.pipelines[0]['batch']
                           if data.pipelines else plan.per_replica_batch),
        global_batch=plan.global_batch,
        learning_rate=rate.reported,
        warmup_steps=rate.warmup_steps,
        steps_per_epoch=plan.steps_per_epoch,
        train_examples=plan.train_examples,
        **plan.cache,
        family=params.get(names.FAMILY),
        input_shards=([[p['shard'], p['shards']] for p in data.pipelines]
                      if data.pipelines else None),
        transfer=transferred.report if transferred else None,
        eval_examples=plan.eval_examples,
        trained_on_eval=plan.trained_on_eval,
        best_epoch_by=fit.best_epoch_by,
        **fitted,
        lr_plateau=fit.lr_plateau,
        learning_rate_decay=settings.value(params, 'learning_rate_decay'),
        jit_compile=fit.jit_compile,
        steps_per_execution=int(settings.value(params, 'steps_per_execution')),
        chief=plan.chief,
        best_val_accuracy=_kept_val_accuracy(fit),
        steps=fit.steps,
        epoch_seconds=fit.epoch_seconds,
        val_accuracy=[
            round(float(v), 4) for v in history.get('val_accuracy', [])
        ],
        kept_epoch=kept_epoch,
        stop_reason=fit.stopping.stop_reason,
        epoch_learning_rates=[float(v) for v in history.get('lr', [])],
        history={
            name: [round(float(v), 4) for v in values]
            for name, values in history.items()
            if name != 'lr'
        },
        parameter_servers=plan.parameter_servers)


def _ensemble_report(networks: List[_Network]) -> List[Params]:
    """Each network's seed and training, as training.json lists them."""
    return [
        ensemble.network_report(n.seed, n.fit.steps, n.fit.stopping.best_epoch,
                                n.fit.stopping.stop_reason,
                                _kept_val_accuracy(n.fit), n.fit.epoch_seconds)
        for n in networks
    ]


def _kept_val_accuracy(fit: _Fit) -> float:
    """The eval accuracy of the epoch whose weights are kept."""
    return float(fit.history['val_accuracy'][fit.stopping.best_epoch])


def _export(fn_args: 'tfx.components.FnArgs', recipe: recipe_lib.ModelRecipe,
            params: Params, model: keras.Model,
            strategy: tf.distribute.Strategy, plan: _Plan,
            data: _InputData) -> str:
    """Exports the serving model; returns the folder it went to.

    Every worker saves (the variables are read collectively), only the chief
    where the model belongs; the others into a folder they remove.
    """
    if distribute.is_default(strategy):
        # Outside one device, the pass would have to run per replica.
        weights.recalibrate_batch_norm(
            model, data.train,
            int(settings.value(params, 'recalibration_batches')))
    exporter = export.export_serving_model
    if recipe.export_model is not None:
        exporter = functools.partial(
            recipe.export_model,
            params=params,
            train_data=data.make(plan.train_files,
                                 cache=plan.cache['cached_splits'][names.TRAIN],
                                 batch_size=plan.global_batch,
                                 shuffle=False))
    with _own_dir(fn_args.serving_model_dir, plan.chief) as export_dir:
        exporter(
            model, data.tf_transform_output, params['class_names'],
            data.to_model_inputs, {
                name: functools.partial(make_signature, params=params)
                for name, make_signature in recipe.extra_signatures.items()
            }, export_dir)
    return export_dir


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
