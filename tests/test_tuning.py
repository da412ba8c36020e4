"""Random search (models/tuning.py) on KerasTuner's RandomSearchOracle: the
trial bounds and how the best values become the Trainer's params. Trials
run end to end, with real training, in tests/test_pipeline_e2e.py; here a
trial's training is a function of its values, so that the search's own
logic is what is tested; and a model built from the space's extremes."""

import dataclasses
import importlib
import types

import keras_tuner
import numpy as np
import pytest

from common import names
from common import settings
from models import families
from models import training
from models import tuning
from models import tuning_space
from models.convnet import model as convnet
from models.fcn import model as fcn
from models.inception_time import model as inception_time
from models.rnn import model as rnn
from pipeline import configs
from pipeline import pipeline
from pipeline import profiles

# A profile the RNN's search space holds: depth 1, width 32.
PROFILE = {
    'units': [32],
    'cell': 'lstm',
    'bidirectional': True,
    'dropout': 0.25,
    'learning_rate': 1e-3,
    'learning_rate_decay': 'plateau',
    'batch_size': 32,
    'training_length': 1.0
}


def _search(monkeypatch,
            tmp_path,
            max_trials,
            max_seconds,
            profile=None,
            epochs_fraction=1.0):
    trained = []

    def train(fn_args, recipe, params, export_model):
        # A trial's score: its learning rate's rank, so the best is known.
        trained.append(params)
        return types.SimpleNamespace(best_val_accuracy=[3e-4, 1e-3, 3e-3].index(
            params['learning_rate']) / 2)

    monkeypatch.setattr(training, 'train', train)
    params = {
        **(profile or {}), 'tune_trials': max_trials,
        'seed': 1,
        'tune_epochs_fraction': epochs_fraction
    }
    tuner = tuning.TrialTuner(tuning.make_oracle(rnn.search_space, params),
                              None,
                              tuning_space.search(rnn.RECIPE, params),
                              params,
                              max_seconds,
                              directory=str(tmp_path),
                              project_name='search')
    tuner.search()
    tuner.trained = trained
    return tuner


def test_search_runs_the_trials_and_ranks_them_by_score(monkeypatch, tmp_path,
                                                        capsys):
    tuner = _search(monkeypatch, tmp_path, max_trials=6, max_seconds=3600)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 6
    best = tuner.get_best_hyperparameters()[0].values
    assert best['learning_rate'] == max(
        t.hyperparameters.values['learning_rate'] for t in trials)
    table = capsys.readouterr().out.split('Tuner trials')[1].splitlines()
    assert table[1].split() == [
        'trial', 'score', 'batch_size', 'bidirectional', 'cell', 'depth',
        'dropout', 'learning_rate', 'learning_rate_decay', 'training_length',
        'width'
    ]
    assert len(table) == 2 + 6


def test_the_first_trial_is_the_profiles_own_configuration(
        monkeypatch, tmp_path, capsys):
    """So the Trainer is never handed values that scored below the ones it
    would have trained without a Tuner."""
    # `units` [32] is depth 1 of width 32; the others are named as params.
    named = {key: value for key, value in PROFILE.items() if key != 'units'}
    assert tuning_space.profile_values(rnn.search_space, PROFILE) == {
        'depth': 1,
        'width': 32,
        **named
    }
    tuner = _search(monkeypatch,
                    tmp_path,
                    max_trials=4,
                    max_seconds=3600,
                    profile=PROFILE)
    first, *others = tuner.trained
    assert {key: first[key] for key in PROFILE} == PROFILE
    assert all(
        {key: params[key] for key in PROFILE} != PROFILE for params in others)
    assert len(others) == 3
    assert "the profile's own values" in capsys.readouterr().out
    # Not a point of the space (no width 48): every trial is drawn.
    assert tuning_space.profile_values(rnn.search_space, {
        **PROFILE, 'units': [48]
    }) is None


