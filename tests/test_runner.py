"""The local runner's console: what it keeps off it and what it shows."""

import logging
import sys

import pytest
from absl import logging as absl_logging
from tfx.dsl.components.base import base_beam_executor
from tfx.utils import dependency_utils

from pipeline import beam_runners
from pipeline import pipeline as pipeline_lib
from pipeline import runner


def test_first_run_resolution_error_is_dropped_and_others_still_show(caplog):
    caplog.set_level(logging.ERROR)
    with runner._quiet_logs(verbose=False):  # pylint: disable=protected-access
        absl_logging.error('[%s] Input resolution error: %s',
                           pipeline_lib.PREVIOUS_STATISTICS_RESOLVER,
                           'LatestArtifactStrategy returned None.')
        absl_logging.error('[%s] Input resolution error: %s',
                           'latest_blessed_model_resolver', 'broken store')
    absl_logging.error('[%s] Input resolution error: %s',
                       pipeline_lib.PREVIOUS_STATISTICS_RESOLVER, 'outside')
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        '[latest_blessed_model_resolver] Input resolution error: broken store',
        '[previous_statistics_resolver] Input resolution error: outside'
    ]


@pytest.fixture
def absl_verbosity():
    """absl's verbosity, restored after the test: a level set here must not
    reach the tests after it."""
    verbosity = absl_logging.get_verbosity()
    yield
    absl_logging.set_verbosity(verbosity)


def test_library_warnings_stay_off_the_console_unless_verbose(
        caplog, absl_verbosity):
    del absl_verbosity  # Restores the level set below.
    caplog.set_level(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)  # as TFX's launcher may
    with runner._quiet_logs(verbose=False):  # pylint: disable=protected-access
        absl_logging.warning('ArtifactQuery.property_predicate is not '
                             'supported.')
        logging.getLogger('apache_beam').info('Running in memory')
        absl_logging.error('a real error')
    with runner._quiet_logs(verbose=True):  # pylint: disable=protected-access
        absl_logging.warning('shown when verbose')
    assert [r.getMessage() for r in caplog.records
           ] == ['a real error', 'shown when verbose']


class _BeamExecutor(base_beam_executor.BaseBeamExecutor):
    Do = None  # Only its construction is looked at.


def _beam_executor_args(beam_args):
    executor = _BeamExecutor(
        base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=list(beam_args)))
    return executor._beam_pipeline_args  # pylint: disable=protected-access


def test_local_beam_components_do_not_package_tfx_for_workers(monkeypatch):
    # TFX's Beam executor parses sys.argv with absl's flags: pytest's own
    # (`-v`) must not reach it.
    monkeypatch.setattr(sys, 'argv', sys.argv[:1])
    # The sdist TFX builds of itself (2-3 s and 48 MB of /tmp a component)
    # is stood in for: what is checked is whether it is asked for.
    built = []
    monkeypatch.setattr(dependency_utils, 'build_ephemeral_package',
                        lambda: built.append(1) or '/tmp/tfx_ephemeral.tgz')
    local = beam_runners.default_beam_args()
    flink = ['--runner=FlinkRunner', '--flink_master=localhost:8081']
    with runner._no_tfx_package_for_local_beam(local):  # pylint: disable=protected-access
        assert '--extra_package' not in ' '.join(_beam_executor_args(local))
    assert not built
    with runner._no_tfx_package_for_local_beam(flink):  # pylint: disable=protected-access
        assert ('--extra_package=/tmp/tfx_ephemeral.tgz'
                in _beam_executor_args(flink))
    assert len(built) == 1
    # Outside a local run TFX's own behaviour is back.
    assert '--extra_package=/tmp/tfx_ephemeral.tgz' in _beam_executor_args(
        local)


def test_beam_runs_locally_only_on_the_fn_api_runner():
    assert beam_runners.beam_runs_locally(beam_runners.default_beam_args())
    assert beam_runners.beam_runs_locally(
        ['--runner=fnapi', '--direct_running_mode=multi_processing'])
    assert not beam_runners.beam_runs_locally(['--runner=FlinkRunner'])
    assert not beam_runners.beam_runs_locally(['--direct_num_workers=2'])
