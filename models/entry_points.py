"""The TFX entry points of every family: Trainer run_fns, Tuner tuner_fns.

pipeline/profiles.py MODELS names them; each finds its family's recipe by
name (models/families.py) and hands it to the Trainer's run
(models/trainer.py) or the Tuner's tuner_fn (models/tuning.py). After a
Tuner that chose between families (`tune_families`), the Trainer trains the
best trial's family.
"""

from typing import TYPE_CHECKING

from models import families
from models import trainer

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx


def _run(fn_args: 'tfx.components.FnArgs', name: str) -> None:
    trainer.run(fn_args, families.recipe(name))


def _tune(fn_args: 'tfx.components.FnArgs',
          name: str) -> 'tfx.components.TunerFnResult':
    # KerasTuner is imported only where a Tuner runs.
    from models import tuning  # pylint: disable=import-outside-toplevel
    return tuning.tuner_fn(fn_args, families.recipe(name))


def convnet_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the convnet."""
    _run(fn_args, 'convnet')


def convnet_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the convnet."""
    return _tune(fn_args, 'convnet')


def embedding_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the embedding model."""
    _run(fn_args, 'embedding')


def embedding_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the embedding model."""
    return _tune(fn_args, 'embedding')


def multitask_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the multi-task model."""
    _run(fn_args, 'multitask')


def multitask_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the multi-task model."""
    return _tune(fn_args, 'multitask')


def convnet3d_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the clip convnet."""
    _run(fn_args, 'convnet3d')


def convnet3d_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the clip convnet."""
    return _tune(fn_args, 'convnet3d')


def pretrain_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of pretraining without labels."""
    # Its own run (models/convnet/pretraining.py): no classifier, no recipe.
    from models.convnet import pretraining  # pylint: disable=import-outside-toplevel
    pretraining.run(fn_args)


def rnn_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the RNN."""
    _run(fn_args, 'rnn')


def rnn_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the RNN (and the other sequence families).

    The other sequence families: the FCN and InceptionTime, with
    `tune_families`.
    """
    return _tune(fn_args, 'rnn')


def fcn_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of the FCN."""
    _run(fn_args, 'fcn')


def fcn_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of the FCN (and the other sequence families)."""
    return _tune(fn_args, 'fcn')


def inception_time_run_fn(fn_args: 'tfx.components.FnArgs') -> None:
    """The TFX Trainer's run_fn of InceptionTime."""
    _run(fn_args, 'inception_time')


def inception_time_tuner_fn(
        fn_args: 'tfx.components.FnArgs') -> 'tfx.components.TunerFnResult':
    """The TFX Tuner's tuner_fn of InceptionTime (and the other families)."""
    return _tune(fn_args, 'inception_time')
