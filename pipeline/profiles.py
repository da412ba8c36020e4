"""The model families the pipeline runs, and their profiles.

`--model` names a family, `--profile` one of its profiles.

A family is a model package (models/) with the data it reads, its
tf.Transform preprocessing_fn, its TFX entry points (models/entry_points.py)
and its default data set; a profile is its settings' values for a run's
size. Settings every family shares have their default in
common/settings.py, not here.
"""

import copy
import dataclasses
import importlib.util
import os
from typing import Any, Dict, Optional, Tuple

from common import names

PROFILES = ('smoke', 'full')


def _sktime_data(name: str) -> str:
    """A UCR/UEA data set shipped as .ts files inside the sktime wheel."""
    spec = importlib.util.find_spec('sktime')
    if spec is None or not spec.submodule_search_locations:
        return os.path.join('sktime-not-installed', name)
    return os.path.join(spec.submodule_search_locations[0], 'datasets', 'data',
                        name)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """A model package and the data it learns from.

    Attributes:
        kind: The data kind it reads (names.IMAGES, UNLABELLED_IMAGES,
            SEQUENCES or CLIPS).
        preprocessing_fn: Dotted path of its tf.Transform preprocessing_fn.
        run_fn: Dotted path of its TFX Trainer run_fn.
        default_data: The public data set it trains on by default.
        profiles: Profile name -> hyper-parameters and data limits.
        tuner_fn: Dotted path of its TFX Tuner tuner_fn (random search).
        tuned_with: Other families its Tuner may choose instead of it
            (`tune_families`): they read the same tf.Transform output and
            serve the same signatures (models/sequence_io.py).
        grouped: Its examples carry a group label beside the class label,
            from the data's class -> group mapping (formats/class_groups.py).
        unlabelled: It learns without labels (pretraining): it reads a
            folder of images without class folders, or ignores a labelled
            set's labels, and its model is a trunk for `transfer_from`, not
            a classifier: no Evaluator, no ServingCheck.
    """

    kind: str
    preprocessing_fn: str
    run_fn: str
    default_data: str
    profiles: Dict[str, Dict[str, Any]]
    tuner_fn: Optional[str] = None
    tuned_with: Tuple[str, ...] = ()
    grouped: bool = False
    unlabelled: bool = False


# The sequence families: they read one tf.Transform output (the RNN's) and
# serve the same signatures (models/sequence_io.py), so a Tuner may choose
# any of them for another (`tune_families`).
SEQUENCE_FAMILIES = ('rnn', 'fcn', 'inception_time')


def _sequence_family(name: str, **fields: Any) -> ModelFamily:
    """The sequence family `name`, on JapaneseVowels by default."""
    return ModelFamily(
        kind=names.SEQUENCES,
        preprocessing_fn='models.rnn.preprocessing.preprocessing_fn',
        run_fn=f'models.entry_points.{name}_run_fn',
        tuner_fn=f'models.entry_points.{name}_tuner_fn',
        tuned_with=tuple(f for f in SEQUENCE_FAMILIES if f != name),
        default_data=_sktime_data('JapaneseVowels'),
        **fields)


_CONVNET_PROFILES: Dict[str, Dict[str, Any]] = {
    'smoke':
        dict(max_examples_per_split=2000,
             image_shape=[28, 28, 1],
             conv_filters=[16, 32],
             dense_units=64,
             epochs=1,
             min_train_steps=200,
             max_train_steps=0,
             batch_size=64,
             min_accuracy=0.3),
    'full':
        dict(max_examples_per_split=0,
             image_shape=[28, 28, 1],
             conv_filters=[32, 64],
             dense_units=256,
             epochs=15,
             batch_size=128,
             min_accuracy=0.9),
}


def _pretrain_profile(profile: str, **pretraining: Any) -> Dict[str, Any]:
    """The convnet's data limits, trunk and batch; pretraining's own epochs.

    The trunk's widths are the convnet's, so that it transfers into it.
    """
    convnet = _CONVNET_PROFILES[profile]
    shared = ('max_examples_per_split', 'image_shape', 'conv_filters',
              'min_train_steps', 'max_train_steps', 'batch_size')
    return {
        **{
            key: convnet[key] for key in shared if key in convnet
        },
        **pretraining
    }


def _embedding_profile(profile: str, **embedding: Any) -> Dict[str, Any]:
    """The embedding's profile: the convnet's, with its own settings.

    The convnet's `profile` (data limits, trunk, schedule; its multi-scale
    switch is a setting of the convnet's only: common/settings.py) and the
    embedding's own settings over it.
    """
    # Copies: the two families' profiles share no list.
    return {**copy.deepcopy(_CONVNET_PROFILES[profile]), **embedding}


