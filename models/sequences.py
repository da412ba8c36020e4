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

RECIPES: Dict[str, training.ModelRecipe] = {
    'rnn': rnn.RECIPE,
    'fcn': fcn.RECIPE,
}
