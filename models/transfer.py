"""Transfer: a model starts from another trained model's lower layers.

`--set transfer_from=PATH` names a SavedModel, or a model base path whose
newest version is taken (models/saved_model_dirs.py). The new model's lower
layers, every layer with weights before its first dense layer (the filter
banks of a convnet or FCN, the recurrent layers of an RNN), take the
source's weights where a layer's weights all match one of the source's by
name and shape, as `weights.warm_start` matches a whole model; the rest,
and the head (the first dense layer and all after it), start afresh. The
head is always new, so the source may have other classes.

Convolution kernels do not depend on the image size or the sequence length,
so they transfer between data of other sizes; what does depend on them (the
convnet's dense layer after `flatten`) is in the head. Other channels (gray
into colour) change the first convolution's shape, which then starts
afresh.

The layers taken stay frozen for the first `transfer_frozen_fraction` of
the epochs, while the head learns on top of them, and are then fine-tuned
at the learning rate times `transfer_learning_rate_factor`, while the new
layers keep the run's own rate and schedule: they have nothing to keep, and
a quarter of a small run's steps leaves a new head still learning (as in
Caffe's fine-tuning example: the new layer learns fast, the rest of the
model changes slowly).
"""

import dataclasses
import math
from typing import Any, Dict, List, Sequence

import tensorflow as tf
from absl import logging

from common import settings
from models import saved_model_dirs

keras = tf.keras


class TransferError(ValueError):
    """The source model has no layer the new model can take."""


def saved_model_variables(saved_model_dir: str) -> Dict[str, tf.Variable]:
    """Every variable a SavedModel holds, by name.

    Whether or not Keras traces were saved with it (models/export.py saves
    none).
    """
    loaded = tf.saved_model.load(saved_model_dir)
    return {
        v.name: v
        for v in tf.train.TrackableView(loaded).descendants()
        if isinstance(v, tf.Variable)
    }


def lower_layers(model: keras.Model) -> List[keras.layers.Layer]:
    """The layers with weights before the first dense layer.

    The layers with weights before the model's first dense layer, which with all
    that follows it is the head.
    """
    lower = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            break
        if layer.weights:
            lower.append(layer)
    return lower


def transfer_layers(model: keras.Model, source: str) -> Dict[str, Any]:
    """Copies the source's weights into `model`'s matching layers.

    Copies the source's weights into the matching lower layers of `model`.

    Args:
        model: The new, built model.
        source: A SavedModel or a model base path (its newest version).

    Returns:
        `transfer_from` (the SavedModel read), `layers` (those taken) and
        `new_layers` (those with weights that start afresh, the head's too).

    Raises:
        saved_model_dirs.SavedModelDirError: `source` is no SavedModel.
        TransferError: no lower layer matches.
    """
    saved_model = saved_model_dirs.newest_saved_model(source)
    theirs = saved_model_variables(saved_model)
    taken = []
    for layer in lower_layers(model):
        if all(w.name in theirs and theirs[w.name].shape == w.shape
               for w in layer.weights):
            for weight in layer.weights:
                weight.assign(theirs[weight.name])
            taken.append(layer.name)
    if not taken:
        raise TransferError(
            f'{saved_model}: no layer of the {model.name} below its head '
            'matches one of this model by name and shape; nothing to '
            'transfer')
    fresh = [
        layer.name
        for layer in model.layers
        if layer.weights and layer.name not in taken
    ]
    logging.info('Transferred from %s: %s; new: %s', saved_model, taken, fresh)
    return {'transfer_from': saved_model, 'layers': taken, 'new_layers': fresh}


