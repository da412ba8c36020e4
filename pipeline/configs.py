"""Everything a pipeline run is configured by: models, profiles, paths, Beam.

Code elsewhere reads these facts from here; nothing below runs anything.
A run is described by one `RunConfig`, built by the command line from a
model name, a profile and flags.
"""

import copy
import dataclasses
import difflib
import importlib.util
import json
import os
import posixpath
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from common import names
from common import settings

DEFAULT_HOME = 'tfx_home'
PROFILES = ('smoke', 'full')
# The Kubeflow image (Dockerfile; `make image` builds it): its repository,
# tagged by default with this checkout's `git describe` (default_image()),
# and where it holds each model's default data set.
IMAGE_REPOSITORY = 'tfx-deep-pipelines'
IMAGE_DATA_DIR = '/pipeline/data'
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_image() -> Optional[str]:
    """The image tag `make image` builds from this checkout.

    `tfx-deep-pipelines:<git describe --always --dirty>` of this checkout, the
    name `make image` builds; None outside a git checkout.
    """
    try:
        described = subprocess.run(
            ['git', '-C', _REPO_DIR, 'describe', '--always', '--dirty'],
            capture_output=True,
            text=True,
            check=True,
            timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return f'{IMAGE_REPOSITORY}:{described.stdout.strip()}'


class KubeflowConfigError(ValueError):
    """A Kubeflow job cannot be written: a required setting is missing."""


@dataclasses.dataclass(frozen=True)
class KubeflowTarget:
    """Where a compiled Kubeflow job runs, as its pods see it.

    Attributes:
        image: Container image of every component.
        pipeline_root: Artifact root (gs://, s3:// or a path mounted in every
            pod).
        data: The raw data's URI as the pods read it.
        serving_model_dir: Where Pusher writes versions:
            `<pipeline root>/serving/<model>`.
    """

    image: str
    pipeline_root: str
    data: str
    serving_model_dir: str


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
        kind: The data kind it reads (names.IMAGES or SEQUENCES).
        preprocessing_fn: Dotted path of its tf.Transform preprocessing_fn.
        run_fn: Dotted path of its TFX Trainer run_fn.
        default_data: The public data set it trains on by default.
        profiles: Profile name -> hyper-parameters and data limits.
        tuner_fn: Dotted path of its TFX Tuner tuner_fn (random search).
        tuned_with: Other families its Tuner may choose instead of it
            (`tune_families`): they read the same tf.Transform output and
            serve the same signatures (models/sequence_io.py).
    """

    kind: str
    preprocessing_fn: str
    run_fn: str
    default_data: str
    profiles: Dict[str, Dict[str, Any]]
    tuner_fn: Optional[str] = None
    tuned_with: Tuple[str, ...] = ()


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
    'rnn':
        ModelFamily(
            kind=names.SEQUENCES,
            preprocessing_fn='models.rnn.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.rnn_run_fn',
            tuner_fn='models.entry_points.rnn_tuner_fn',
            tuned_with=('fcn',),
            default_data=_sktime_data('JapaneseVowels'),
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
        ModelFamily(
            kind=names.SEQUENCES,
            preprocessing_fn='models.rnn.preprocessing.preprocessing_fn',
            run_fn='models.entry_points.fcn_run_fn',
            tuner_fn='models.entry_points.fcn_tuner_fn',
            tuned_with=('rnn',),
            default_data=_sktime_data('JapaneseVowels'),
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
}

# Splits a data set does not give are carved from train by a stable hash.
EVAL_PERCENT = 10
TEST_PERCENT = 20


class SettingError(ValueError):
    """A `--set KEY=VALUE` the model's configuration does not accept."""


def setting_defaults(model: str) -> Dict[str, Dict[str, Any]]:
    """Every settable key of `model` -> profile -> its default value."""
    keys: Dict[str, Dict[str, Any]] = {}
    for profile in PROFILES:
        values = {
            **settings.family_defaults(model),
            **MODELS[model].profiles[profile]
        }
        for key, value in values.items():
            keys.setdefault(key, {})[profile] = value
    return keys


def parse_setting(text: str) -> Tuple[str, Any]:
    """`KEY=VALUE` -> (key, value): JSON when it parses, else the text."""
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise SettingError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return 'true or false'
    if isinstance(value, int):
        return 'an integer'
    if isinstance(value, float):
        return 'a number'
    if isinstance(value, list):
        inner = _type_name(value[0]) if value else 'values'
        return f'a list of {inner.replace("an ", "").replace("a ", "")}s'
    return 'text'


def _matches(value: Any, default: Any) -> bool:
    """Whether `value` has the type of `default` (an int is a number)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return (isinstance(value, (int, float)) and not isinstance(value, bool))
    if isinstance(default, list):
        return (isinstance(value, list) and
                all(_matches(v, default[0]) for v in value)
                if default else isinstance(value, list))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_overrides(model: str, overrides) -> None:
    """Raises SettingError on the first override `model` refuses.

    Raises SettingError naming the first key or value `model` does not accept:
    unknown keys (with the closest known ones), values whose type differs from
    the default's, words outside the setting's choices, numbers below its bound
    (common/settings.py).
    """
    defaults = setting_defaults(model)
    for key, value in overrides:
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=3)
            hint = (f'; did you mean {" or ".join(close)}?'
                    if close else '; `python -m pipeline run --model '
                    f'{model} --list-settings` lists them')
            raise SettingError(f'--set {key}: no such setting for {model}'
                               f'{hint}')
        default = next(iter(defaults[key].values()))
        if not _matches(value, default):
            raise SettingError(
                f'--set {key}={json.dumps(value)}: expected '
                f'{_type_name(default)}, like {json.dumps(default)}')
        setting = settings.SETTINGS[key]
        if setting.choices and value not in setting.choices:
            raise SettingError(f'--set {key}={value}: expected one of '
                               f'{", ".join(setting.choices)}')
        counts = setting.bound == settings.COUNT
        numbers = value if isinstance(value, list) else [value]
        if any(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v <
            (1 if counts else 0) for v in numbers):
            raise SettingError(f'--set {key}={json.dumps(value)}: must be '
                               f'{"positive" if counts else "0 or more"}')
        if setting.bound == settings.ABOVE_ZERO and value <= 0:
            raise SettingError(f'--set {key}={value}: must be above 0')


def settings_table(model: str) -> str:
    """Every settable key of `model`: its default per profile, what it does."""
    rows = [('key', *PROFILES, 'what it does')]
    for key, values in sorted(setting_defaults(model).items()):
        rows.append((key, *(json.dumps(values[p]) for p in PROFILES),
                     settings.SETTINGS[key].help))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return '\n'.join('  '.join([c.ljust(w) for c, w in zip(row, widths)] +
                               [row[-1]]).rstrip() for row in rows)


def default_beam_args() -> List[str]:
    """Beam's FnApiRunner, in memory: bundles run in the pipeline's process.

    Not `DirectRunner`: since Beam 2.68 it first tries the Prism runner,
    which downloads a Go binary from GitHub at run time. Offline it fails,
    falls back to the FnApiRunner and leaves a temporary folder behind, once
    for every Beam component; online the pipeline would run on a binary
    nobody tested with it. Beam's advice is to name the FnApiRunner.

    In memory, measured by bench/ (2 cores): multi_processing starts a worker
    process per core for every Beam component, each importing TensorFlow
    anew, which costs ~20-40 s per component; ExampleGen + StatisticsGen +
    Transform of Fashion-MNIST took 160 s with it and 49 s in memory (198 s
    and 130 s at 4x the data), and the smoke run 204 s against 108 s.
    multi_threading was no faster than in_memory. TensorFlow ops inside the
    bundles still use every core. `--beam-arg` flags replace these: on a
    large machine or data set pass `--beam-arg=--runner=FnApiRunner
    --beam-arg=--direct_running_mode=multi_processing
    --beam-arg=--direct_num_workers=N`, or another runner (Flink, Spark,
    Dataflow), e.g. `--beam-arg=--runner=FlinkRunner`.
    """
    return ['--runner=FnApiRunner', '--direct_running_mode=in_memory']


# Beam runners `--beam-arg=--runner=NAME` may name (Beam accepts any case,
# without "Runner", or a module path). Tested here: FnApiRunner, in memory or
# multi_processing. Passed through untested (they need a cluster or a job
# server jar no registry here ships): Flink, Spark, Dataflow, portable.
BEAM_RUNNERS = ('FnApiRunner', 'FlinkRunner', 'SparkRunner', 'DataflowRunner',
                'PortableRunner')
# Refused before the run, with why.
BEAM_RUNNERS_REFUSED = {
    'DaskRunner': 'in Beam 2.74 it loses data while reporting success '
                  '(only the last branch of a graph runs, beam.io.Read does '
                  'nothing)',
    'DirectRunner': 'since Beam 2.68 it first downloads the Prism runner '
                    'from GitHub',
    'PrismRunner': 'it downloads a Go binary from GitHub at run time',
    'SwitchingDirectRunner': 'it is the DirectRunner, which first downloads '
                             'the Prism runner from GitHub',
}
DIRECT_RUNNING_MODES = ('in_memory', 'multi_threading', 'multi_processing')


def _flag_values(beam_args: List[str], name: str) -> List[str]:
    """Values of `--name=V` and `--name V` in `beam_args`."""
    values = []
    for index, arg in enumerate(beam_args):
        if arg.startswith(f'--{name}='):
            values.append(arg.split('=', 1)[1])
        elif arg == f'--{name}' and index + 1 < len(beam_args):
            values.append(beam_args[index + 1])
    return values


def _runner_key(value: str) -> str:
    """`--runner`'s value as Beam matches it.

    `--runner`'s value as Beam matches it: any case, with or without "Runner" or
    a module path.
    """
    key = value.rsplit('.', 1)[-1].lower()
    return key if key.endswith('runner') else key + 'runner'


def beam_runs_locally(beam_args: List[str]) -> bool:
    """Whether Beam runs the bundles on this machine.

    Whether Beam runs the bundles on this machine: the FnApiRunner, in this
    process or in worker processes of this Python environment.
    """
    runners = _flag_values(beam_args, 'runner')
    return bool(runners) and _runner_key(runners[-1]) == 'fnapirunner'


def beam_args_problem(beam_args: List[str]) -> Optional[str]:
    """What is wrong with `--beam-arg` flags, in one line; None if nothing.

    Checks the runner (one of BEAM_RUNNERS, not a refused one) and
    `--direct_running_mode`, so that a typo or a runner known to be broken
    stops the run before it starts.
    """
    known = {name.lower(): name for name in BEAM_RUNNERS}
    refused = {name.lower(): name for name in BEAM_RUNNERS_REFUSED}
    for value in _flag_values(beam_args, 'runner'):
        key = _runner_key(value)
        if key in refused:
            name = refused[key]
            return (f'--beam-arg=--runner={value}: not supported, '
                    f'{BEAM_RUNNERS_REFUSED[name]}; use --runner=FnApiRunner '
                    '(the default)')
        if key not in known:
            return (f'--beam-arg=--runner={value}: unknown Beam runner; '
                    f'expected one of {", ".join(BEAM_RUNNERS)}')
    for value in _flag_values(beam_args, 'direct_running_mode'):
        if value not in DIRECT_RUNNING_MODES:
            return (f'--beam-arg=--direct_running_mode={value}: expected one '
                    f'of {", ".join(DIRECT_RUNNING_MODES)}')
    return None


def metadata_path(home: str) -> str:
    """The ML Metadata (SQLite) of the pipeline home `home`."""
    return os.path.join(os.path.abspath(home), 'metadata.sqlite')


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One pipeline run: which model, on what data, where, and how.

    Attributes:
        model: Key of MODELS.
        profile: `smoke` or `full`.
        data: Path of the raw data (a folder, a file or a .ts prefix).
        home: Folder holding metadata, artifacts and the serving base path.
        strategy: tf.distribute strategy name (models/distribute.py).
        beam_args: Beam pipeline arguments.
        overrides: Hyper-parameters overriding the profile's.
        kubeflow_image: Container image for Kubeflow components (default:
            default_image()).
        kubeflow_root: pipeline_root on the cluster (required for Kubeflow).
    """

    model: str
    profile: str = 'smoke'
    data: Optional[str] = None
    home: str = DEFAULT_HOME
    strategy: Optional[str] = None
    beam_args: Tuple[str, ...] = ()
    overrides: Tuple[Tuple[str, Any], ...] = ()
    kubeflow_image: Optional[str] = None
    kubeflow_root: Optional[str] = None

    @property
    def family(self) -> ModelFamily:
        return MODELS[self.model]

    @property
    def data_path(self) -> str:
        return os.path.abspath(self.data or self.family.default_data)

    def kubeflow_target(self) -> KubeflowTarget:
        """The image, pipeline root and data URI of a Kubeflow job.

        `data` is taken as the pods' URI as given (default: the model's data
        set inside the image).

        Raises:
            KubeflowConfigError: naming the missing setting.
        """
        image = self.kubeflow_image or default_image()
        if not image:
            raise KubeflowConfigError(
                '--image is required: no git checkout here to tag the '
                'default image from')
        if not self.kubeflow_root:
            raise KubeflowConfigError(
                '--pipeline-root is required: where the pods write artifacts '
                '(gs://..., s3://... or a path mounted in every pod)')
        data = self.data or posixpath.join(
            IMAGE_DATA_DIR, os.path.basename(self.family.default_data))
        return KubeflowTarget(image=image,
                              pipeline_root=self.kubeflow_root,
                              data=data,
                              serving_model_dir=posixpath.join(
                                  self.kubeflow_root, 'serving', self.model))

    @property
    def home_path(self) -> str:
        return os.path.abspath(self.home)

    @property
    def pipeline_name(self) -> str:
        return f'{self.model}-pipeline'

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.home_path, 'pipelines', self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return metadata_path(self.home)

    @property
    def serving_base_path(self) -> str:
        """`<home>/serving`: the model base paths TF Serving polls live here."""
        return os.path.join(self.home_path, 'serving')

    @property
    def serving_model_dir(self) -> str:
        """`<home>/serving/<model>`: Pusher writes `<version>/` below it."""
        return os.path.join(self.serving_base_path, self.model)

    @property
    def scheduler_state_dir(self) -> str:
        """Lock, span state and run history of this pipeline's scheduler."""
        return os.path.join(self.home_path, 'scheduler', self.model)

    @property
    def effective_beam_args(self) -> List[str]:
        return list(self.beam_args) or default_beam_args()

    @property
    def hyperparameters(self) -> Dict[str, Any]:
        """Training defaults, then the profile's values, then overrides."""
        params = {
            **settings.family_defaults(self.model),
            **self.family.profiles[self.profile],
            **dict(self.overrides)
        }
        if self.strategy:
            params['strategy'] = self.strategy
        return params

    def tuned_families_hyperparameters(self) -> Dict[str, Dict[str, Any]]:
        """The params of each family a Tuner may choose instead.

        The hyper-parameters of each family a Tuner may choose instead of this
        model (`tune_families`), name -> them; none without a Tuner.

        Each family's own: its profile of this profile's name, and of the
        overrides those it accepts (so `--set epochs=5` holds for every
        family, `units` only for the RNN). A trial of the family trains
        these under the trial's values, not this model's profile: the RNN's
        clip_norm or batch cap is no setting of the FCN's. The pipeline
        hands them down to the Tuner and the Trainer (models/ reads no
        configs).
        """
        params = self.hyperparameters
        if int(params['tune_trials']) <= 0 or not params.get('tune_families'):
            return {}
        families = {}
        for name in self.family.tuned_with:
            accepted = setting_defaults(name)
            families[name] = dataclasses.replace(
                self,
                model=name,
                overrides=tuple((key, value)
                                for key, value in self.overrides
                                if key in accepted)).hyperparameters
        return families
