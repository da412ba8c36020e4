"""Random search over a model family's hyper-parameters, for TFX's Tuner.

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

import copy
import dataclasses
import functools
import itertools
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import keras_tuner
from absl import logging

from common import names
from models import data_facts
from models import families
from models import recipe as recipe_lib
from models import schedule
from models import training

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

OBJECTIVE = keras_tuner.Objective('val_accuracy', direction='max')
SearchSpace = Callable[[keras_tuner.HyperParameters], schedule.Params]
FAMILY = names.FAMILY
# HyperParameters' declaring methods (and KerasTuner's classes of the same
# names).
_DECLARATIONS = ('Boolean', 'Choice', 'Fixed', 'Float', 'Int')


class _Declaring:
    """A HyperParameters whose declarations return the hyper-parameter's
    default where KerasTuner returns None: in an inactive conditional scope.

    A family's search space computes its params from its values (`[width] *
    depth`), so it fails on None; under a family that is not chosen, its
    values only need to be declared, and any value of theirs does.
    """

    def __init__(self, hp: keras_tuner.HyperParameters):
        self._hp = hp

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._hp, name)
        if name not in _DECLARATIONS:
            return attribute

        def declare(*args, **kwargs):
            value = attribute(*args, **kwargs)
            if value is None:
                kind = getattr(keras_tuner.engine.hyperparameters, name)
                value = kind(*args, **kwargs).default
            return value

        return declare


class _Holding:
    """A HyperParameters on which a hyper-parameter named as a held setting
    (`learning_rate_decay`, or `dropout` in a family's scope) is declared
    `Fixed` at the setting's value, so the search varies only the others.
    """

    def __init__(self, hp: keras_tuner.HyperParameters, held: Dict[str, Any]):
        self._hp = hp
        self._held = held

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._hp, name)
        if name not in _DECLARATIONS:
            return attribute

        def declare(hp_name: str, *args, **kwargs):
            if hp_name in self._held:
                return self._hp.Fixed(hp_name, self._held[hp_name])
            return attribute(hp_name, *args, **kwargs)

        return declare


def _made(space: SearchSpace, values: Dict[str, Any]) -> schedule.Params:
    """The params `space` makes with `values` (the rest at defaults)."""
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return space(hp)


def held_settings(
        space: SearchSpace, params: schedule.Params,
        names: Iterable[str]) -> Tuple[Dict[str, Any], schedule.Params]:
    """What holding the settings `names` at their values in `params` takes:
    (hyper-parameter -> the value it is fixed at, setting the space makes ->
    the value that replaces it).

    A setting the space names as a hyper-parameter is fixed at its value.
    A setting it makes from others (`conv_filters` from `width` and
    `depth`) is replaced by its value in every trial, and so is every
    other setting those make (an FCN's `kernel_sizes`, one per block),
    from the run's params; they are fixed at values that make the setting
    where there are such (so the trial table tells them), else at their
    defaults: no trial is spent on them.
    """
    hp = keras_tuner.HyperParameters()
    defaults = space(hp)
    names = [name for name in names if name in params]
    fixed = {name: params[name] for name in names if name in hp.values}
    held_made = {name for name in names if name in defaults} - fixed.keys()
    if not held_made:
        return fixed, {}

    def changes(h: Any) -> Set[str]:
        return {
            key for choice in h.values
            for key, value in _made(space, {
                h.name: choice
            }).items() if value != defaults[key]
        }

    makers = []  # The hyper-parameters that make a held setting.
    made = {}
    for h in hp.space:
        # Continuous ranges (no `values`) make no architecture.
        if h.name in fixed or getattr(h, 'values', None) is None:
            continue
        keys = changes(h)
        if keys & held_made:
            makers.append(h)
            made.update({key: params[key] for key in keys if key in params})
    made.update({name: params[name] for name in held_made})
    for choices in itertools.product(*(h.values for h in makers)):
        candidate = {h.name: choice for h, choice in zip(makers, choices)}
        made_by_them = _made(space, candidate)
        if all(made_by_them[key] == params[key] for key in held_made):
            break
    else:
        candidate = {h.name: h.default for h in makers}
    return {**fixed, **candidate}, made


def _holding(space: SearchSpace, fixed: Dict[str, Any],
             made: schedule.Params) -> SearchSpace:
    """`space` with the hyper-parameters of `fixed` fixed at their values
    and the params of `made` replaced by theirs (`held_settings`)."""
    if not (fixed or made):
        return space
    return lambda hp: {**space(_Holding(hp, fixed)), **copy.deepcopy(made)}


def family_space(spaces: Dict[str, SearchSpace], first: str) -> SearchSpace:
    """The families' search spaces as one: a `family` hyper-parameter (its
    default `first`) and each family's own hyper-parameters in a conditional
    scope of it, so that a trial holds the chosen family's values only.

    Their names are prefixed by the family's (`fcn/width`): KerasTuner keeps
    one value per name and drops the values of inactive hyper-parameters by
    name, which would drop the chosen family's `width` for the other's. The
    params are the chosen family's, with its name as `family`.
    """
    names = [first, *sorted(set(spaces) - {first})]

    def search_space(hp: keras_tuner.HyperParameters) -> schedule.Params:
        family = hp.Choice(FAMILY, names, default=first)
        chosen: schedule.Params = {}
        for name in names:
            with hp.conditional_scope(FAMILY, [name]), hp.name_scope(name):
                params = spaces[name](_Declaring(hp))
            if name == family:
                chosen = params
        return {**chosen, FAMILY: family}

    return search_space


def _param_name(hyperparameter: Any) -> str:
    """The param a hyper-parameter may be named as: its name in its family's
    own space (`width` for `fcn/width`)."""
    return hyperparameter.name.rsplit('/', 1)[-1]


def _shown(values: Dict[str, Any]) -> Dict[str, Any]:
    """A trial's values as the trial table shows them: a family's own under
    their names in its space (`width`, beside `family`)."""
    prefix = f'{values.get(FAMILY)}/'
    return {
        name[len(prefix):] if name.startswith(prefix) else name: value
        for name, value in values.items()
    }


@dataclasses.dataclass(frozen=True)
class Search:
    """What a search chooses between: the families (one, or several with
    `tune_families`), each with its recipe and its own params.

    Attributes:
        recipes: Family name -> its recipe.
        params: Family name -> its params: the running family's are the
            run's; another's are its own profile of the same profile name
            (handed down by the pipeline), so that e.g. an FCN trial of an
            RNN run does not clip gradients as the RNN's profile does.
        first: The running family (`--model`): the first trial's.
        held: The settings the user gave, which every trial of a family
            keeps at the family's value where its space names or makes
            them (`held_settings`).
    """

    recipes: Dict[str, recipe_lib.ModelRecipe]
    params: Dict[str, schedule.Params]
    first: str
    held: Tuple[str, ...] = ()

    @functools.cached_property
    def _held_settings(
            self) -> Dict[str, Tuple[Dict[str, Any], schedule.Params]]:
        """Family -> what holding `held` takes in its space
        (`held_settings`), worked out once."""
        return {
            family:
                held_settings(recipe.search_space, self.params[family],
                              self.held)
            for family, recipe in self.recipes.items()
        }

    def held_names(self) -> List[str]:
        """The held settings that some family's space names or makes."""
        names: Set[str] = set()
        for fixed, made in self._held_settings.values():
            names |= (fixed.keys() & set(self.held)) | made.keys()
        return sorted(names)

    @functools.cached_property
    def search_space(self) -> SearchSpace:
        spaces = {
            family: _holding(self.recipes[family].search_space, *held)
            for family, held in self._held_settings.items()
        }
        if len(spaces) == 1:
            return spaces[self.first]
        return family_space(spaces, self.first)

    def choose(
        self, values: schedule.Params
    ) -> Tuple[recipe_lib.ModelRecipe, schedule.Params]:
        """The recipe and params of the point of the space that stands for
        `values` (the params the search space returned)."""
        family = values.get(FAMILY, self.first)
        return self.recipes[family], {**self.params[family], **values}


def search(recipe: recipe_lib.ModelRecipe, params: schedule.Params) -> Search:
    """The search the run's `params` ask for: over `recipe`'s family and the
    families the pipeline handed down params for (`names.FAMILY_PARAMS`,
    found by name: models/families.py) when `tune_families` is on, else
    over `recipe`'s own space; the settings the pipeline names as the
    user's (`names.HELD_SETTINGS`) held at their values."""
    own = {
        key: value
        for key, value in params.items()
        if key != names.FAMILY_PARAMS
    }
    others = params.get(names.FAMILY_PARAMS) or {}
    held = tuple(params.get(names.HELD_SETTINGS) or ())
    if not (params.get('tune_families') and others):
        return Search({'': recipe}, {'': own}, '', held)
    first = recipe.name
    # What the data gives (models/data_facts.py), the same for every family:
    # they read the same tf.Transform output.
    facts = {
        key: params[key]
        for key in (data_facts.CLASS_NAMES, data_facts.NUM_CHANNELS)
        if key in params
    }
    chosen = {first: recipe}
    family_params = {first: {**own, FAMILY: first}}
    for name, values in others.items():
        if name in families.MODULES and name != first:
            chosen[name] = families.recipe(name)
            family_params[name] = {**values, **facts, FAMILY: name}
    return Search(chosen, family_params, first, held)


def best_recipe(
    best_hyperparameters: Dict[str, Any],
    recipe: recipe_lib.ModelRecipe,
    params: schedule.Params,
) -> Tuple[recipe_lib.ModelRecipe, schedule.Params]:
    """What the Trainer trains after a Tuner: the best trial's family (when
    the search chose between families) with its own params, under the best
    values.

    Args:
        best_hyperparameters: The Tuner's best hyper-parameters (their
            config, as the Trainer receives it).
        recipe: The running family's recipe (`--model`).
        params: The run's params (models/training.py `hyperparameters`).
    """
    chosen = search(recipe, params)
    return chosen.choose(tuned_params(chosen.search_space,
                                      best_hyperparameters))


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


def _assignments(space: List[Any], params: schedule.Params,
                 values: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every assignment of values to the hyper-parameters of `space` (in
    declaration order, a parent before its conditional ones) that are
    active under it, with those named as params held at their value."""
    if not space:
        yield dict(values)
        return
    head, rest = space[0], space[1:]
    if not all(c.is_active(values) for c in head.conditions):
        yield from _assignments(rest, params, values)
        return
    name = _param_name(head)
    if name in params and _holds(head, params[name]):
        choices = (params[name],)
    elif getattr(head, 'step', 1) is None:
        return  # A continuous range cannot be tried in turn.
    else:
        choices = tuple(head.values)
    for choice in choices:
        yield from _assignments(rest, params, {**values, head.name: choice})


def profile_values(search_space: SearchSpace,
                   params: schedule.Params) -> Optional[Dict[str, Any]]:
    """The hyper-parameter values that stand for `params` (a profile's own
    configuration), or None when the search space does not hold them.

    A hyper-parameter named as a param (`dropout`, `learning_rate`,
    `family`, ...) takes the param's value; the others (a convnet's `width`
    and `depth`, which together make `conv_filters`) are tried in turn until
    the params they stand for are `params`' own. Only the hyper-parameters
    active under the values count (a family's own, under `family`).
    """
    hp = keras_tuner.HyperParameters()
    search_space(hp)  # Declares the space.
    for values in _assignments(list(hp.space), params, {}):
        stands_for = _made(search_space, values)
        if all(params.get(key) == value for key, value in stands_for.items()):
            return values
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


def trial_table(
    trials: List[keras_tuner.engine.trial.Trial],
    held: Sequence[str] = ()) -> str:
    """One row per trial: its id, score and hyper-parameter values (with
    `family`, the chosen family's only); a line naming the `held` ones."""
    shown = [_shown(t.hyperparameters.values) for t in trials]
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
                 fn_args: 'tfx.components.FnArgs', chosen: Search,
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
            self._params.get('tune_epochs_fraction') or 1.0)
        report = training.train(self._fn_args,
                                recipe,
                                params,
                                export_model=False)
        return {OBJECTIVE.name: report['best_val_accuracy']}

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
    """The random search the run's `params` ask for (`search`), its first
    trial the running family's profile (`family` its own); `kwargs` go to
    KerasTuner's BaseTuner (directory, project_name)."""
    chosen = search(recipe, params)
    oracle = make_oracle(chosen.search_space, chosen.params[chosen.first])
    return TrialTuner(oracle,
                      fn_args,
                      chosen,
                      params,
                      max_seconds=float(params['tune_seconds']),
                      **kwargs)


def tuner_fn(fn_args: 'tfx.components.FnArgs',
             recipe: recipe_lib.ModelRecipe) -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's `tuner_fn` for `recipe`'s family, or with
    `tune_families` for it and the families the pipeline names."""
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    # The same hyper-parameters (and class names) the Trainer's run_fn reads.
    params = training.hyperparameters(fn_args)
    tuner = make_tuner(fn_args,
                       recipe,
                       params,
                       directory=fn_args.working_dir,
                       project_name='random_search')
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})
