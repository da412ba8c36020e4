"""How long and how fast a model trains, fitted to the data and replicas.

Batch size, epochs, batch-norm momentum, patience, the learning rate's
scaling, warm-up, plateau or cosine decay, and the metric that chooses the
epoch whose weights are kept, from the data's size and the replicas.
"""

import math
import statistics
from typing import Any, Dict, List, Optional, Tuple, Union

import tensorflow as tf

from common import settings

keras = tf.keras

Params = Dict[str, Any]
LearningRate = Union[float, keras.optimizers.schedules.LearningRateSchedule]
# Batch-norm moving averages' momentum where no schedule has set one from
# the steps an epoch (Keras's default), and the most a schedule sets.
MAX_BATCH_NORM_MOMENTUM = 0.99


def batch_norm_momentum(params: Params) -> float:
    """The momentum a model's batch-norm layers take from `params`.

    `batch_norm_momentum` 0 (its default) means "from the steps an epoch":
    `training_schedule` sets it before the model is built; a model built
    without one takes MAX_BATCH_NORM_MOMENTUM.
    """
    return float(
        settings.value(params, 'batch_norm_momentum') or
        MAX_BATCH_NORM_MOMENTUM)


def fitted_batch_size(params: Params,
                      train_examples: int,
                      replicas: int = 1) -> int:
    """One replica's batch: `batch_size`, or less on a small data set.

    The global batch is at most `max_batch_fraction` of the training
    examples (the FCN authors' rule, min(N/10, 16): Wang et al. 2017, Fawaz
    et al. 2019), so that an epoch of a few dozen examples is still several
    noisy steps, not one or two near-full-batch ones. 0 turns the cap off.
    """
    batch = int(params['batch_size'])
    fraction = float(settings.value(params, 'max_batch_fraction'))
    if fraction > 0:
        cap = int(fraction * int(train_examples)) // max(int(replicas), 1)
        batch = min(batch, max(cap, 1))
    return batch


def fitted_to_data(params: Params,
                   train_examples: int,
                   eval_examples: int,
                   replicas: int = 1) -> Tuple[int, int, Params]:
    """The Trainer's batch and schedule for a data set of this size.

    Returns:
        One replica's batch (fitted_batch_size), the steps an epoch of the
        global batch, and the schedule (training_schedule) fitted to them.
    """
    per_replica_batch = fitted_batch_size(params, train_examples, replicas)
    steps_per_epoch = math.ceil(
        int(train_examples) / (per_replica_batch * max(int(replicas), 1)))
    return per_replica_batch, steps_per_epoch, training_schedule(
        params, steps_per_epoch, per_replica_batch, eval_examples)


