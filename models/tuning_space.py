"""A Tuner's search space and what its values stand for.

A Tuner's search space: the families' spaces, the settings held, the point that
stands for the profile, and the values mapped back to params.

KerasTuner declares hyper-parameters on a `HyperParameters`; a family's
space (`ModelRecipe.search_space`) declares them and returns the params
they stand for. Here: held settings (`held_settings`: a setting the user
gave is fixed where the space names or makes it), the space over several
families (`family_space`), the search a run asks for (`search`), the
profile's own point (`profile_values`) and the params of the best values
(`tuned_params`, `best_recipe`). The tuner that runs the trials is
models/tuning.py.
"""

import copy
import dataclasses
import functools
import itertools
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Set,
    Tuple,
)

import keras_tuner

from common import names
from models import data_facts
from models import families
from models import recipe as recipe_lib
from models import schedule

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    pass

SearchSpace = Callable[[keras_tuner.HyperParameters], schedule.Params]
FAMILY = names.FAMILY

# HyperParameters' declaring methods (and KerasTuner's classes of the same
# names).
_DECLARATIONS = ('Boolean', 'Choice', 'Fixed', 'Float', 'Int')


class _Declaring:
    """A HyperParameters that returns defaults in inactive scopes.

    A HyperParameters whose declarations return the hyper-parameter's default
    where KerasTuner returns None: in an inactive conditional scope.

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


class _HeldHyperParameters:
    """A HyperParameters that fixes the held settings.

    A HyperParameters on which a hyper-parameter named as a held setting
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


def _params_made_by(space: SearchSpace, values: Dict[str,
                                                     Any]) -> schedule.Params:
    """The params `space` makes with `values` (the rest at defaults)."""
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return space(hp)


def held_settings(
        space: SearchSpace, params: schedule.Params,
        names: Iterable[str]) -> Tuple[Dict[str, Any], schedule.Params]:
    """What holding the settings `names` at their values in `params` takes.

    Returns (hyper-parameter -> the value it is fixed at, setting the space
    makes -> the value that replaces it).

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
            for key, value in _params_made_by(space, {
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
        made_by_them = _params_made_by(space, candidate)
        if all(made_by_them[key] == params[key] for key in held_made):
            break
    else:
        candidate = {h.name: h.default for h in makers}
    return {**fixed, **candidate}, made


def _space_with_held(space: SearchSpace, fixed: Dict[str, Any],
                     made: schedule.Params) -> SearchSpace:
    """`space` with the held settings fixed.

    The hyper-parameters of `fixed` are fixed at their values and the params
    of `made` replaced by theirs (`held_settings`).
    """
    if not (fixed or made):
        return space
    return lambda hp: {
        **space(_HeldHyperParameters(hp, fixed)),
        **copy.deepcopy(made)
    }


def family_space(spaces: Dict[str, SearchSpace], first: str) -> SearchSpace:
    """The families' search spaces as one.

    A `family` hyper-parameter (its default `first`) and each family's own
    hyper-parameters in a conditional scope of it, so that a trial holds the
    chosen family's values only.

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
    """A hyper-parameter's name in its family's own space.

    The param a hyper-parameter may be named as: its name in its family's own
    space (`width` for `fcn/width`).
    """
    return hyperparameter.name.rsplit('/', 1)[-1]


def trial_table_values(values: Dict[str, Any]) -> Dict[str, Any]:
    """A trial's values as the trial table shows them.

    A family's own under their names in its space (`width`, beside `family`).
    """
    prefix = f'{values.get(FAMILY)}/'
    return {
        name[len(prefix):] if name.startswith(prefix) else name: value
        for name, value in values.items()
    }


@dataclasses.dataclass(frozen=True)
class Search:
    """What a search chooses between.

    The families (one, or several with `tune_families`), each with its recipe
    and its own params.

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
        """Each family's held settings, worked out once.

        Family -> what holding `held` takes in its space (`held_settings`),
        worked out once.
        """
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
            family: _space_with_held(self.recipes[family].search_space, *held)
            for family, held in self._held_settings.items()
        }
        if len(spaces) == 1:
            return spaces[self.first]
        return family_space(spaces, self.first)

    def choose(
        self, values: schedule.Params
    ) -> Tuple[recipe_lib.ModelRecipe, schedule.Params]:
        """The recipe and params that `values` stand for.

        The recipe and params of the point of the space that stands for `values`
        (the params the search space returned).
        """
        family = values.get(FAMILY, self.first)
        return self.recipes[family], {**self.params[family], **values}


def search(recipe: recipe_lib.ModelRecipe, params: schedule.Params) -> Search:
    """The search the run's `params` ask for.

    Over `recipe`'s family and the families the pipeline handed down params for
    (`names.FAMILY_PARAMS`, found by name: models/families.py) when
    `tune_families` is on, else over `recipe`'s own space; the settings the
    pipeline names as the user's (`names.HELD_SETTINGS`) held at their values.
    """
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
    """What the Trainer trains after a Tuner.

    The best trial's family (when the search chose between families) with its
    own params, under the best values.

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
    """The params a Tuner's best hyper-parameters stand for.

    The params a Tuner's best hyper-parameters (their config, as the Trainer
    receives it) stand for.
    """
    if 'values' in best_hyperparameters:
        hp = keras_tuner.HyperParameters.from_config(best_hyperparameters)
    else:
        hp = keras_tuner.HyperParameters()
        hp.values.update(best_hyperparameters)
    return search_space(hp)


def _can_take(hyperparameter: Any, value: Any) -> bool:
    """Whether a KerasTuner hyper-parameter can take `value`."""
    step = getattr(hyperparameter, 'step', 1)
    if step is None:  # A continuous range.
        return hyperparameter.min_value <= value <= hyperparameter.max_value
    return value in tuple(hyperparameter.values)


def _assignments(space: List[Any], params: schedule.Params,
                 values: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every assignment of the active hyper-parameters of `space`.

    Every assignment of values to the hyper-parameters of `space` (in
    declaration order, a parent before its conditional ones) that are active
    under it, with those named as params held at their value.
    """
    if not space:
        yield dict(values)
        return
    head, rest = space[0], space[1:]
    if not all(c.is_active(values) for c in head.conditions):
        yield from _assignments(rest, params, values)
        return
    name = _param_name(head)
    if name in params and _can_take(head, params[name]):
        choices = (params[name],)
    elif getattr(head, 'step', 1) is None:
        return  # A continuous range cannot be tried in turn.
    else:
        choices = tuple(head.values)
    for choice in choices:
        yield from _assignments(rest, params, {**values, head.name: choice})


def profile_values(search_space: SearchSpace,
                   params: schedule.Params) -> Optional[Dict[str, Any]]:
    """The hyper-parameter values that stand for `params`, or None.

    `params` is a profile's own configuration; None when the search space
    does not hold it.

    A hyper-parameter named as a param (`dropout`, `learning_rate`,
    `family`, ...) takes the param's value; the others (a convnet's `width`
    and `depth`, which together make `conv_filters`) are tried in turn until
    the params they stand for are `params`' own. Only the hyper-parameters
    active under the values count (a family's own, under `family`).
    """
    hp = keras_tuner.HyperParameters()
    search_space(hp)  # Declares the space.
    for values in _assignments(list(hp.space), params, {}):
        stands_for = _params_made_by(search_space, values)
        if all(params.get(key) == value for key, value in stands_for.items()):
            return values
    return None
