"""The model families by name: each family's recipe, looked up when asked.

Looked up by name, not held: TFX reloads a component's module before it
runs (tfx.utils.import_utils), which binds a new `RECIPE` in it, so a
recipe held from before would be another object than the one the module
holds now. The names are pipeline/profiles.py MODELS'.
"""

import importlib
from typing import Dict, Iterable

from models import recipe as recipe_lib

# Family name -> the module binding its RECIPE.
MODULES = {
    'convnet': 'models.convnet.model',
    'embedding': 'models.embedding.model',
    'multitask': 'models.multitask.model',
    'convnet3d': 'models.convnet3d.model',
    'rnn': 'models.rnn.model',
    'fcn': 'models.fcn.model',
    'inception_time': 'models.inception_time.model',
}


def recipe(name: str) -> recipe_lib.ModelRecipe:
    """The recipe of the family called `name`, as its module holds it now."""
    return importlib.import_module(MODULES[name]).RECIPE


def recipes(family_names: Iterable[str]) -> Dict[str, recipe_lib.ModelRecipe]:
    """Name -> recipe, for each of `family_names`."""
    return {name: recipe(name) for name in family_names}
