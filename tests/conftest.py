"""Test set-up shared by every test: the environment TFX 1.16 needs, two
logical CPU devices so that MirroredStrategy has two replicas to mirror over,
the fixtures the whole run shares, and the random order's seed at the end.
See docs/testing.md.
"""

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

# Devices must be split before TensorFlow initializes them, i.e. before any
# test runs an op.
distribute.split_cpu(2)


@pytest.fixture(scope='session')
def tiny_transformed(tmp_path_factory):
    """A tiny real tf.Transform output (tests/tiny_transform.py), written
    once for the run and only read by the tests that train on it."""
    # Beam and tf.Transform load only for the tests that ask for this.
    from tests import tiny_transform  # pylint: disable=import-outside-toplevel
    return tiny_transform.write_transformed(
        tmp_path_factory.mktemp('tiny_transformed'))


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
