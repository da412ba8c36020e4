"""Every setting of a run (`--set KEY=VALUE`): one table, one row each.

A row gives what the setting does, its default (the same for every model
family, or None where each family's profiles give it: pipeline/profiles.py
MODELS), the words it may be and the least value of its numbers. The
command line's `--set` check and `--list-settings`, the Trainer's and
Tuner's params and docs/settings.md (`make settings-doc`) all read it;
code that reads a value reads its default here (`value`).
"""

import copy
import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from common import signatures

# Groups, in the order docs/settings.md shows them.
DATA = 'Data'
MODEL = 'Model'
TRAINING = 'Training'
TUNING = 'Tuning'
DISTRIBUTION = 'Distribution'
START = 'Warm start and transfer'
PUSH = 'Pushing'
GROUPS = (DATA, MODEL, TRAINING, TUNING, DISTRIBUTION, START, PUSH)

# The least value of each number in a setting.
NON_NEGATIVE = 'non-negative'  # 0 or more.
COUNT = 'count'  # It counts something: at least 1.
ABOVE_ZERO = 'above zero'  # A factor of a length: more than 0.
BOUNDS = (NON_NEGATIVE, COUNT, ABOVE_ZERO)

# Words some settings take, named for the code that reads them.
STRATEGIES = ('auto', 'mirrored', 'one_device', 'multi_worker',
              'parameter_server')
