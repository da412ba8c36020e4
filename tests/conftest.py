"""Test set-up shared by every test: the environment TFX 1.16 needs, two
logical CPU devices so that MirroredStrategy has two replicas to mirror over,
the fixtures the whole run shares, and the random order's seed at the end.
See docs/testing.md.
"""

import logging
import os
import warnings

import pytest

from common import environment  # Imports nothing of TensorFlow's.

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore', category=FutureWarning)

# E402: importing models imports TensorFlow, which reads the environment set
# above at import time.
# pylint: disable=wrong-import-position
from models import distribute  # noqa: E402
from models import tracing  # noqa: E402

# Devices must be split before TensorFlow initializes them, i.e. before any
# test runs an op.
distribute.split_cpu(2)
# As the Trainer does (models/tracing.py): the tests that build and fit
# models in process would otherwise have AutoGraph rewrite tf_keras's own
# code on each worker's first trace, 20-40 s of CPU each.
tracing.skip_autograph_of_tf_keras()


class _PrismAttempts(logging.Handler):
    """What Beam's default runner logs when it tries the Prism runner."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        if 'PrismRunner' in record.getMessage():
            self.messages.append(record.getMessage())


# Beam's default runner first downloads the Prism runner from GitHub
# (pipeline/beam_runners.py): offline it falls back and leaves a folder in
# /tmp, online the test would run on a binary nobody tested. Its logger is
# watched without importing Beam, which not every test worker needs.
_PRISM = _PrismAttempts()
_DIRECT_RUNNER_LOG = logging.getLogger(
    'apache_beam.runners.direct.direct_runner')
_DIRECT_RUNNER_LOG.setLevel(logging.INFO)
_DIRECT_RUNNER_LOG.addHandler(_PRISM)


@pytest.fixture(autouse=True)
def _no_beam_default_runner():
    """Fails the test (or the fixture it set up) that ran a Beam pipeline
    on Beam's default runner: name `beam_runners.default_beam_args()`."""
    yield
    attempts, _PRISM.messages[:] = list(_PRISM.messages), []
    if attempts:
        pytest.fail(
            "a Beam pipeline ran on Beam's default runner, which first "
            'fetches the Prism runner: give it PipelineOptions('
            f'pipeline.beam_runners.default_beam_args()); Beam: {attempts}')


@pytest.fixture(scope='session')
def tiny_transformed(tmp_path_factory):
    """A tiny real tf.Transform output (tests/tiny_transform.py), written
    once for the run and only read by the tests that train on it."""
    # Beam and tf.Transform load only for the tests that ask for this.
    from tests import tiny_transform  # pylint: disable=import-outside-toplevel
    return tiny_transform.write_transformed(
        tmp_path_factory.mktemp('tiny_transformed'))


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'heavy(seconds): a module whose tests keep one test worker '
        'busy about `seconds` on an idle machine; such modules run first, the '
        'heaviest first (see pytest_collection_modifyitems)')


def _heavy_seconds(item) -> float:
    marker = item.get_closest_marker('heavy')
    return marker.args[0] if marker else 0


def pytest_collection_modifyitems(items):
    """The heavy modules first, the heaviest first; the rest after them in
    pytest-randomly's order (a stable sort on top of its shuffle).

    On two test workers (`make test`: pytest-xdist, --dist loadfile
    --no-loadscope-reorder) each worker takes the next module in this order
    when it is almost out of work: a long module started last would keep
    one worker busy while the other idles.
    """
    items.sort(key=lambda item: -_heavy_seconds(item))


def pytest_terminal_summary(terminalreporter, config):
    """Names the random order's seed (pytest-randomly) last, where a failing
    run's reader looks: `make test SEED=N` replays that order."""
    if not config.pluginmanager.has_plugin('randomly'):
        return
    seed = getattr(config.option, 'randomly_seed', None)
    if seed is not None and config.getoption('randomly_reorganize', True):
        terminalreporter.write_line(
            f'tests ran in random order, seed {seed}: replay with '
            f'`make test SEED={seed}` or `pytest -p randomly '
            f'--randomly-seed={seed}`')
