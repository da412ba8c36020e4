"""Random search over a model family's hyper-parameters, for TFX's Tuner.

KerasTuner's `RandomSearchOracle` proposes each trial's values from the
family's search space (a `HyperParameters`), and the trial trains with our
own training loop (models/training.py), not `keras_tuner.Tuner.fit`:
KerasTuner here runs on Keras 3, while our models are tf_keras (TFX 1.16),
so its Tuner cannot build, fit or save them. `TrialTuner` is therefore a
`keras_tuner.BaseTuner` whose `run_trial` calls `training.run` without
export and reports the best epoch's eval accuracy.

The first trial is the profile's own configuration, when the search space
holds it (`profile_values`), so the Trainer is never handed values that
scored below the ones it would have trained without a Tuner (on the eval
split, at the trials' budget). Each trial trains `tune_epochs_fraction` of
the epochs the Trainer would (all of them by default; on a large data set
a third ranks the trials at a third of the cost, favouring what learns
fast: README, Model quality). Trials are bounded by `tune_trials` and by
`tune_seconds` of wall time (no trial starts after it). The Tuner
component writes the best values (`best_hyperparameters`), which the
Trainer maps back to params through the same search space
(`tuned_params`), and every trial's values and score (`tuner_results.json`);
the search prints that table too.
"""

import itertools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import keras_tuner
from absl import logging

from models import schedule
from models import training

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

OBJECTIVE = keras_tuner.Objective('val_accuracy', direction='max')
SearchSpace = Callable[[keras_tuner.HyperParameters], schedule.Params]


def tuned_params(search_space: SearchSpace,
                 best_hyperparameters: Dict[str, Any]) -> schedule.Params:
    """The params a Tuner's best hyper-parameters (their config, as the
    Trainer receives it) stand for."""
    if 'values' in best_hyperparameters:
        hp = keras_tuner.HyperParameters.from_config(best_hyperparameters)
    else:
        hp = keras_tuner.HyperParameters()
        hp.values.update(best_hyperparameters)
    return search_space(hp)


def _holds(hyperparameter: Any, value: Any) -> bool:
    """Whether a KerasTuner hyper-parameter can take `value`."""
    step = getattr(hyperparameter, 'step', 1)
    if step is None:  # A continuous range.
        return hyperparameter.min_value <= value <= hyperparameter.max_value
    return value in tuple(hyperparameter.values)


def profile_values(search_space: SearchSpace,
                   params: schedule.Params) -> Optional[Dict[str, Any]]:
    """The hyper-parameter values that stand for `params` (a profile's own
    configuration), or None when the search space does not hold them.

    A hyper-parameter named as a param (`dropout`, `learning_rate`, ...)
    takes the param's value; the others (a convnet's `width` and `depth`,
    which together make `conv_filters`) are tried in turn until the params
    they stand for are `params`' own.
    """
    hp = keras_tuner.HyperParameters()
    search_space(hp)  # Declares the space.
    named = {
        h.name: params[h.name]
        for h in hp.space
        if h.name in params and _holds(h, params[h.name])
    }
    others = [h for h in hp.space if h.name not in named]
    if any(getattr(h, 'step', 1) is None for h in others):
        return None  # A continuous range cannot be tried in turn.
    for choice in itertools.product(*(tuple(h.values) for h in others)):
        candidate = keras_tuner.HyperParameters()
        candidate.values.update(named)
        candidate.values.update({
            h.name: value for h, value in zip(others, choice)
        })
        stands_for = search_space(candidate)
        if all(params.get(key) == value for key, value in stands_for.items()):
            return dict(candidate.values)
    return None


class ProfileFirstOracle(keras_tuner.oracles.RandomSearchOracle):
    """KerasTuner's random search, whose first trial is `first_values`."""

    def __init__(self, first_values: Optional[Dict[str, Any]], **kwargs):
        super().__init__(**kwargs)
        self.first_values = first_values

    def populate_space(self, trial_id: str) -> Dict[str, Any]:
        # The oracle records every trial's values: these are tried once.
        if self.first_values and not self._duplicate(self.first_values):
            return {
                'status': keras_tuner.engine.trial.TrialStatus.RUNNING,
                'values': dict(self.first_values)
            }
        return super().populate_space(trial_id)


