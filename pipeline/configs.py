"""Everything a pipeline run is configured by: models, profiles, paths, Beam.

Code elsewhere reads these facts from here; nothing below runs anything.
A run is described by one `RunConfig`, built by the command line from a
model name, a profile and flags.
"""

import dataclasses
import importlib.util
import os
import posixpath
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from components.example_gen import data_source

DEFAULT_HOME = 'tfx_home'
PROFILES = ('smoke', 'full')
# The Kubeflow image (Dockerfile; `make image` builds it): its repository,
# tagged by default with this checkout's `git describe` (default_image()),
# and where it holds each model's default data set.
IMAGE_REPOSITORY = 'tfx-deep-pipelines'
IMAGE_DATA_DIR = '/pipeline/data'
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_image() -> Optional[str]:
    """`tfx-deep-pipelines:<git describe --always --dirty>` of this checkout,
    the name `make image` builds; None outside a git checkout."""
    try:
        described = subprocess.run(
            ['git', '-C', _REPO_DIR, 'describe', '--always', '--dirty'],
            capture_output=True, text=True, check=True, timeout=30)
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
        kind: The data kind it reads (data_source.IMAGES or SEQUENCES).
        preprocessing_fn: Dotted path of its tf.Transform preprocessing_fn.
        run_fn: Dotted path of its TFX Trainer run_fn.
        default_data: The public data set it trains on by default.
        profiles: Profile name -> hyper-parameters and data limits.
    """

    kind: str
    preprocessing_fn: str
    run_fn: str
    default_data: str
    profiles: Dict[str, Dict[str, Any]]


MODELS: Dict[str, ModelFamily] = {
    'convnet': ModelFamily(
        kind=data_source.IMAGES,
        preprocessing_fn='models.convnet.preprocessing.preprocessing_fn',
        run_fn='models.convnet.model.run_fn',
        default_data=data_source.FASHION_MNIST_DIR,
        profiles={
            'smoke': dict(max_examples_per_split=2000, image_shape=[28, 28, 1],
                          conv_filters=[16, 32], dense_units=64, epochs=1,
                          batch_size=64, min_accuracy=0.3),
            'full': dict(max_examples_per_split=0, image_shape=[28, 28, 1],
                         conv_filters=[32, 64], dense_units=256, epochs=15,
                         batch_size=128, min_accuracy=0.9),
        }),
    'rnn': ModelFamily(
        kind=data_source.SEQUENCES,
        preprocessing_fn='models.rnn.preprocessing.preprocessing_fn',
        run_fn='models.rnn.model.run_fn',
        default_data=_sktime_data('JapaneseVowels'),
        profiles={
            'smoke': dict(max_examples_per_split=0, cell='lstm', units=[32],
                          bidirectional=True, epochs=3, batch_size=32,
                          clip_norm=1.0, min_accuracy=0.2),
            'full': dict(max_examples_per_split=0, cell='lstm', units=[64, 64],
                         bidirectional=True, epochs=60, batch_size=32,
                         clip_norm=1.0, min_accuracy=0.9),
        }),
}

# Shared defaults; a profile's entries override them.
TRAINING_DEFAULTS: Dict[str, Any] = dict(
    learning_rate=1e-3, dropout=0.25, seed=42, strategy='auto',
    # Keep the parsed training and eval examples in memory after the first
    # epoch (models/training.py); false when they do not fit in memory.
    cache_examples=True,
    # Start from the last blessed model's weights when the shapes match.
    warm_start=False,
    # Read the newest N spans (span-{SPAN} layouts).
    span_window=1,
    # Jensen-Shannon divergence from the previous run's statistics above
    # which a feature is reported as drifted; stop the run on drift or not.
    drift_threshold=0.3, stop_on_drift=False,
    # A candidate may lose at most this much test accuracy against the last
    # blessed model and still be pushed.
    max_accuracy_drop=0.0)
# Splits a data set does not give are carved from train by a stable hash.
EVAL_PERCENT = 10
TEST_PERCENT = 20
ON_BAD_RECORD = 'fail'


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
        return KubeflowTarget(
            image=image, pipeline_root=self.kubeflow_root, data=data,
            serving_model_dir=posixpath.join(self.kubeflow_root, 'serving',
                                             self.model))

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
        return os.path.join(self.home_path, 'metadata.sqlite')

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
        params = {**TRAINING_DEFAULTS, **self.family.profiles[self.profile],
                  **dict(self.overrides)}
        if self.strategy:
            params['strategy'] = self.strategy
        return params
