"""The local runner's console: what it keeps off it and what it shows."""

import logging

from absl import logging as absl_logging

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


def test_library_warnings_stay_off_the_console_unless_verbose(caplog):
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