def training_schedule(params: Params,
                      steps_per_epoch: int,
                      batch_size: Optional[int] = None,
                      eval_examples: Optional[int] = None) -> Params:
    """The schedule that fits the data's size.

    Epochs, batch-norm momentum, early-stopping and learning-rate plateau
    patience that fit the data's size.

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
    - Too few eval examples to choose an epoch by (`eval_examples` under
      settings.MIN_EVAL_EXAMPLES: the training loss chooses,
      best_epoch_monitor):
      training goes on while the training loss still falls, up to
      `max_train_steps` (counted as `min_train_steps` is), and stops when
      it has not improved (by more than `min_loss_improvement` of itself,
      ConvergenceStop) for two learning-rate plateau patiences (a halved
      rate did not bring it down either), or when the training set is
      fitted (`fitted_steps`), rather than at the
      `min_train_steps` a large set needs: a fixed budget ended OSULeaf's
      training with its loss still falling (0.19 after 1009 steps; FCN's
      authors train 2000 epochs). `max_train_steps` 0 keeps the fixed
      budget.
    - Fitted patience (ConvergenceStop): the epochs that make
      `fitted_steps` steps (0: never stop as fitted).
    - `training_length` (default 1, a dimension of the Tuner's search
      space) multiplies all three: `epochs`, `min_train_steps` and
      `max_train_steps`.
    - A Tuner's trial (`epochs_fraction`, from `tune_epochs_fraction`)
      trains that fraction of the epochs, at least one: trials are ranked
      at a shorter budget than the Trainer then trains.
    An explicit `batch_norm_momentum` in params wins.
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    configured = int(params.get('batch_size') or 1)
    length = float(settings.value(params, 'training_length'))

    def epochs_for(steps_key: str) -> int:
        """Epochs that make `params[steps_key]` steps.

        Epochs of `params[steps_key]` (times `training_length`) steps of the
        configured batch.
        """
        steps = math.ceil(length * int(params.get(steps_key) or 0) *
                          configured / max(int(batch_size or configured), 1))
        return math.ceil(steps / steps_per_epoch)

    epochs = max(math.ceil(length * int(params['epochs'])),
                 epochs_for('min_train_steps'), 1)
    momentum = params.get('batch_norm_momentum') or min(
        MAX_BATCH_NORM_MOMENTUM, 0.05**(1.0 / steps_per_epoch))
    patience = max(int(settings.value(params, 'early_stopping_patience')),
                   epochs // 5)
    plateau = max(
        1,
        math.ceil(
            int(settings.value(params, 'lr_plateau_steps')) / steps_per_epoch))
    if (params.get('max_train_steps') and eval_examples is not None and
            eval_too_small(eval_examples)):
        epochs = max(epochs, epochs_for('max_train_steps'))
        patience = max(int(settings.value(params, 'early_stopping_patience')),
                       2 * plateau)
    fitted = int(settings.value(params, 'fitted_steps'))
    fraction = float(params.get('epochs_fraction') or 1.0)
    if fraction < 1.0:
        epochs = max(1, math.ceil(fraction * epochs))
    return {
        'epochs': epochs,
        'batch_norm_momentum': float(momentum),
        'early_stopping_patience': patience,
        'lr_plateau_patience': plateau,
        'fitted_patience': math.ceil(fitted / steps_per_epoch)
    }


def learning_rate_plateau(
        params: Params,
        learning_rate: LearningRate) -> Optional[keras.callbacks.Callback]:
    """Halves the learning rate when the training loss stalls.

    Halves (`lr_plateau_factor`) the learning rate when the training loss has
    not improved (by more than `min_loss_improvement` of itself: `improved`,
    as early stopping counts) for `lr_plateau_patience` epochs (from
    training_schedule), down to `min_learning_rate`: the FCN authors'
    ReduceLROnPlateau (factor 0.5, patience 50 epochs, min_lr 1e-4), whose
    least improvement is an absolute 1e-4. The training loss, not an eval
    metric: a small data set's eval split is too small to tell epochs apart
    (best_epoch_monitor).

    None when off (factor 0 or 1) or when the rate is already a schedule
    (the warm-up of many replicas, a cosine decay), which Keras cannot
    reset.
    """
    factor = float(settings.value(params, 'lr_plateau_factor'))
    if not 0 < factor < 1 or not isinstance(learning_rate, float):
        return None
    return _RelativePlateau(float(settings.value(params,
                                                 'min_loss_improvement')),
                            monitor='loss',
                            mode='min',
                            factor=factor,
                            patience=int(params['lr_plateau_patience']),
                            min_lr=float(
                                settings.value(params, 'min_learning_rate')),
                            verbose=1)


def improved(current: float, best: float, mode: str,
             min_improvement: float) -> bool:
    """Whether `current` improves on `best`.

    A loss (`mode` 'min') counts as lower only when below `best` by more
    than the fraction `min_improvement` of it (Keras's `min_delta`, scaled
    to the loss, so that a loss of 1e-4 shrinking by 1e-7 an epoch does not
    count); an accuracy ('max') when higher at all.
    """
    if mode == 'max':
        return current > best
    if not math.isfinite(best):
        return current < best
    return current < best - float(min_improvement) * abs(best)


class _RelativePlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose "improved" is `improved`'s."""

    def __init__(self, min_improvement: float, **kwargs):
        self.min_improvement = float(min_improvement)
        super().__init__(**kwargs)

    def _reset(self):
        super()._reset()
        share = self.min_improvement
        self.monitor_op = lambda current, best: improved(
            current, best, 'min', share)


# Why training stopped (the training report's `stop_reason`).
STOP_CAP = 'cap'  # Every epoch of the schedule ran.
STOP_EVAL = 'early_stop_on_eval'  # No better eval accuracy for a patience.
STOP_PLATEAU = 'plateau'  # No lower training loss for a patience.
STOP_FITTED = 'fitted'  # The training set is fitted (ConvergenceStop).
STOP_REASONS = (STOP_CAP, STOP_EVAL, STOP_PLATEAU, STOP_FITTED)


