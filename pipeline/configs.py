"""A pipeline run's configuration: one `RunConfig`, and where a run lives.

Built by the command line from a model name, a profile and flags: the
families and their profiles are pipeline/profiles.py's, the settings'
checks pipeline/setting_checks.py's, Beam's arguments
pipeline/beam_runners.py's. Nothing here runs anything.
"""

import dataclasses
import os
import posixpath
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from common import settings
from pipeline import beam_runners
from pipeline import profiles
from pipeline import setting_checks

DEFAULT_HOME = 'tfx_home'
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
            `<pipeline root>/serving/<model>` (`trunks/<model>` for a family
            that learns without labels).
    """

    image: str
    pipeline_root: str
    data: str
    serving_model_dir: str


# Folders of a home (or Kubeflow's pipeline root) that Pusher writes model
# base paths into: models to serve, and pretrained trunks for
# `transfer_from` (pipeline/profiles.py ModelFamily.unlabelled).
SERVING_DIR = 'serving'
TRUNKS_DIR = 'trunks'

EVAL_PERCENT = 10
TEST_PERCENT = 20


def metadata_path(home: str) -> str:
    """The ML Metadata (SQLite) of the pipeline home `home`."""
    return os.path.join(os.path.abspath(home), 'metadata.sqlite')


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One pipeline run: which model, on what data, where, and how.

    Attributes:
        model: Key of profiles.MODELS.
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
    def family(self) -> profiles.ModelFamily:
        return profiles.MODELS[self.model]

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
                                  self.kubeflow_root, self._pushed_to,
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
        return metadata_path(self.home)

    @property
    def serving_base_path(self) -> str:
        """`<home>/serving`: the model base paths TF Serving polls live here."""
        return os.path.join(self.home_path, SERVING_DIR)

    @property
    def serving_model_dir(self) -> str:
        """`<home>/serving/<model>`: Pusher writes `<version>/` below it.

        `<home>/trunks/<model>` for a family that learns without labels: a
        trunk for `transfer_from`, not a model to serve.
        """
        return os.path.join(self.home_path, self._pushed_to, self.model)

    @property
    def _pushed_to(self) -> str:
        """`serving`, or `trunks` for a family that learns without labels."""
        return TRUNKS_DIR if self.family.unlabelled else SERVING_DIR

    @property
    def scheduler_state_dir(self) -> str:
        """Lock, span state and run history of this pipeline's scheduler."""
        return os.path.join(self.home_path, 'scheduler', self.model)

    @property
    def effective_beam_args(self) -> List[str]:
        return list(self.beam_args) or beam_runners.default_beam_args()

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
            accepted = setting_checks.setting_defaults(name)
            families[name] = dataclasses.replace(
                self,
                model=name,
                overrides=tuple((key, value)
                                for key, value in self.overrides
                                if key in accepted)).hyperparameters
        return families