def test_a_trial_trains_its_fraction_of_the_epochs(monkeypatch, tmp_path):
    tuner = _search(monkeypatch,
                    tmp_path,
                    max_trials=2,
                    max_seconds=3600,
                    epochs_fraction=1 / 3)
    assert [p['epochs_fraction'] for p in tuner.trained] == [1 / 3, 1 / 3]


def test_a_trial_never_trains_on_the_eval_split_it_is_scored_on(
        monkeypatch, tmp_path):
    tuner = _search(monkeypatch,
                    tmp_path,
                    max_trials=2,
                    max_seconds=3600,
                    profile={'train_on_small_eval': True})
    assert [p['train_on_small_eval'] for p in tuner.trained] == [False, False]


def test_no_trial_starts_after_the_wall_time_budget(monkeypatch, tmp_path):
    tuner = _search(monkeypatch, tmp_path, max_trials=6, max_seconds=0)
    assert len(tuner.oracle.trials) == 1


def test_a_search_whose_every_trial_failed_fails(monkeypatch, tmp_path):

    def failing(*args, **kwargs):
        raise ValueError('no data')

    monkeypatch.setattr(training, 'train', failing)
    params = {'tune_trials': 2, 'seed': 1}
    tuner = tuning.TrialTuner(tuning.make_oracle(rnn.search_space, params),
                              None,
                              tuning_space.search(rnn.RECIPE, params),
                              params,
                              3600,
                              directory=str(tmp_path),
                              project_name='search')
    with pytest.raises(RuntimeError, match='no data'):
        tuner.search()


def test_best_values_become_the_params_they_stand_for():
    hp = keras_tuner.HyperParameters()
    rnn.search_space(hp)
    hp.values.update(width=64, depth=2, cell='gru', learning_rate=3e-3)
    params = tuning_space.tuned_params(rnn.search_space, hp.get_config())
    assert params['units'] == [64, 64]
    assert params['cell'] == 'gru'
    assert params['learning_rate'] == 3e-3


def test_the_convnet_trains_at_every_dropout_of_its_search_space():
    """The dense layer drops twice the blocks' rate: at the space's 0.5 a
    rate of 1, which Keras refuses (a Fashion-MNIST trial failed so)."""
    hp = keras_tuner.HyperParameters()
    convnet.search_space(hp)
    images = np.random.default_rng(0).normal(size=(8, 8, 8, 1))
    for dropout in hp.space[[h.name for h in hp.space].index('dropout')].values:
        params = {
            'image_shape': [8, 8, 1],
            'conv_filters': [4],
            'dense_units': 8,
            'dropout': dropout
        }
        model = convnet.build_model(params, num_classes=3)
        training.compile_model(model, params)
        loss, _ = model.train_on_batch({'image': images.astype(np.float32)},
                                       np.arange(8) % 3)
        assert np.isfinite(loss), dropout


@pytest.mark.parametrize(
    'model', sorted(m for m, f in profiles.MODELS.items() if f.tuner_fn))
def test_every_profile_is_a_point_of_its_familys_search_space(model):
    """Else the first trial is drawn at random, and the Tuner may hand the
    Trainer values that score below the profile's own."""
    family = profiles.MODELS[model]
    recipe = families.recipe(model)
    search_space = recipe.search_space
    for profile, values in family.profiles.items():
        params = {**settings.family_defaults(model), **values}
        assert tuning_space.profile_values(search_space, params), profile
        if family.tuned_with:
            # And of the space of the families its Tuner chooses between.
            params = _family_params(model, profile)
            chosen = tuning_space.search(recipe, params)
            assert len(chosen.recipes) > 1, profile
            assert tuning_space.profile_values(
                chosen.search_space,
                chosen.params[model])[names.FAMILY] == model, profile


