"""What a model family gives the shared training loop: its recipe.

Each family's model module (models/convnet/model.py, ...) binds one
`RECIPE`; the training loop (models/training.py), the Tuner
(models/tuning.py) and the worker processes (models/workers.py) take it,
and find it by the family's name (models/families.py).
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf

from common import settings
from models import export

keras = tf.keras
Params = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """What a model package contributes to the shared training loop.

    Attributes:
        name: The family's name (pipeline/profiles.py MODELS): how a Tuner,
            the Trainer and the worker processes find it (models/families.py).
        build_model: (hyper-parameters, number of classes) -> an uncompiled
            Keras model with a softmax output.
        to_model_inputs: (transformed features, hyper-parameters) -> the
            model's inputs.
        extra_signatures: Serving signatures besides `serving_default`.
        search_space: Declares the family's hyper-parameters on a KerasTuner
            `HyperParameters` and returns the params their values stand for
            (models/tuning.py); None when the family is not tuned.
        compile_model: (model, params, learning rate) -> None, in place of
            `compile_model` (cross-entropy); its metrics must include one
            named `accuracy`, which chooses the kept epoch.
        export_model: In place of export.export_serving_model, with the
            same arguments and `params` and `train_data` (the training
            split's batches in a fixed order, one pass).
        to_targets: (transformed features, label, hyper-parameters) -> what
            the loss compares the model's output with; default: the label.
    """

    name: str
    build_model: Callable[[Params, int], keras.Model]
    to_model_inputs: Callable[[Dict[str, tf.Tensor], Params], Dict[str,
                                                                   tf.Tensor]]
    extra_signatures: Dict[str, export.SignatureFactory]
    search_space: Optional[Callable[[Any], Params]] = None
    compile_model: Optional[Callable[..., None]] = None
    export_model: Optional[Callable[..., None]] = None
    to_targets: Optional[Callable[..., tf.Tensor]] = None


def search_space(hp: Any, batch_sizes: List[int]) -> Params:
    """The training hyper-parameters in every family's search space.

    How a model trains, in every family's Tuner search space: dropout, the
    learning rate and its decay, the batch (from `batch_sizes`) and the
    training's length (epochs and steps, models/schedule.py), declared on a
    KerasTuner `HyperParameters`.
    """
    return {
        'dropout':
            hp.Float('dropout', 0.0, 0.5, step=0.125),
        'learning_rate':
            hp.Choice('learning_rate', [3e-4, 1e-3, 3e-3]),
        'learning_rate_decay':
            hp.Choice('learning_rate_decay',
                      list(settings.LEARNING_RATE_DECAYS)),
        'batch_size':
            hp.Choice('batch_size', batch_sizes),
        'training_length':
            hp.Choice('training_length', list(settings.TRAINING_LENGTHS))
    }