def scale_updates(optimizer: keras.optimizers.Optimizer,
                  variables: Sequence[tf.Variable], factor: float) -> None:
    """Scales `optimizer`'s steps of `variables` by `factor`.

    Makes `optimizer` move `variables` by `factor` times its step, and every
    other variable as before.

    For Adam, whose moments do not depend on the learning rate, this is the
    learning rate (or its schedule, or what ReduceLROnPlateau makes of it)
    times `factor`, for those variables only.
    """
    # pylint: disable=protected-access
    # The optimizer's own key: it sees a distributed variable's components.
    scaled = {optimizer._var_key(v) for v in variables}
    update_step = optimizer.update_step

    def scaled_update_step(gradient, variable):
        if optimizer._var_key(variable) not in scaled:
            return update_step(gradient, variable)
        before = tf.identity(variable)
        update_step(gradient, variable)
        return variable.assign(before + factor * (variable - before))

    optimizer.update_step = scaled_update_step


class FreezeThenFineTune(keras.callbacks.Callback):
    """Unfreezes transferred layers after `frozen_epochs` epochs.

    Keeps `layer_names` frozen for the first `frozen_epochs` epochs of a fit,
    then trainable, at the optimizer's learning rate times `rate_factor` (the
    other layers at the rate itself).
    """

    def __init__(self,
                 layer_names: List[str],
                 frozen_epochs: int,
                 rate_factor: float = 1.0):
        super().__init__()
        self.layer_names = list(layer_names)
        self.frozen_epochs = int(frozen_epochs)
        self.rate_factor = float(rate_factor)
        self.frozen = False
        self.scaled = False

    def on_train_begin(self, logs=None):
        if self.frozen_epochs <= 0 and self.rate_factor == 1.0:
            return
        # Slots for every variable, the frozen ones too: the optimizer
        # refuses variables it was not built with once they are unfrozen.
        with self.model.distribute_strategy.scope():
            self.model.optimizer.build(self.model.trainable_variables)
        if self.rate_factor != 1.0 and not self.scaled:
            scale_updates(self.model.optimizer, [
                w for name in self.layer_names
                for w in self.model.get_layer(name).trainable_weights
            ], self.rate_factor)
            self.scaled = True
        if self.frozen_epochs > 0:
            self._set_trainable(False)

    def on_epoch_begin(self, epoch, logs=None):
        if self.frozen and epoch >= self.frozen_epochs:
            logging.info('Epoch %d: fine-tuning the transferred layers',
                         epoch + 1)
            self._set_trainable(True)

    def on_train_end(self, logs=None):
        if self.frozen:
            self._set_trainable(True)

    def _set_trainable(self, trainable: bool) -> None:
        for name in self.layer_names:
            self.model.get_layer(name).trainable = trainable
        self.frozen = not trainable
        # The train step is traced with the trainable variables of the
        # moment: trace it anew.
        self.model.train_function = self.model.make_train_function(force=True)


@dataclasses.dataclass
class Transfer:
    """A model started from another's layers, and how it is then trained.

    Attributes:
        report: What was transferred (`transfer_layers`), the frozen epochs
            and the fine-tuning factor.
        callback: Freezes, then unfreezes, the transferred layers in fit,
            and lowers their learning rate.
    """

    report: Dict[str, Any]
    callback: FreezeThenFineTune


def start_from(model: keras.Model, params: Dict[str, Any]) -> Transfer:
    """Transfers `transfer_from`'s lower layers into `model`.

    Transfers config `transfer_from`'s lower layers into `model` (built; compile
    it and fit it with the returned callback for `params['epochs']` epochs).
    """
    report = transfer_layers(model, params['transfer_from'])
    epochs = int(params['epochs'])
    fraction = float(settings.value(params, 'transfer_frozen_fraction'))
    frozen = min(epochs,
                 max(1, math.ceil(fraction * epochs)) if fraction > 0 else 0)
    factor = float(settings.value(params, 'transfer_learning_rate_factor'))
    report.update(frozen_epochs=frozen, fine_tune_rate_factor=factor)
    return Transfer(report=report,
                    callback=FreezeThenFineTune(report['layers'], frozen,
                                                factor))