def _family_params(model, profile='smoke', *overrides):
    """The Tuner's (and Trainer's) params of a run of `model`, as the
    pipeline hands them down, with the data's facts."""
    config = configs.RunConfig(model=model,
                               profile=profile,
                               overrides=(('tune_trials', 8), *overrides))
    return {
        **pipeline.trainer_config(config), 'class_names': ['a', 'b', 'c'],
        'num_channels': 3
    }


def _family_search(monkeypatch, tmp_path, model, *overrides, score=None):
    """A search of a run of `model` (a sequence family's, or the convnet's)
    whose trials record what they would train; a trial scores
    `score(params)` (default: by learning rate)."""
    trained = []

    def train(fn_args, recipe, params, export_model):
        trained.append((recipe, params))
        if score:
            return types.SimpleNamespace(best_val_accuracy=score(params))
        return types.SimpleNamespace(best_val_accuracy=[3e-4, 1e-3, 3e-3].index(
            params['learning_rate']) / 2)

    monkeypatch.setattr(training, 'train', train)
    params = _family_params(model, 'smoke', *overrides)
    recipe = families.recipe(model)
    tuner = tuning.make_tuner(None,
                              recipe,
                              params,
                              directory=str(tmp_path),
                              project_name='search')
    tuner.search()
    tuner.trained = trained
    tuner.params = params
    return tuner


def test_the_sequence_search_draws_every_family_each_with_its_own_params(
        monkeypatch, tmp_path, capsys):
    tuner = _family_search(monkeypatch, tmp_path, 'rnn')
    families = [params[names.FAMILY] for _, params in tuner.trained]
    assert set(families) == {'rnn', 'fcn', 'inception_time'}, families
    rnn_profile = profiles.MODELS['rnn'].profiles['smoke']
    fcn_profile = profiles.MODELS['fcn'].profiles['smoke']
    inception_profile = profiles.MODELS['inception_time'].profiles['smoke']
    for recipe, params in tuner.trained:
        if params[names.FAMILY] == 'inception_time':
            # Its own modules and branch kernels, under the trial's values.
            assert recipe is inception_time.RECIPE
            assert len(set(params['conv_filters'])) == 1
            assert len(params['conv_filters']) in (3, 6)
            assert params['kernel_sizes'] == inception_profile['kernel_sizes']
            assert params['bottleneck_filters'] == (
                inception_profile['bottleneck_filters'])
            assert 'clip_norm' not in params and 'units' not in params
        elif params[names.FAMILY] == 'rnn':
            assert recipe is rnn.RECIPE
            assert params['cell'] in ('lstm', 'gru') and params['units']
            assert params['clip_norm'] == rnn_profile['clip_norm']
            assert params['max_batch_fraction'] == 0.0
            assert 'conv_filters' not in params
        else:
            # The FCN's own profile under the trial's values: no gradient
            # clipping nor uncapped batch of the RNN's.
            assert recipe is fcn.RECIPE
            assert len(params['conv_filters']) == len(params['kernel_sizes'])
            assert params['kernel_sizes'] == [8, 5,
                                              3][:len(params['conv_filters'])]
            assert 'clip_norm' not in params and 'units' not in params
            assert params['max_batch_fraction'] == (
                settings.DEFAULTS['max_batch_fraction'])
            assert params['epochs'] == fcn_profile['epochs']
        # What the data gives, for every family.
        assert params['num_channels'] == 3
        assert params['epochs_fraction'] == 1.0
        assert names.FAMILY_PARAMS not in params
    # One table: a family column; a trial shows its own family's values.
    table = capsys.readouterr().out.split('Tuner trials')[1].splitlines()
    header = table[1].split()
    assert 'family' in header and 'cell' in header
    for row in table[2:2 + len(families)]:
        cells = row.split()
        if 'fcn' in cells:
            assert 'lstm' not in cells and 'gru' not in cells, row


