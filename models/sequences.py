"""The sequence families by their pipeline names (pipeline/configs.py
MODELS): one Tuner may choose between them (`tune_families`), since they
read the same tf.Transform output (the RNN's preprocessing_fn) and serve the
same signatures (`serving_default`, `serving_sequence`), so the pushed model
serves the same requests whichever family trained it.

Its own module: the FCN imports the RNN, and each family's run_fn and
tuner_fn import this lazily.
"""

from typing import Dict

from models import training
from models.fcn import model as fcn
from models.rnn import model as rnn


def recipes() -> Dict[str, training.ModelRecipe]:
    """The sequence families' recipes, name -> recipe, as their modules hold
    them now: TFX reloads a component's module before it runs
    (tfx.utils.import_utils), which binds a new RECIPE, and a recipe is told
    apart by identity (models/tuning.py `search`, models/workers.py)."""
    return {'rnn': rnn.RECIPE, 'fcn': fcn.RECIPE}
