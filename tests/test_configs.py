"""The pipeline's default configuration: Beam arguments."""

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from pipeline import configs


def test_default_beam_args_run_in_memory_without_fetching_prism(caplog):
    # Beam's DirectRunner would first try to download the Prism runner.
    caplog.set_level(logging.INFO)
    with beam.Pipeline(options=PipelineOptions(
            configs.default_beam_args())) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x)
        assert_that(doubled, equal_to([2, 4, 6]))
    assert type(pipeline.runner).__name__ == 'FnApiRunner'
    assert 'prism' not in caplog.text.lower()