@pytest.mark.parametrize('model', ['rnn', 'fcn', 'inception_time'])
def test_the_sequence_searchs_first_trial_is_the_running_familys_profile(
        monkeypatch, tmp_path, model):
    tuner = _family_search(monkeypatch, tmp_path, model)
    (recipe, first), *_ = tuner.trained
    assert recipe is families.recipe(model)
    assert first[names.FAMILY] == model
    profile = profiles.MODELS[model].profiles['smoke']
    assert {key: first[key] for key in profile} == profile
    assert first['learning_rate'] == settings.DEFAULTS['learning_rate']


def test_the_trainer_trains_the_best_trials_family_with_its_params(
        monkeypatch, tmp_path):
    """An RNN run whose best trial was an FCN trains the FCN, on the FCN's
    own settings, also when the workers train it (models/workers.py)."""
    tuner = _family_search(
        monkeypatch,
        tmp_path,
        'rnn',
        score=lambda params: float(params[names.FAMILY] == 'fcn'))
    best = tuner.get_best_hyperparameters()[0]
    assert best.values[names.FAMILY] == 'fcn'
    # As the Trainer gets them: the config, and the best values in its
    # params (training.hyperparameters).
    params = {**tuner.params, **best.values}
    recipe, trained = tuning_space.best_recipe(best.get_config(), rnn.RECIPE,
                                               params)
    assert recipe is fcn.RECIPE
    assert recipe.name == 'fcn'
    # A family's values are named in its scope (KerasTuner keeps one value
    # per name).
    width, depth = best.values['fcn/width'], best.values['fcn/depth']
    assert trained['conv_filters'] == [width, 2 * width, width][:depth]
    assert trained['learning_rate'] == best.values['fcn/learning_rate']
    assert trained[names.FAMILY] == 'fcn'
    assert 'clip_norm' not in trained
    assert trained['class_names'] == ['a', 'b', 'c']
    # Had an RNN trial been the best: the RNN, on the run's own settings.
    rnn_trial = next(t.hyperparameters
                     for t in tuner.oracle.trials.values()
                     if t.hyperparameters.values[names.FAMILY] == 'rnn')
    recipe, trained = tuning_space.best_recipe(rnn_trial.get_config(),
                                               rnn.RECIPE, params)
    assert recipe is rnn.RECIPE
    assert trained['units'] == [rnn_trial.values['rnn/width']
                               ] * rnn_trial.values['rnn/depth']
    assert trained['clip_norm'] == 1.0 and 'conv_filters' not in trained


def test_tune_families_off_searches_the_running_familys_own_space(
        monkeypatch, tmp_path):
    off = ('tune_families', False)
    assert not configs.RunConfig(
        model='rnn',
        overrides=(('tune_trials', 4), off)).tuned_families_hyperparameters()
    # Off, even with the other families handed down.
    params = {**_family_params('rnn'), 'tune_families': False}
    space = tuning_space.search(rnn.RECIPE, params).search_space
    hp, own = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    space(hp)
    rnn.search_space(own)
    assert [h.name for h in hp.space] == [h.name for h in own.space]
    tuner = _family_search(monkeypatch, tmp_path, 'rnn', off)
    assert all(recipe is rnn.RECIPE for recipe, _ in tuner.trained)
    assert all(names.FAMILY not in params for _, params in tuner.trained)
    best = tuner.get_best_hyperparameters()[0]
    recipe, trained = tuning_space.best_recipe(best.get_config(), rnn.RECIPE,
                                               tuner.params)
    assert recipe is rnn.RECIPE and 'units' in trained