MODELS: Dict[str, ModelFamily] = {
    'convnet':
        ModelFamily(
            kind=names.IMAGES,
            preprocessing_fn='models.convnet.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.convnet_run_fn',
            tuner_fn='models.entry_points.convnet_tuner_fn',
            default_data=names.FASHION_MNIST_DIR,
            profiles=_CONVNET_PROFILES),
    # Metric learning (models/embedding/): the convnet's trunk, unit-vector
    # embeddings, a triplet loss; classifies by nearest reference.
    'embedding':
        ModelFamily(
            kind=names.IMAGES,
            preprocessing_fn='models.convnet.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.embedding_run_fn',
            tuner_fn='models.entry_points.embedding_tuner_fn',
            default_data=names.FASHION_MNIST_DIR,
            profiles={
                'smoke':
                    _embedding_profile('smoke',
                                       embedding_dim=32,
                                       triplet_margin=0.2,
                                       triplet_mining='semi_hard',
                                       references_per_class=50),
                'full':
                    _embedding_profile('full',
                                       embedding_dim=64,
                                       triplet_margin=0.2,
                                       triplet_mining='semi_hard',
                                       references_per_class=200,
                                       min_accuracy=0.8),
            }),
    # Multi-task learning (models/multitask/): the convnet's trunk shared
    # by a class head and a group head; the convnet's profiles.
    'multitask':
        ModelFamily(
            kind=names.IMAGES,
            preprocessing_fn='models.multitask.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.multitask_run_fn',
            tuner_fn='models.entry_points.multitask_tuner_fn',
            default_data=names.FASHION_MNIST_DIR,
            grouped=True,
            profiles=copy.deepcopy(_CONVNET_PROFILES)),
    # 3-D convolutions on clips (models/convnet3d/); its default data is
    # written by `python -m bench.moving_clips` (docs/clips.md).
    'convnet3d':
        ModelFamily(
            kind=names.CLIPS,
            preprocessing_fn='models.convnet3d.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.convnet3d_run_fn',
            tuner_fn='models.entry_points.convnet3d_tuner_fn',
            default_data=os.path.expanduser(names.MOVING_CLIPS_DIR),
            profiles={
                'smoke':
                    dict(max_examples_per_split=1000,
                         conv_filters=[8, 16],
                         dense_units=32,
                         epochs=2,
                         min_train_steps=100,
                         max_train_steps=0,
                         batch_size=32,
                         min_accuracy=0.3),
                'full':
                    dict(max_examples_per_split=0,
                         conv_filters=[16, 32, 64],
                         dense_units=128,
                         epochs=15,
                         batch_size=32,
                         min_accuracy=0.8),
            }),
    # Pretraining without labels (models/convnet/pretraining.py): a masked
    # denoising autoencoder on the convnet's filter banks, at the convnet's
    # widths in each profile (so that its trunk transfers into it).
    'pretrain':
        ModelFamily(
            kind=names.UNLABELLED_IMAGES,
            preprocessing_fn='models.convnet.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.pretrain_run_fn',
            default_data=names.FASHION_MNIST_DIR,
            unlabelled=True,
            profiles={
                'smoke': _pretrain_profile('smoke', epochs=1),
                'full': _pretrain_profile('full', epochs=5),
            }),
    'rnn':
        _sequence_family(
            'rnn',
            # No small-data batch cap: a recurrent step costs about the same at
            # any batch (one step of the cell per time step), so more, smaller
            # steps would cost more time, not the same.
            profiles={
                'smoke':
                    dict(max_examples_per_split=0,
                         units=[32],
                         epochs=3,
                         min_train_steps=200,
                         max_train_steps=0,
                         batch_size=32,
                         clip_norm=1.0,
                         min_accuracy=0.2,
                         max_batch_fraction=0.0,
                         tune_families=True),
                'full':
                    dict(max_examples_per_split=0,
                         units=[64, 64],
                         epochs=60,
                         batch_size=32,
                         clip_norm=1.0,
                         min_accuracy=0.9,
                         max_batch_fraction=0.0,
                         tune_families=True),
            }),
    # Wang et al. 2017's FCN: the same data, preprocessing_fn and
    # signatures as the RNN.
    'fcn':
        _sequence_family('fcn',
                         profiles={
                             'smoke':
                                 dict(max_examples_per_split=0,
                                      conv_filters=[32, 64, 32],
                                      kernel_sizes=[8, 5, 3],
                                      dropout=0.0,
                                      epochs=3,
                                      min_train_steps=200,
                                      max_train_steps=0,
                                      batch_size=32,
                                      min_accuracy=0.2,
                                      tune_families=True),
                             'full':
                                 dict(max_examples_per_split=0,
                                      conv_filters=[128, 256, 128],
                                      kernel_sizes=[8, 5, 3],
                                      dropout=0.0,
                                      epochs=60,
                                      batch_size=16,
                                      min_accuracy=0.9,
                                      tune_families=True),
                         }),
    # Fawaz et al. 2020's InceptionTime (one network, not their ensemble of
    # five): the same data, preprocessing_fn and signatures as the RNN.
    'inception_time':
        _sequence_family(
            'inception_time',
            profiles={
                'smoke':
                    dict(max_examples_per_split=0,
                         conv_filters=[16, 16, 16],
                         kernel_sizes=[10, 5, 3],
                         bottleneck_filters=8,
                         dropout=0.0,
                         epochs=3,
                         min_train_steps=200,
                         max_train_steps=0,
                         batch_size=32,
                         min_accuracy=0.2,
                         tune_families=True),
                # The paper's: six modules of 32 filters a branch, kernels
                # 40/20/10 (and its bottleneck of 32, the setting's
                # default); batches of 64 however small the set, not the
                # FCN's cap (OSULeaf 94.2 against 89.7 in batches of 18),
                # and the rate halved after 100 steps without a lower loss:
                # the paper's 50 epochs on ACSF1's 2-step epochs, where 500
                # never halved it (docs/sequences.md).
                'full':
                    dict(max_examples_per_split=0,
                         conv_filters=[32] * 6,
                         kernel_sizes=[40, 20, 10],
                         dropout=0.0,
                         epochs=60,
                         batch_size=64,
                         max_batch_fraction=0.0,
                         lr_plateau_steps=100,
                         min_accuracy=0.9,
                         tune_families=True),
            }),
}

# Splits a data set does not give are carved from train by a stable hash.
