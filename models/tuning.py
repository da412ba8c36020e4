"""Random search over a model family's hyper-parameters, for TFX's Tuner.

The space, held settings and family search: models/tuning_space.py.

KerasTuner's `RandomSearchOracle` proposes each trial's values from the
family's search space (a `HyperParameters`), and the trial trains with our
own training loop (models/training.py), not `keras_tuner.Tuner.fit`:
KerasTuner here runs on Keras 3, while our models are tf_keras (TFX 1.16),
so its Tuner cannot build, fit or save them. `TrialTuner` is therefore a
`keras_tuner.BaseTuner` whose `run_trial` calls `training.train` without
export and reports the best epoch's eval accuracy.

The first trial is the profile's own configuration, when the search space
holds it (`profile_values`), so the Trainer is never handed values that
scored below the ones it would have trained without a Tuner (on the eval
split, at the trials' budget). Each trial trains `tune_epochs_fraction` of
the epochs the Trainer would (all of them by default; on a large data set
a third ranks the trials at a third of the cost, favouring what learns
fast: docs/results/model-quality.md). Trials are bounded by `tune_trials` and by
`tune_seconds` of wall time (no trial starts after it). The Tuner
component writes the best values (`best_hyperparameters`), which the
Trainer maps back to params through the same search space
(`tuned_params`), and every trial's values and score (`tuner_results.json`);
the search prints that table too.

A setting the user gave (`--set learning_rate_decay=cosine`, `--set
conv_filters=[64,128]`), which the pipeline names
(`names.HELD_SETTINGS`), is held at its value in every trial where the
space names or makes it (`held_settings`): the search varies the rest.

For the sequence families (`tune_families`, on by default) the space is
the families' together: a `family` hyper-parameter and, under it, each
family's own space (`family_space`); a trial of a family trains that
family's recipe with its own params, which the pipeline hands down
(`names.FAMILY_PARAMS`), and the Trainer trains the best trial's family
(`best_recipe`).
"""
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    List,
    Optional,
    Sequence,
)

import keras_tuner
from absl import logging

from common import settings
from models import recipe as recipe_lib
from models import schedule
from models import training
from models import tuning_space

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

OBJECTIVE = keras_tuner.Objective('val_accuracy', direction='max')


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


def make_oracle(search_space: tuning_space.SearchSpace,
                params: schedule.Params) -> ProfileFirstOracle:
    """The random-search oracle, its first trial the profile.

    Random search over `search_space`, `tune_trials` trials, the first the
    profile's (`params`) own values when the space holds them.
    """
    hp = keras_tuner.HyperParameters()
    search_space(hp)  # Declares the space.
    first = tuning_space.profile_values(search_space, params)
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


def trial_table(
    trials: List[keras_tuner.engine.trial.Trial],
    held: Sequence[str] = ()) -> str:
    """The trial table: each trial's values and score.

    One row per trial: its id, score and hyper-parameter values (with `family`,
    the chosen family's only); a line naming the `held` ones.
    """
    shown = [
        tuning_space.trial_table_values(t.hyperparameters.values)
        for t in trials
    ]
    names = sorted({name for values in shown for name in values})
    rows = [['trial', 'score', *names]]
    for trial, values in zip(trials, shown):
        score = trial.score
        rows.append([
            trial.trial_id, 'failed' if score is None else f'{score:.4f}',
            *(str(values.get(n, '')) for n in names)
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = '\n'.join('  '.join(
        cell.ljust(width)
        for cell, width in zip(row, widths)).rstrip()
                      for row in rows)
    if held:
        table += f"\n(held at the run's settings: {', '.join(held)})"
    return table


class TrialTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial with models/training.py (tf_keras), not Keras 3."""

    def __init__(self, oracle: ProfileFirstOracle,
                 fn_args: 'tfx.components.FnArgs', chosen: tuning_space.Search,
                 params: schedule.Params, max_seconds: float, **kwargs):
        super().__init__(oracle, **kwargs)
        self._fn_args = fn_args
        self._params = params
        self._search = chosen
        self._deadline = time.monotonic() + max_seconds

    def pre_create_trial(self):
        # At least one trial, however small the budget.
        if self.oracle.trials and time.monotonic() > self._deadline:
            # The oracle stops once it holds max_trials trials.
            logging.info('Tuner: wall-time budget spent after %d trials',
                         len(self.oracle.trials))
            self.oracle.max_trials = len(self.oracle.trials)

    def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
        recipe, params = self._search.choose(
            self._search.search_space(trial.hyperparameters))
        # Read by schedule.training_schedule: the Trainer trains all. The
        # search's budget is the run's, whichever family the trial trains.
        params['epochs_fraction'] = float(
            settings.value(self._params, 'tune_epochs_fraction'))
        # A trial is scored on the eval split: it never trains on it.
        params['train_on_small_eval'] = False
        report = training.train(self._fn_args,
                                recipe,
                                params,
                                export_model=False)
        return {OBJECTIVE.name: report.best_val_accuracy}

    def on_search_end(self):
        super().on_search_end()
        trials = sorted(self.oracle.trials.values(), key=lambda t: t.trial_id)
        table = trial_table(trials, self._search.held_names())
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


def make_tuner(fn_args: Optional['tfx.components.FnArgs'],
               recipe: recipe_lib.ModelRecipe, params: schedule.Params,
               **kwargs) -> TrialTuner:
    """The random search the run's `params` ask for (`search`).

    Its first trial is the running family's profile (`family` its own);
    `kwargs` go to KerasTuner's BaseTuner (directory, project_name).
    """
    chosen = tuning_space.search(recipe, params)
    oracle = make_oracle(chosen.search_space, chosen.params[chosen.first])
    return TrialTuner(oracle,
                      fn_args,
                      chosen,
                      params,
                      max_seconds=float(params['tune_seconds']),
                      **kwargs)


def tuner_fn(fn_args: 'tfx.components.FnArgs',
             recipe: recipe_lib.ModelRecipe) -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's `tuner_fn` for `recipe`'s family.

    With `tune_families`, for it and the families the pipeline names.
    """
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    # The same hyper-parameters (and class names) the Trainer's run_fn reads.
    params = training.hyperparameters(fn_args)
    tuner = make_tuner(fn_args,
                       recipe,
                       params,
                       directory=fn_args.working_dir,
                       project_name='random_search')
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