def test_the_trainer_finds_its_family_after_tfx_reloads_its_module(
        monkeypatch, tmp_path):
    """TFX reloads a component's module before it runs (the Trainer's after
    the Tuner's, in one process): a new RECIPE, which must still be told
    apart as the FCN (else the Trainer trained the space's defaults)."""
    tuner = _family_search(
        monkeypatch,
        tmp_path,
        'fcn',
        score=lambda params: float(params[names.FAMILY] == 'fcn'))
    best = tuner.get_best_hyperparameters()[0]
    params = {**tuner.params, **best.values}
    # The module's names as they were, put back after: the rest of the run
    # sees the RECIPE every other module imported, not the reload's.
    module_names = dict(vars(fcn))
    try:
        reloaded = importlib.reload(fcn)
        recipe, trained = tuning_space.best_recipe(best.get_config(),
                                                   reloaded.RECIPE, params)
        assert recipe is reloaded.RECIPE
        assert trained['learning_rate'] == best.values['fcn/learning_rate']
        assert recipe.name == 'fcn'
    finally:
        vars(fcn).clear()
        vars(fcn).update(module_names)


def test_the_search_holds_the_settings_the_user_gave(monkeypatch, tmp_path,
                                                     capsys):
    """`--set learning_rate_decay=cosine --set dropout=0.3` with a Tuner:
    every trial of either family, and the Trainer, keeps them (0.3 off the
    space's grid too); the rest is searched."""
    held = {'learning_rate_decay': 'cosine', 'dropout': 0.3}
    tuner = _family_search(monkeypatch, tmp_path, 'rnn', *held.items())
    assert {params[names.FAMILY] for _, params in tuner.trained
           } == {'rnn', 'fcn', 'inception_time'}
    for _, params in tuner.trained:
        assert {key: params[key] for key in held} == held, params
    assert len({params['learning_rate'] for _, params in tuner.trained}) > 1
    # The first trial is still the profile's own values, under the settings.
    first = tuner.trained[0][1]
    assert first[names.FAMILY] == 'rnn'
    assert first['units'] == profiles.MODELS['rnn'].profiles['smoke']['units']
    best = tuner.get_best_hyperparameters()[0]
    _, trained = tuning_space.best_recipe(best.get_config(), rnn.RECIPE, {
        **tuner.params,
        **best.values
    })
    assert {key: trained[key] for key in held} == held
    table = capsys.readouterr().out.split('Tuner trials')[1]
    assert "(held at the run's settings: dropout, learning_rate_decay)" in table


def test_the_pipeline_names_the_settings_given_only_to_a_tuner():
    config = configs.RunConfig(model='convnet',
                               overrides=(('tune_trials', 2), ('epochs', 3),
                                          ('augmentation', 'shift')))
    params = pipeline.trainer_config(config)
    assert params[names.HELD_SETTINGS] == [
        'augmentation', 'epochs', 'tune_trials'
    ]
    assert names.FAMILY_PARAMS not in params  # No other image family.
    untuned = dataclasses.replace(config, overrides=(('epochs', 3),))
    assert pipeline.trainer_config(untuned) == untuned.hyperparameters


def test_holding_an_architecture_holds_the_values_that_make_it(
        monkeypatch, tmp_path, capsys):
    """`--set conv_filters=[64,128]`: the convnet's width and depth are held
    at 64 and 2, the rest searched; an FCN's filters off the space's grid
    are held with the kernel sizes of the run, one per block."""
    tuner = _family_search(monkeypatch, tmp_path, 'convnet',
                           ('conv_filters', [64, 128]))
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 8
    assert all(
        params['conv_filters'] == [64, 128] for _, params in tuner.trained)
    assert {(t.hyperparameters.values['width'],
             t.hyperparameters.values['depth']) for t in trials} == {(64, 2)}
    assert len({params['dense_units'] for _, params in tuner.trained}) > 1
    assert "(held at the run's settings: conv_filters)" in (
        capsys.readouterr().out)

    filters = [50, 60, 70]
    tuner = _family_search(monkeypatch, tmp_path / 'fcn', 'fcn',
                           ('conv_filters', filters))
    fcn_trials = [
        params for _, params in tuner.trained if params[names.FAMILY] == 'fcn'
    ]
    assert len(fcn_trials) > 1
    for params in fcn_trials:
        assert params['conv_filters'] == filters
        assert params['kernel_sizes'] == [8, 5, 3]
