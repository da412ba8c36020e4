"""Random search (models/tuning.py) on KerasTuner's RandomSearchOracle: the
trial bounds and how the best values become the Trainer's params. Trials
run end to end, with real training, in tests/test_pipeline_e2e.py; here a
trial's training is a function of its values, so that the search's own
logic is what is tested; and a model built from the space's extremes."""

import importlib

import keras_tuner
import numpy as np
import pytest

from models import training
from models import tuning
from models.convnet import model as convnet
from models.rnn import model as rnn
from pipeline import configs

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

    def run(fn_args, recipe, params, export_model):
        # A trial's score: its learning rate's rank, so the best is known.
        trained.append(params)
        return [3e-4, 1e-3, 3e-3].index(params['learning_rate']) / 2

    monkeypatch.setattr(training, 'run', run)
    params = {
        **(profile or {}), 'tune_trials': max_trials,
        'seed': 1,
        'tune_epochs_fraction': epochs_fraction
    }
    tuner = tuning.TrialTuner(tuning.make_oracle(rnn.search_space, params),
                              None,
                              rnn.RECIPE,
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
    assert tuning.profile_values(rnn.search_space, PROFILE) == {
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
    assert tuning.profile_values(rnn.search_space, {
        **PROFILE, 'units': [48]
    }) is None


def test_a_trial_trains_its_fraction_of_the_epochs(monkeypatch, tmp_path):
    tuner = _search(monkeypatch,
                    tmp_path,
                    max_trials=2,
                    max_seconds=3600,
                    epochs_fraction=1 / 3)
    assert [p['epochs_fraction'] for p in tuner.trained] == [1 / 3, 1 / 3]


def test_no_trial_starts_after_the_wall_time_budget(monkeypatch, tmp_path):
    tuner = _search(monkeypatch, tmp_path, max_trials=6, max_seconds=0)
    assert len(tuner.oracle.trials) == 1


def test_a_search_whose_every_trial_failed_fails(monkeypatch, tmp_path):

    def failing(*args, **kwargs):
        raise ValueError('no data')

    monkeypatch.setattr(training, 'run', failing)
    params = {'tune_trials': 2, 'seed': 1}
    tuner = tuning.TrialTuner(tuning.make_oracle(rnn.search_space, params),
                              None,
                              rnn.RECIPE,
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
    params = tuning.tuned_params(rnn.search_space, hp.get_config())
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


@pytest.mark.parametrize('model', sorted(configs.MODELS))
def test_every_profile_is_a_point_of_its_familys_search_space(model):
    """Else the first trial is drawn at random, and the Tuner may hand the
    Trainer values that score below the profile's own."""
    family = configs.MODELS[model]
    module = importlib.import_module(family.run_fn.rsplit('.', 1)[0])
    search_space = module.RECIPE.search_space
    for profile, values in family.profiles.items():
        params = {**configs.TRAINING_DEFAULTS, **values}
        assert tuning.profile_values(search_space, params), profile