def make_oracle(search_space: SearchSpace,
                params: schedule.Params) -> ProfileFirstOracle:
    """Random search over `search_space`, `tune_trials` trials, the first
    the profile's (`params`) own values when the space holds them."""
    hp = keras_tuner.HyperParameters()
    search_space(hp)  # Declares the space.
    first = profile_values(search_space, params)
    if first is None:
        logging.info('Tuner: the profile is not a point of the search space; '
                     'every trial is drawn at random')
    return ProfileFirstOracle(first,
                              objective=OBJECTIVE,
                              max_trials=int(params['tune_trials']),
                              hyperparameters=hp,
                              seed=params.get('seed'),
                              allow_new_entries=False,
                              tune_new_entries=False)


def trial_table(trials: List[keras_tuner.engine.trial.Trial]) -> str:
    """One row per trial: its id, score and hyper-parameter values."""
    names = sorted({name for t in trials for name in t.hyperparameters.values})
    rows = [['trial', 'score', *names]]
    for trial in trials:
        score = trial.score
        rows.append([
            trial.trial_id, 'failed' if score is None else f'{score:.4f}',
            *(str(trial.hyperparameters.values.get(n, '')) for n in names)
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(
        cell.ljust(width)
        for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


class TrialTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial with models/training.py (tf_keras), not Keras 3."""

    def __init__(self, oracle: ProfileFirstOracle,
                 fn_args: 'tfx.components.FnArgs', recipe: training.ModelRecipe,
                 params: schedule.Params, max_seconds: float, **kwargs):
        super().__init__(oracle, **kwargs)
        self._fn_args = fn_args
        self._recipe = recipe
        self._params = params
        self._deadline = time.monotonic() + max_seconds

    def pre_create_trial(self):
        # At least one trial, however small the budget.
        if self.oracle.trials and time.monotonic() > self._deadline:
            # The oracle stops once it holds max_trials trials.
            logging.info('Tuner: wall-time budget spent after %d trials',
                         len(self.oracle.trials))
            self.oracle.max_trials = len(self.oracle.trials)

    def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
        params = {
            **self._params,
            **self._recipe.search_space(trial.hyperparameters),
            # Read by schedule.training_schedule: the Trainer trains all.
            'epochs_fraction':
                float(self._params.get('tune_epochs_fraction') or 1.0)
        }
        accuracy = training.run(self._fn_args,
                                self._recipe,
                                params,
                                export_model=False)
        return {OBJECTIVE.name: accuracy}

    def on_search_end(self):
        super().on_search_end()
        trials = sorted(self.oracle.trials.values(), key=lambda t: t.trial_id)
        table = trial_table(trials)
        if self.oracle.first_values and trials:
            first = trials[0].trial_id
            table += f"\n(trial {first}: the profile's own values)"
        # Printed for the user, and in the Tuner's log.
        print(f'Tuner trials (score: best eval accuracy):\n{table}', flush=True)
        logging.info('Tuner trials:\n%s', table)
        if not any(t.score is not None for t in trials):
            # Else the Tuner would hand the Trainer a default as the best.
            raise RuntimeError('every Tuner trial failed; the first:\n' +
                               (trials[0].message if trials else ''))


def tuner_fn(fn_args: 'tfx.components.FnArgs',
             recipe: training.ModelRecipe) -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's `tuner_fn` for `recipe`'s family."""
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    # The same hyper-parameters (and class names) the Trainer's run_fn reads.
    params = training.hyperparameters(fn_args)
    oracle = make_oracle(recipe.search_space, params)
    tuner = TrialTuner(oracle,
                       fn_args,
                       recipe,
                       params,
                       max_seconds=float(params['tune_seconds']),
                       directory=fn_args.working_dir,
                       project_name='random_search')
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