# The strategies that train as a cluster of processes (models/workers.py).
CLUSTER_STRATEGIES = ('multi_worker', 'parameter_server')
LEARNING_RATE_DECAYS = ('plateau', 'cosine')
LEARNING_RATE_SCALINGS = ('linear', 'sqrt', 'none')
AUGMENTATIONS = ('none', 'shift', 'shift_flip')
CELLS = ('lstm', 'gru')
SEQUENCE_NORMALIZATIONS = ('per_set', 'per_series')
# How the clip family (models/convnet3d/) convolves a clip: 3-D filter
# banks over frames and space, or a 2-D convnet on each frame whose
# frames' class scores are averaged (the baseline).
CLIP_CONVOLUTIONS = ('3d', 'per_frame')
# The families that read sequences (pipeline/profiles.py MODELS).
SEQUENCE_FAMILIES = ('rnn', 'fcn', 'inception_time')
ON_BAD_RECORD_FAIL = 'fail'
ON_BAD_RECORD_SKIP = 'skip'
ON_BAD_RECORD = (ON_BAD_RECORD_FAIL, ON_BAD_RECORD_SKIP)
TRIPLET_MINING = ('semi_hard', 'hard')
# The multi-task model's tasks (models/multitask/).
TASKS = signatures.TASKS
# The search space's `training_length`s: half, all or twice the profile's
# epochs and steps (models/schedule.py training_schedule).
TRAINING_LENGTHS = (0.5, 1.0, 2.0)
# With fewer eval examples than this, eval accuracy moves in steps too
# coarse to choose an epoch by (two examples: 0, 0.5 or 1; measured on
# ArrowHead's cut: an epoch at eval 1.0 gave test accuracy 0.39), so the
# training loss chooses (models/schedule.py eval_too_small).
MIN_EVAL_EXAMPLES = 50


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: what it does, its default, the values it takes.

    Attributes:
        name: The key of `--set KEY=VALUE` and of the Trainer's params.
        help: What it does, in one line.
        default: Its value unless a profile gives another; None where only
            the families' profiles give it.
        families: The families that take it (pipeline/profiles.py MODELS);
            empty: every family.
        group: Where docs/settings.md lists it (one of GROUPS).
        choices: The words it may be; empty when it is not a word.
        bound: The least value of each number in it (one of BOUNDS).
    """

    name: str
    help: str
    default: Any = None
    families: Tuple[str, ...] = ()
    group: str = TRAINING
    choices: Tuple[str, ...] = ()
    bound: str = NON_NEGATIVE


_TABLE = (
    # data
    Setting('max_examples_per_split',
            'examples read per split, 0 for all',
            group=DATA),
    # '': the data's own groups.json (formats/class_groups.py).
    Setting('groups_file',
            "JSON file mapping each class name to its group name; '': "
            'groups.json at the root of the data',
            default='',
            families=('multitask',),
            group=DATA),
    # Read the newest N spans (span-{SPAN} layouts).
    Setting('span_window',
            'read the newest N span-N folders',
            default=1,
            group=DATA,
            bound=COUNT),
    Setting('on_bad_record',
            'an unreadable record: fail the run, or skip and report it',
            default=ON_BAD_RECORD_FAIL,
            group=DATA,
            choices=ON_BAD_RECORD),
    Setting(
        'sequence_normalization',
        "sequences' z-score: per_set (each channel's mean and deviation over "
        "the training split) or per_series (each series' channels over its "
        'own steps, as the UCR archive normalizes)',
        default=SEQUENCE_NORMALIZATIONS[0],
        families=SEQUENCE_FAMILIES,
        group=DATA,
        choices=SEQUENCE_NORMALIZATIONS),
    Setting('max_length',
            'longest sequence accepted, 0 for any',
            default=0,
            group=DATA),
    # Jensen-Shannon divergence from the last passed span's statistics above
    # which a feature is reported as drifted; stop the run on drift or not.
    Setting('drift_threshold',
            'Jensen-Shannon divergence from the last passed span above which a '
            'feature is reported as drifted',
            default=0.3,
            group=DATA),
    Setting('stop_on_drift',
            'stop the run when a feature drifted',
            default=False,
            group=DATA),
    # A curated schema.pbtxt every span is validated against ('' infers
    # one from each run's own statistics, which its data cannot break).
    Setting(
        'schema_path',
        "a curated schema.pbtxt every span must match (ImportSchemaGen); '' "
        "infers one from each run's data",
        default='',
        group=DATA),
    # model
    Setting('image_shape',
            '[height, width, channels] images are resized to',
            group=MODEL,
            bound=COUNT),
    Setting('conv_filters',
            'convolution filters per block, one number per block '
            '(inception_time: per branch, one number per module)',
            group=MODEL,
            bound=COUNT),
    Setting('dense_units',
            'units of the dense layer before the classifier',
            group=MODEL,
            bound=COUNT),
    Setting(
        'scales',
        'the image at these downsampling factors at once, e.g. [1,2,4] (full, '
        'half, quarter resolution), merged before the dense layer; [1]: '
        'single-scale',
        default=[1],
        families=('convnet', 'multitask'),
        group=MODEL,
        bound=COUNT),
    Setting('scales_share_weights',
            'one stack of filter banks for every scale (true) or one per scale '
            '(false)',
            default=False,
            families=('convnet', 'multitask'),
            group=MODEL),
    Setting(
        'augmentation',
        "random changes to each training image: 'none', 'shift' (by up to a "
        "tenth of its size) or 'shift_flip' (and left-right)",
        default=AUGMENTATIONS[0],
        families=('convnet', 'embedding', 'multitask'),
        group=MODEL,
        choices=AUGMENTATIONS),
    Setting('clip_convolution',
            "'3d': 3-D filter banks over frames and space; 'per_frame': a 2-D "
            "convnet on each frame, the frames' class scores averaged",
            default=CLIP_CONVOLUTIONS[0],
            families=('convnet3d',),
            group=MODEL,
            choices=CLIP_CONVOLUTIONS),
    Setting('cell',
            'recurrent cell: lstm or gru',
            default=CELLS[0],
            families=('rnn',),
            group=MODEL,
            choices=CELLS),
    Setting('units',
            'units per recurrent layer, one number per layer',
            group=MODEL,
            bound=COUNT),
    Setting('bidirectional',
            'read sequences both ways',
            default=True,
            families=('rnn',),
            group=MODEL),
    Setting('kernel_sizes',
            'convolution kernel widths, one number per block (inception_time: '
            'per parallel convolution of every module)',
            group=MODEL,
            bound=COUNT),
    Setting('bottleneck_filters',
            "width of each Inception module's bottleneck (1x1 convolution)",
            default=32,
            families=('inception_time',),
            group=MODEL,
            bound=COUNT),
    Setting('dropout', 'dropout rate', default=0.25, group=MODEL),
    Setting('embedding_dim',
            'width of the unit-vector embedding',
            group=MODEL,
            bound=COUNT),
    Setting('triplet_margin',
            'triplet loss margin, in squared distance of unit vectors',
            group=MODEL),
    Setting('triplet_mining',
            'triplets mined in each batch: semi_hard (FaceNet) or hard (batch-'
            'hard)',
            group=MODEL,
            choices=TRIPLET_MINING),
    Setting(
        'references_per_class',
        'training examples per class kept as references in the exported model,'
        ' 0: all',
        group=MODEL),
    # Multi-task learning (models/multitask/): a shared trunk, a head per
    # task (the classes, their groups), each with its own weighted loss.
    Setting('class_loss_weight',
            "weight of the class head's cross-entropy in the training loss",
            default=1.0,
            families=('multitask',),
            group=MODEL),
    Setting('group_loss_weight',
            "weight of the group head's cross-entropy in the training loss",
            default=1.0,
            families=('multitask',),
            group=MODEL),
    Setting('primary_task',
            "the head Classify, `scores`, the kept epoch and the blessing "
            "(min_accuracy) follow: 'class' or 'group'",
            default=TASKS[0],
            families=('multitask',),
            group=MODEL,
            choices=TASKS),
    # Pretraining without labels (models/convnet/pretraining.py): a masked
    # denoising autoencoder on the convnet's filter banks.
    Setting('pretrain_mask_patch',
            'side in pixels of the square patches blanked out of each image '
            'the pretraining autoencoder rebuilds',
            default=4,
            families=('pretrain',),
            group=MODEL,
            bound=COUNT),
    Setting('pretrain_mask_fraction',
            'fraction of the patches blanked out of each pretraining image',
            default=0.5,
            families=('pretrain',),
            group=MODEL),
    Setting('pretrain_noise',
            'standard deviation of the Gaussian noise added to each z-scored '
            'pretraining image',
            default=0.2,
            families=('pretrain',),
            group=MODEL),
    # training
    Setting('epochs', 'passes over the training split', bound=COUNT),
    Setting('batch_size', 'examples per step and replica', bound=COUNT),
    Setting('learning_rate', "Adam's learning rate", default=0.001),
    Setting('clip_norm', 'clip gradients to this global norm (0: no clipping)'),
    Setting('seed', 'seed of weights, dropout and shuffling', default=42),
    # Fawaz et al.'s InceptionTime is five networks' average (models/
    # ensemble.py); one network trains in a fifth of the time.
    Setting('ensemble_size',
            'networks trained apart (seeds seed, seed+1, ...) whose class '
            'scores the served model averages',
            default=1,
            families=SEQUENCE_FAMILIES,
            bound=COUNT),
    # Training length adapts to the data (models/schedule.py): at least this
    # many steps, however few an epoch has; early stopping on the eval
    # split's accuracy after this many epochs without a better one (or a
    # fifth of the epochs), restoring the best epoch's weights; batch-norm
    # statistics recomputed over up to this many training batches.
    Setting('min_train_steps',
            'train at least this many steps of batch_size (more, smaller steps '
            'when the batch is capped), however small the data',
            default=1000),
    # With too few eval examples to choose an epoch by (the training loss
    # chooses), training goes on while the training loss falls, up to this
    # many steps (models/schedule.py); 0 (the smoke profiles: minutes):
    # min_train_steps as for any set.
    Setting('max_train_steps',
            f'with under {MIN_EVAL_EXAMPLES} eval examples, train on while the '
            'training loss falls, up to this many steps of batch_size; 0: '
            'min_train_steps',
            default=5000),
    # With too few eval examples to choose an epoch by, the eval split
    # serves only the printed val_ metrics: the Trainer may train on it too,
    # the whole training set, as the FCN and InceptionTime authors train
    # (models/training.py _plan). The Tuner's trials never do: they are
    # scored on it.
    Setting(
        'train_on_small_eval',
        f'with under {MIN_EVAL_EXAMPLES} eval examples, train on the eval '
        'split too (its val_ metrics are then of trained-on data); never in '
        'Tuner trials',
        default=False),
    # Multiplies epochs, min_train_steps and max_train_steps (a dimension
    # of the Tuner's search space).
    Setting('training_length',
            'epochs, min_train_steps and max_train_steps times this',
            default=1.0,
            bound=ABOVE_ZERO),
    Setting(
        'early_stopping_patience',
        'epochs without a better eval accuracy before training stops (the best'
        ' epoch is kept)',
        default=10),
    Setting('recalibration_batches',
            'training batches batch-norm statistics are recomputed over before '
            'export',
            default=100),
    # Small data: the global batch is at most this fraction of the training
    # examples (FCN's min(N/10, 16)), min_train_steps then counts steps of
    # the configured batch_size (more, smaller steps); the learning rate is
    # halved when the training loss has not improved for lr_plateau_steps
    # steps (whole epochs), down to min_learning_rate (FCN's
    # ReduceLROnPlateau).
    Setting(
        'max_batch_fraction',
        'the global batch is at most this fraction of the training examples, '
        '0: no cap',
        default=0.1),
    Setting(
        'lr_plateau_factor',
        'multiply the learning rate by this when the training loss stalls, 0: '
        'never',
        default=0.5),
    Setting('lr_plateau_steps',
            'steps (rounded up to whole epochs) without a lower training loss '
            'before the learning rate drops',
            default=500),
    Setting('min_learning_rate',
            'the learning rate drops no lower than this',
            default=0.0001),
    # When training stops (models/schedule.py ConvergenceStop): a training
    # loss improves only when lower by more than this fraction of it (for
    # early stopping and the plateau alike); a training set at accuracy
    # 1.0 for fitted_steps steps (whole epochs; 0: never) at a median loss
    # under fitted_loss is fitted, and training ends. fitted_loss 0.05, not
    # 0.01: in batches of 3 ArrowHead's FCN holds accuracy 1.0 at a median
    # loss just under 0.05; 0.01 trained it a fifth longer, to a lower test
    # accuracy (docs/training-stops.md), and stopped the other runs alike.
    Setting(
        'min_loss_improvement',
        'a training loss counts as lower (for early stopping and the plateau) '
        'only when below the best by more than this fraction of it',
        default=0.01),
    Setting('fitted_loss',
            'training ends when the training accuracy has been 1.0 for '
            'fitted_steps steps and their median loss is under this',
            default=0.05),
    Setting(
        'fitted_steps',
        'steps (rounded up to whole epochs) at training accuracy 1.0 with a '
        'median loss under fitted_loss before training ends, 0: never',
        default=200),
    # How the rate falls (models/schedule.py decayed_learning_rate):
    # 'plateau' (halved when the training loss stalls) or 'cosine' (to
    # min_learning_rate over the training's steps).
    Setting('learning_rate_decay',
            "how the rate falls: 'plateau' or 'cosine'",
            default='plateau',
            choices=LEARNING_RATE_DECAYS),
    # 0: from the steps an epoch (models/schedule.py training_schedule).
    Setting('batch_norm_momentum',
            "batch-norm moving averages' momentum, 0: from the steps an epoch",
            default=0.0),
    # Keep the parsed training and eval examples in memory after the first
    # epoch (models/inputs.py) when they fit in cache_memory_mb; false:
    # always stream them from the files.
    Setting('cache_examples',
            'keep parsed examples in memory after the first epoch (if they '
            'fit in cache_memory_mb)',
            default=True),
    # The memory (MiB) the Trainer may keep parsed examples in: the training
    # split is cached if it fits, then the eval split in what is left;
    # otherwise streamed from disk every epoch (models/training.py
    # cache_plan). 0: a quarter of the memory free when training starts.
    Setting('cache_memory_mb',
            'MiB the parsed examples kept in memory may take (0: a quarter of '
            'the free memory); a split that does not fit is streamed',
            default=0.0),
    # What a plain Keras script does not do (models/training.py
    # apply_speedups): the model's steps compiled by XLA, and this many
    # steps per call of the step function. Off: neither paid for any family
    # here (docs/results/performance.md; bench/step_time.py).
    Setting('jit_compile',
            "compile the model's training and eval steps with XLA",
            default=False),
    Setting('steps_per_execution',
            'training steps per call of the step function',
            default=1,
            bound=COUNT),
    # tuning
    # Random search (TFX Tuner) before training: this many trials, 0 = off,
    # and no trial starts after tune_seconds of searching.
    Setting('tune_trials',
            'random-search trials before training (TFX Tuner), 0: none',
            default=0,
            group=TUNING),
    Setting('tune_seconds',
            'no trial starts after this many seconds of search',
            default=3600,
            group=TUNING),
    # Each trial trains this fraction of the Trainer's epochs (at least
    # one): on a large data set a third ranks the trials at a third of the
    # cost.
    Setting('tune_epochs_fraction',
            'each trial trains this fraction of the epochs',
            default=1.0,
            group=TUNING,
            bound=ABOVE_ZERO),
    Setting(
        'tune_families',
        'the Tuner also chooses the sequence family (rnn or fcn, each with its'
        " own profile's settings under the trial's values); the Trainer trains"
        " the best trial's",
        group=TUNING),
    # distribution
    Setting('strategy',
            'tf.distribute strategy (as --strategy)',
            default='auto',
            group=DISTRIBUTION,
            choices=STRATEGIES),
    # Scale-out (models/distribute.py, models/workers.py). `mirrored` on a
    # machine without GPUs mirrors over this many logical CPU devices;
    # `multi_worker` and `parameter_server` outside a cluster start this many
    # worker processes (and `parameter_server` this many parameter servers
    # and a chief), stopped after worker_timeout_seconds (0: no limit). The
    # TFJob manifests under deploy/ have as many replicas (a test checks).
    Setting('cpu_devices',
            'logical CPU devices `mirrored` uses when there is no GPU',
            default=2,
            group=DISTRIBUTION,
            bound=COUNT),
    Setting('workers',
            'worker processes `multi_worker` and `parameter_server` start '
            'outside a cluster',
            default=2,
            group=DISTRIBUTION,
            bound=COUNT),
    Setting('parameter_servers',
            'parameter-server processes `parameter_server` starts outside a '
            'cluster',
            default=1,
            group=DISTRIBUTION,
            bound=COUNT),
    Setting('worker_timeout_seconds',
            'stop the workers after this long, 0: no limit',
            default=0,
            group=DISTRIBUTION),
    # learning_rate is for one replica's batch_size; over many replicas the
    # global batch grows, and the rate with it (linear, sqrt or none),
    # reached by a linear warm-up over warmup_epochs.
    Setting(
        'learning_rate_scaling',
        'how the learning rate grows with the replicas: linear, sqrt or none',
        default='linear',
        group=DISTRIBUTION,
        choices=LEARNING_RATE_SCALINGS),
    Setting('warmup_epochs',
            'epochs of linear warm-up to the scaled learning rate',
            default=1,
            group=DISTRIBUTION),
    # start
    # Start from the last blessed model's weights when the shapes match.
    Setting('warm_start',
            "start from the last blessed model's weights",
            default=False,
            group=START),
    # Start from another trained model's lower layers (models/transfer.py):
    # frozen for a fraction of the epochs, then fine-tuned at the learning
    # rate times a factor.
    Setting(
        'transfer_from',
        'start from the lower layers (before the first dense layer) of this '
        'SavedModel, or of the newest version in this model base path, that '
        "match by name and shape; '': from scratch",
        default='',
        group=START),
    Setting('transfer_frozen_fraction',
            'fraction of the epochs the transferred layers stay frozen before '
            'fine-tuning',
            default=0.25,
            group=START),
    Setting(
        'transfer_learning_rate_factor',
        'the learning rate is multiplied by this once the transferred layers '
        'are unfrozen',
        default=0.1,
        group=START),
    # push
    Setting('min_accuracy',
            'test accuracy a model needs to be pushed',
            group=PUSH),
    # A candidate may lose at most this much test accuracy against the last
    # blessed model and still be pushed.
    Setting(
        'max_accuracy_drop',
        'test accuracy a model may lose against the last blessed one and still'
        ' be pushed',
        default=0.0,
        group=PUSH),
)
SETTINGS: Dict[str, Setting] = {setting.name: setting for setting in _TABLE}
# Name -> default, for the settings every family takes.
DEFAULTS: Dict[str, Any] = {
    setting.name: setting.default
    for setting in _TABLE
    if setting.default is not None and not setting.families
}


def family_defaults(family: str) -> Dict[str, Any]:
    """Name -> default of every setting `family` takes that has one."""
    return {
        setting.name: copy.deepcopy(setting.default)
        for setting in _TABLE
        if setting.default is not None and
        (not setting.families or family in setting.families)
    }


def value(params: Mapping[str, Any], name: str) -> Any:
    """`params[name]`, else the setting's default (KeyError without one)."""
    if name in params:
        return params[name]
    default: Optional[Any] = SETTINGS[name].default
    if default is None:
        raise KeyError(f'{name}: not in params and no default')
    return copy.deepcopy(default)