class ConvergenceStop(keras.callbacks.EarlyStopping):
    """Early stopping that sees convergence and says why it stopped.

    It keeps the best epoch's weights and names why training stopped
    (`stop_reason`):

    - The monitored metric (best_epoch_monitor) improves as `improved`
      says: a loss only by more than `min_improvement` of itself.
      `patience` epochs without: STOP_EVAL (eval accuracy) or
      STOP_PLATEAU (training loss).
    - Fitted: training accuracy 1.0 in each of the last `fitted_patience`
      epochs, and their median training loss under `fitted_loss`:
      STOP_FITTED. The median, as small batches make a fitted set's loss
      jump (BasicMotions in batches of 3: 0.001 to 0.07 at accuracy 1.0),
      which broke every run of epochs each under the tolerance. A loss
      that still shrinks geometrically on a fitted set (1e-4, 1e-5, ...)
      improves by any relative threshold; this notices it.
      `fitted_patience` 0 turns it off.
    - Every epoch ran: STOP_CAP.
    """

    def __init__(self, monitor: str, mode: str, patience: int,
                 min_improvement: float, fitted_loss: float,
                 fitted_patience: int):
        super().__init__(monitor=monitor,
                         mode=mode,
                         patience=patience,
                         restore_best_weights=True,
                         verbose=1)
        self.mode = mode
        self.min_improvement = float(min_improvement)
        self.fitted_loss = float(fitted_loss)
        self.fitted_patience = int(fitted_patience)
        # The training losses of the last epochs (up to fitted_patience)
        # at training accuracy 1.0 since the last one below it.
        self.fitted_losses: List[float] = []
        self.stop_reason = STOP_CAP

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.fitted_losses = []
        self.stop_reason = STOP_CAP

    def _is_improvement(self, monitor_value, reference_value):
        return improved(monitor_value, reference_value, self.mode,
                        self.min_improvement)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.stopped_epoch == epoch and epoch > 0:
            self.stop_reason = (STOP_PLATEAU
                                if self.monitor == 'loss' else STOP_EVAL)
            return
        logs = logs or {}
        if logs.get('accuracy', 0.0) >= 1.0:
            self.fitted_losses.append(float(logs.get('loss', math.inf)))
            del self.fitted_losses[:-max(self.fitted_patience, 1)]
        else:
            self.fitted_losses = []
        if (0 < self.fitted_patience <= len(self.fitted_losses) and
                statistics.median(self.fitted_losses) < self.fitted_loss):
            self.stopped_epoch = epoch
            self.stop_reason = STOP_FITTED
            self.model.stop_training = True


LEARNING_RATE_DECAYS = settings.LEARNING_RATE_DECAYS


def decayed_learning_rate(params: Params, learning_rate: LearningRate,
                          steps_per_epoch: int) -> LearningRate:
    """The rate as `learning_rate_decay` says it falls during training.

    `plateau`: `learning_rate` as it is; learning_rate_plateau halves it
    when the training loss stalls, which on a large data set, whose loss
    still falls when training ends, may never happen. `cosine`: from the
    rate down to `min_learning_rate` along a half cosine over all the
    training's steps (Loshchilov & Hutter 2017, without restarts), after
    the warm-up of many replicas when there is one.
    """
    decay = settings.value(params, 'learning_rate_decay')
    if decay not in LEARNING_RATE_DECAYS:
        raise ValueError(f'learning_rate_decay {decay!r}: expected one of '
                         f'{list(LEARNING_RATE_DECAYS)}')
    if decay == 'plateau':
        return learning_rate
    steps = int(params['epochs']) * max(int(steps_per_epoch), 1)
    warmup = learning_rate if isinstance(learning_rate, LinearWarmup) else None
    peak = warmup.target if warmup else float(learning_rate)
    floor = min(float(settings.value(params, 'min_learning_rate')), peak)
    warmup_steps = warmup.warmup_steps if warmup else 0
    # Without a warm-up target, CosineDecay decays from its initial rate.
    return keras.optimizers.schedules.CosineDecay(
        warmup.initial if warmup else peak,
        max(steps - warmup_steps, 1),
        alpha=floor / peak,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup_steps)


def eval_too_small(eval_examples: int) -> bool:
    """Whether an eval split this size is too small to choose an epoch by."""
    return eval_examples < settings.MIN_EVAL_EXAMPLES


def best_epoch_monitor(eval_examples: int) -> Tuple[str, str]:
    """(Keras metric, mode) that chooses the epoch whose weights are kept.

    Eval accuracy, what the Evaluator judges, when the eval split is large
    enough to tell epochs apart; else the training loss, as the FCN's
    authors choose the epoch of a model trained without a validation set
    (Wang et al. 2017; Fawaz et al. 2019).
    """
    if eval_too_small(eval_examples):
        return 'loss', 'min'
    return 'val_accuracy', 'max'


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
        done = tf.minimum(
            tf.cast(step, tf.float32) / float(max(self.warmup_steps, 1)), 1.0)
        return self.initial + (self.target - self.initial) * done

    def get_config(self) -> Dict[str, Any]:
        return {
            'initial': self.initial,
            'target': self.target,
            'warmup_steps': self.warmup_steps
        }


def scaled_learning_rate(params: Params, replicas: int) -> float:
    """The configured learning rate scaled to the global batch.

    `learning_rate` is the rate for one replica's batch (`batch_size`);
    `learning_rate_scaling` says how it grows with the replicas: `linear`
    (Goyal et al.), `sqrt`, or `none`.
    """
    base = float(settings.value(params, 'learning_rate'))
    scaling = settings.value(params, 'learning_rate_scaling')
    factors = {'linear': replicas, 'sqrt': math.sqrt(replicas), 'none': 1}
    if scaling not in factors:
        raise ValueError(f'learning_rate_scaling {scaling!r}: expected one '
                         f'of {sorted(factors)}')
    return base * factors[scaling]
