"""End to end, as a user runs it, for the convolutional sequence families:
`python -m pipeline run` of the FCN (with a random search of two trials) and
of InceptionTime on small `.ts` files, their models' handling of padding,
the served models' answers. The RNN's runs:
tests/test_pipeline_e2e_sequences.py.
"""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from common import settings
from common import signatures
from formats import ts_format
from models import features
from models import schedule
from pipeline import profiles
from tests import datasets
from tests import pipeline_runs

# Heavy (tests/conftest.py): the FCN with its search and its rerun,
# InceptionTime.
pytestmark = pytest.mark.heavy(150)


def _signature(model, name):
    return model.signatures[name]


# Fewer steps than the profile's minimum: three trainings (two trials and
# the Trainer) on 60 series; the first trial the profile's own values; every
# trial with the rate's cosine decay, a setting given (the search holds it).
FCN_FLAGS = ('--model', 'fcn', '--set', 'tune_trials=2', '--set',
             'min_train_steps=60', '--set', 'learning_rate_decay=cosine')


@pytest.fixture(scope='module')
def fcn_run(tmp_path_factory):
    """One smoke run of the 1-D convnet (FCN) pipeline on small sequences,
    with a random search of two trials before the Trainer."""
    root = tmp_path_factory.mktemp('fcn')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    summary, log = pipeline_runs.run_pipeline(*FCN_FLAGS, '--data', data,
                                              '--home', home)
    assert summary is not None, log
    return summary, data, home, log


@pytest.fixture(scope='module')
def inception_time_run(tmp_path_factory):
    """One run of the InceptionTime pipeline on small sequences, no Tuner:
    as the RNN's run, a few epochs of two steps, for each of an ensemble's
    two networks, trained on the eval split too."""
    root = tmp_path_factory.mktemp('inception_time')
    data = datasets.write_ts_dataset(str(root / 'data'), train=60, test=30)
    home = str(root / 'home')
    summary, log = pipeline_runs.run_pipeline(
        '--model', 'inception_time', '--data', data, '--home', home, '--set',
        'epochs=10', '--set', 'min_train_steps=0', '--set',
        'learning_rate=0.01', '--set', 'ensemble_size=2', '--set',
        'train_on_small_eval=true')
    assert summary is not None, log
    return summary, data, home, log


@pytest.mark.parametrize('family', ['fcn', 'inception_time'])
def test_convolutional_runs_push_a_model_that_ignores_padding(family, request):
    summary, data, _, log = request.getfixturevalue(f'{family}_run')
    assert summary['model'] == family
    assert summary['blessed'] is True, log
    assert summary['accuracy'] > 0.6, summary
    model = tf.saved_model.load(summary['pushed_model'])
    serve = _signature(model, signatures.SEQUENCE_SIGNATURE)

    sequences = list(ts_format.read_ts(os.path.join(data, 'Toy_TEST.ts')))[:6]
    short = min(sequences, key=lambda s: len(s.values))
    longest = max(len(s.values) for s in sequences)

    def scores_of_short(batch, width):
        """`short`'s scores, sent first in `batch` padded to `width`."""
        padded = np.full((len(batch), width, 3), 7.0, np.float32)
        for i, s in enumerate(batch):
            padded[i, :len(s.values)] = s.values
        return serve(
            sequences=tf.constant(padded),
            lengths=tf.constant([len(s.values) for s in batch],
                                tf.int64))[signatures.SCORES_OUTPUT].numpy()[0]

    alone = scores_of_short([short], len(short.values))
    # Padded to two lengths, and inside the model padded to the batch's
    # longest sequence: the same answer.
    np.testing.assert_allclose(scores_of_short([short] + sequences, longest),
                               alone,
                               atol=1e-5)
    np.testing.assert_allclose(scores_of_short([short] + sequences,
                                               longest + 20),
                               alone,
                               atol=1e-5)
    class_index = {'a': 0, 'b': 1, 'c': 2}
    from_examples = _signature(
        model, signatures.DEFAULT_SIGNATURE)(inputs=tf.constant([
            features.sequence_example(short.values, class_index[short.label])
        ]))
    np.testing.assert_allclose(
        from_examples[signatures.SCORES_OUTPUT].numpy()[0], alone, atol=1e-5)


def test_inception_time_trains_and_pushes_an_ensemble(inception_time_run):
    """Two networks, one after the other, each of its own seed and with its
    own stop; the padding and serving tests here run on their average."""
    summary, _, _, log = inception_time_run
    networks = summary['training']['ensemble']
    seed = settings.value({}, 'seed')
    assert [n['seed'] for n in networks] == [seed, seed + 1], log
    for network in networks:
        assert network['steps'] > 0
        assert network['epochs'] >= network['kept_epoch'] + 1
        assert network['stop_reason'] in schedule.STOP_REASONS
    assert summary['training']['stop_reason'] == networks[0]['stop_reason']


def _only_file(pattern):
    matches = glob.glob(pattern)
    assert len(matches) == 1, (pattern, matches)
    with open(matches[0], encoding='utf-8') as f:
        return json.load(f)


@pytest.mark.parametrize('family,trains_on_eval', [('fcn', False),
                                                   ('inception_time', True)])
