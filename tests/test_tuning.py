"""Random search (models/tuning.py) on KerasTuner's RandomSearchOracle: the
trial bounds and how the best values become the Trainer's params. Trials
run end to end, with real training, in tests/test_pipeline_e2e.py; here a
trial's training is a function of its values, so that the search's own
logic is what is tested."""

import keras_tuner
import pytest

from models import training
from models import tuning
from models.rnn import model as rnn


def _search(monkeypatch, tmp_path, max_trials, max_seconds):
    # A trial's score: its learning rate's rank, so the best is known.
    monkeypatch.setattr(
        training, 'run', lambda fn_args, recipe, params, export_model:
        ([3e-4, 1e-3, 3e-3].index(params['learning_rate']) / 2))
    hp = keras_tuner.HyperParameters()
    rnn.search_space(hp)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=tuning.OBJECTIVE,
                                                    max_trials=max_trials,
                                                    hyperparameters=hp,
                                                    seed=1,
                                                    allow_new_entries=False,
                                                    tune_new_entries=False)
    tuner = tuning.TrialTuner(oracle,
                              None,
                              rnn.RECIPE, {},
                              max_seconds,
                              directory=str(tmp_path),
                              project_name='search')
    tuner.search()
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
        'dropout', 'learning_rate', 'width'
    ]
    assert len(table) == 2 + 6


def test_no_trial_starts_after_the_wall_time_budget(monkeypatch, tmp_path):
    tuner = _search(monkeypatch, tmp_path, max_trials=6, max_seconds=0)
    assert len(tuner.oracle.trials) == 1


def test_a_search_whose_every_trial_failed_fails(monkeypatch, tmp_path):

    def failing(*args, **kwargs):
        raise ValueError('no data')

    monkeypatch.setattr(training, 'run', failing)
    hp = keras_tuner.HyperParameters()
    rnn.search_space(hp)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=tuning.OBJECTIVE,
                                                    max_trials=2,
                                                    hyperparameters=hp,
                                                    seed=1)
    tuner = tuning.TrialTuner(oracle,
                              None,
                              rnn.RECIPE, {},
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
