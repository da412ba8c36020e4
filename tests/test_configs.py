"""The pipeline's default configuration: Beam arguments, the check that
refuses a Beam runner known not to work before a run starts, and settings
that are one of a few words."""

import importlib
import json
import logging

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from common import settings
from models import families
from models import schedule
from models.convnet import model as convnet
from pipeline import beam_runners
from pipeline import cli
from pipeline import configs
from pipeline import pipeline as pipeline_lib
from pipeline import profiles
from pipeline import setting_checks


def test_default_beam_args_run_in_memory_without_fetching_prism(caplog):
    # Beam's DirectRunner would first try to download the Prism runner.
    caplog.set_level(logging.INFO)
    with beam.Pipeline(options=PipelineOptions(
            beam_runners.default_beam_args())) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x)
        assert_that(doubled, equal_to([2, 4, 6]))
    assert type(pipeline.runner).__name__ == 'FnApiRunner'
    assert 'prism' not in caplog.text.lower()


@pytest.mark.parametrize('flags,fault', [
    (['--runner=DaskRunner'], 'loses data'),
    (['--runner', 'dask'], 'loses data'),
    (['--runner=DirectRunner'], 'Prism'),
    (['--runner=FnApiRuner'], 'unknown Beam runner'),
    (['--direct_running_mode=multiprocessing'], 'expected one of'),
])
def test_unknown_or_broken_beam_runner_stops_the_run_before_it_starts(
        tmp_path, capsys, flags, fault):
    home = tmp_path / 'home'
    code = cli.main([
        'run', '--model', 'convnet', '--home',
        str(home), *[f'--beam-arg={flag}' for flag in flags]
    ])
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: --beam-arg=--') and fault in line, line
    assert not home.exists()


@pytest.mark.parametrize('flags', [
    beam_runners.default_beam_args(),
    [
        '--runner=FnApiRunner', '--direct_running_mode=multi_processing',
        '--direct_num_workers=2'
    ],
    ['--runner=FlinkRunner', '--flink_master=localhost:8081'],
    ['--runner', 'apache_beam.runners.portability.spark_runner.SparkRunner'],
    ['--runner=dataflow', '--project=p'],
])
def test_tested_and_pass_through_runners_are_accepted(flags):
    assert beam_runners.beam_args_problem(flags) is None


def test_a_learning_rate_decay_the_schedule_does_not_know_is_refused():
    assert settings.SETTINGS['learning_rate_decay'].choices == (
        schedule.LEARNING_RATE_DECAYS)
    setting_checks.check_overrides('fcn', [('learning_rate_decay', 'cosine')])
    with pytest.raises(setting_checks.SettingError,
                       match='learning_rate_decay=step: expected one of '
                       'plateau, cosine'):
        setting_checks.check_overrides('convnet',
                                       [('learning_rate_decay', 'step')])


def test_an_augmentation_the_convnet_does_not_know_is_refused():
    assert settings.SETTINGS['augmentation'].choices == convnet.AUGMENTATIONS
    setting_checks.check_overrides('embedding',
                                   [('augmentation', 'shift_flip')])
    with pytest.raises(setting_checks.SettingError,
                       match='augmentation=rotate: expected one of '
                       'none, shift, shift_flip'):
        setting_checks.check_overrides('convnet', [('augmentation', 'rotate')])
    with pytest.raises(setting_checks.SettingError, match='no such setting'):
        setting_checks.check_overrides('rnn', [('augmentation', 'shift')])


def test_families_a_tuner_chooses_between_are_the_models_sequence_families():
    """The pipeline names them (tuned_with), models/families.py finds
    them by the same names; they read the same tf.Transform output."""
    for name, family in profiles.MODELS.items():
        # Pretraining (unlabelled) has a run_fn of its own: no recipe, no
        # Tuner.
        entries = [family.run_fn
                  ] if family.unlabelled else [family.run_fn, family.tuner_fn]
        for entry in entries:
            module, function = entry.rsplit('.', 1)
            assert callable(getattr(importlib.import_module(module), function))
        if family.unlabelled:
            continue
        assert families.recipe(name).name == name
        for other in family.tuned_with:
            assert families.recipe(other).name == other
            assert (profiles.MODELS[other].preprocessing_fn ==
                    family.preprocessing_fn)
        if family.tuned_with:
            assert all(values['tune_families'] is True
                       for values in family.profiles.values())


def test_the_other_familys_settings_are_its_own_profile_and_overrides():
    config = configs.RunConfig(model='rnn',
                               profile='full',
                               strategy='mirrored',
                               overrides=(('tune_trials', 3), ('epochs', 5),
                                          ('units', [16])))
    fcn = config.tuned_families_hyperparameters()['fcn']
    assert fcn == configs.RunConfig(model='fcn',
                                    profile='full',
                                    strategy='mirrored',
                                    overrides=(('tune_trials', 3),
                                               ('epochs', 5))).hyperparameters
    assert 'units' not in fcn and 'clip_norm' not in fcn
    assert fcn['conv_filters'] == [128, 256, 128]
    # Without a Tuner, or with the family search off: none.
    assert not configs.RunConfig(model='rnn').tuned_families_hyperparameters()
    assert not configs.RunConfig(
        model='fcn',
        overrides=(('tune_trials', 3),
                   ('tune_families', False))).tuned_families_hyperparameters()
    assert not configs.RunConfig(
        model='convnet',
        overrides=(('tune_trials', 3),)).tuned_families_hyperparameters()
    with pytest.raises(setting_checks.SettingError, match='no such setting'):
        setting_checks.check_overrides('convnet', [('tune_families', True)])


@pytest.mark.parametrize('normalization', settings.SEQUENCE_NORMALIZATIONS)
def test_the_transform_is_given_the_sequence_normalization(normalization):
    """The pipeline's Transform hands `sequence_normalization` to the
    preprocessing_fn (its custom_config), whichever family runs; the
    default where none is given."""
    for model in ('rnn', 'fcn', 'inception_time'):
        overrides = ((('sequence_normalization',
                       normalization),) if normalization != 'per_set' else ())
        config = configs.RunConfig(model=model, overrides=overrides)
        [transform] = [
            component for component in pipeline_lib.create_pipeline(
                config, '/nonexistent/data', serving_check=False).components
            if component.id == 'Transform'
        ]
        custom_config = json.loads(transform.exec_properties['custom_config'])
        assert custom_config['sequence_normalization'] == normalization, model