def test_a_small_eval_split_is_trained_on_when_asked(family, trains_on_eval,
                                                     request):
    """The toy set's 60 training series less the eval split's handful (too
    few to choose an epoch by): the InceptionTime run, given
    `train_on_small_eval`, trains on all 60; the FCN's, by default, on the
    rest."""
    _, _, home, _ = request.getfixturevalue(f'{family}_run')
    # Every Trainer run of the home (the FCN's Tuner test reruns it).
    paths = glob.glob(
        os.path.join(home, 'pipelines', f'{family}-pipeline', 'Trainer',
                     'model_run', '*', 'training.json'))
    assert paths
    for path in paths:
        with open(path, encoding='utf-8') as f:
            report = json.load(f)
        assert 0 < report['eval_examples'] < settings.MIN_EVAL_EXAMPLES
        assert report['trained_on_eval'] is trains_on_eval
        assert report['train_examples'] == 60 - (0 if trains_on_eval else
                                                 report['eval_examples'])


def test_tuner_tries_two_trials_and_the_trainer_trains_the_best(fcn_run):
    summary, data, home, log = fcn_run
    outputs = os.path.join(home, 'pipelines', 'fcn-pipeline', 'Tuner')
    trials = _only_file(
        os.path.join(outputs, 'tuner_results', '*', 'tuner_results.json'))
    best = _only_file(
        os.path.join(outputs, 'best_hyperparameters', '*',
                     'best_hyperparameters.txt'))['values']
    assert len(trials) == 2, trials
    assert all(0.0 <= t['score'] <= 1.0 for t in trials)
    best_trial = max(trials, key=lambda t: t['score'])
    assert {k: best_trial[k] for k in best} == best
    # The search chose between the sequence families (tune_families, on by
    # default: rnn, fcn, inception_time). The pushed model
    # is the best trial's family with its architecture: for the FCN,
    # `depth` blocks of `width`, 2 x `width`, ... filters; for the RNN,
    # recurrent layers and no convolution.
    family = best['family']
    assert {t['family'] for t in trials} <= {'fcn', 'rnn',
                                             'inception_time'}, trials
    model = tf.saved_model.load(summary['pushed_model'])
    variable_names = [
        v.name
        for v in tf.train.TrackableView(model).descendants()
        if isinstance(v, tf.Variable)
    ]
    kernels = sorted((v.name, v.shape[-1])
                     for v in tf.train.TrackableView(model).descendants()
                     if isinstance(v, tf.Variable) and
                     v.name.startswith('block') and 'conv' in v.name)
    if family == 'fcn':
        width, depth = best['fcn/width'], best['fcn/depth']
        assert [filters for _, filters in kernels] == [width, 2 * width, width
                                                      ][:depth], (kernels, best)
    elif family == 'inception_time':
        assert not kernels and any(
            'module0_' in name for name in variable_names), variable_names
    else:
        assert not kernels and any(
            'rnn0' in name for name in variable_names), variable_names
    # One trial (the first) was the profile's own values, the FCN's (a
    # family's values are named in its scope), read here from the profile
    # by hand: `width` and `depth` are its conv_filters' first and count.
    smoke = {
        **settings.family_defaults('fcn'),
        **profiles.MODELS['fcn'].profiles['smoke']
    }
    profile = {
        'family': 'fcn',
        'fcn/width': smoke['conv_filters'][0],
        'fcn/depth': len(smoke['conv_filters']),
        'fcn/dropout': smoke['dropout'],
        'fcn/learning_rate': smoke['learning_rate'],
        'fcn/learning_rate_decay': 'cosine',
        'fcn/batch_size': smoke['batch_size'],
        'fcn/training_length': smoke['training_length'],
    }
    assert any(
        {key: t.get(key) for key in profile} == profile for t in trials), (
            profile, trials)
    assert {t[f"{t['family']}/learning_rate_decay"] for t in trials
           } == {'cosine'}, trials
    report = _only_file(
        os.path.join(home, 'pipelines', 'fcn-pipeline', 'Trainer', 'model_run',
                     '*', 'training.json'))
    assert report['family'] == family
    # A cosine decay is a schedule: no plateau halving on top of it.
    assert report['learning_rate_decay'] == 'cosine'
    assert not report['lr_plateau']

    # A rerun on the same data takes the Tuner's result from the cache.
    again, log = pipeline_runs.run_pipeline(*FCN_FLAGS, '--data', data,
                                            '--home', home)
    assert again is not None, log
    assert any(
        line.endswith('(cached)')
        for line in log.splitlines()
        if '] Tuner done' in line), log


@pytest.mark.parametrize('family', ['fcn', 'inception_time'])
def test_served_sequence_answers_equal_the_saved_models_own(
        family, request, e2e_server):
    """The convolutional families' pushed models over gRPC and REST answer
    as they do in process."""
    summary, data, _, _ = request.getfixturevalue(f'{family}_run')
    sequences = pipeline_runs.test_sequences(data)
    pipeline_runs.assert_served_as_in_process(
        e2e_server, summary['pushed_model'], signatures.SEQUENCE_SIGNATURE,
        pipeline_runs.padded_sequences(sequences),
        [features.sequence_example(s.values, 0) for s in sequences])


@pytest.fixture(scope='module')
def e2e_server(fcn_run, inception_time_run, tmp_path_factory):
    """One model server for the FCN's and InceptionTime's models, each
    pinned to its first run's version."""
    with pipeline_runs.pinned_server(
            tmp_path_factory.mktemp('e2e_server'),
        [fcn_run[0], inception_time_run[0]]) as server:
        yield server
