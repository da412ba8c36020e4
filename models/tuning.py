"""Random search over a model family's hyper-parameters, for TFX's Tuner.

KerasTuner's `RandomSearchOracle` proposes each trial's values from the
family's search space (a `HyperParameters`), and the trial trains with our
own training loop (models/training.py), not `keras_tuner.Tuner.fit`:
KerasTuner here runs on Keras 3, while our models are tf_keras (TFX 1.16),
so its Tuner cannot build, fit or save them. `TrialTuner` is therefore a
`keras_tuner.BaseTuner` whose `run_trial` calls `training.run` without
export and reports the best epoch's eval accuracy.

Trials are bounded by `tune_trials` and by `tune_seconds` of wall time (no
trial starts after it). The Tuner component writes the best values
(`best_hyperparameters`), which the Trainer maps back to params through the
same search space (`tuned_params`), and every trial's values and score
(`tuner_results.json`); the search prints that table too.
"""

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List

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

    def __init__(self, oracle: keras_tuner.Oracle,
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
            **self._recipe.search_space(trial.hyperparameters)
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
    hp = keras_tuner.HyperParameters()
    recipe.search_space(hp)  # Declares the space.
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=OBJECTIVE,
                                                    max_trials=int(
                                                        params['tune_trials']),
                                                    hyperparameters=hp,
                                                    seed=params.get('seed'),
                                                    allow_new_entries=False,
                                                    tune_new_entries=False)
    tuner = TrialTuner(oracle,
                       fn_args,
                       recipe,
                       params,
                       max_seconds=float(params['tune_seconds']),
                       directory=fn_args.working_dir,
                       project_name='random_search')
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
