"""The benchmark's pure pieces on tiny inputs: by-hand loading and z-score,
scaled IDX data, growth exponent, JSON lines, and the report writer.
Behaviour only; nothing here times anything."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bench import __main__ as bench_main
from bench import by_hand
from bench import common
from bench import larger_than_memory
from bench import report
from bench import scaling
from bench import serving_bench
from bench import small_data
from formats import image_formats
from models import features
from models import schedule
from pipeline import configs
from tests import datasets
from tests import tiny_models


def test_by_hand_loads_idx_and_zscores_with_train_statistics(tmp_path):
    folder = datasets.write_idx_dataset(str(tmp_path / 'idx'),
                                        train=30,
                                        test=10,
                                        num_classes=3)
    images, labels = by_hand.load_idx_split(
        f'{folder}/train-images-idx3-ubyte.gz', num_classes=3, limit=20)
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (20,) and labels.max() < 3

    test, _ = by_hand.load_idx_split(f'{folder}/t10k-images-idx3-ubyte.gz', 3)
    train_z, test_z = by_hand.zscore_images(images, test)
    assert train_z.dtype == np.float32 and test_z.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(train_z.mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(train_z.std(), 1.0, atol=1e-3)
    # The test split is scaled with the training split's statistics.
    mean, std = images.mean() / 255.0, images.std() / 255.0
    np.testing.assert_allclose(test_z, (test / 255.0 - mean) / std,
                               rtol=1e-3,
                               atol=1e-3)


def test_holdout_splits_every_index_once():
    keep, held = by_hand.holdout(50, 10, seed=1)
    assert len(held) == 5 and len(keep) == 45
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(50))


def test_sequences_zscore_ignores_and_zeroes_missing_values():
    train = [
        np.array([[1.0, np.nan], [3.0, 4.0]], np.float32),
        np.array([[5.0, 8.0]], np.float32)
    ]
    [normalized] = by_hand.zscore_sequences(train)
    steps = np.concatenate(normalized)
    assert steps[0, 1] == 0.0  # Missing -> the mean, 0.
    np.testing.assert_allclose(steps[:, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(steps[[1, 2], 1], [-1.0, 1.0], atol=1e-5)

    padded, lengths = by_hand.pad_sequences(normalized)
    assert padded.shape == (2, 2, 2) and lengths.tolist() == [2, 1]
    assert (padded[1, 1] == 0).all()


def test_scaled_idx_repeats_images_and_keeps_class_names(tmp_path):
    source = datasets.write_idx_dataset(str(tmp_path / 'src'),
                                        train=10,
                                        test=4,
                                        num_classes=3)
    rows = scaling.write_scaled_idx(source, str(tmp_path / 'x2.5'), 2.5)
    assert rows == {'train': 25, 'test': 10}
    images, labels = image_formats.read_idx_dataset(
        str(tmp_path / 'x2.5' / 'train-images-idx3-ubyte'),
        str(tmp_path / 'x2.5' / 'train-labels-idx1-ubyte'), 3)
    original, _ = image_formats.read_idx_dataset(
        f'{source}/train-images-idx3-ubyte.gz',
        f'{source}/train-labels-idx1-ubyte.gz', 3)
    assert images.shape == (25, 28, 28)
    np.testing.assert_array_equal(images[10:20], original)
    assert labels[:10].tolist() == labels[10:20].tolist()
    assert (tmp_path / 'x2.5' /
            'class_names.txt').read_text().split() == ['0', '1', '2']
    assert scaling.write_scaled_idx(source, str(tmp_path / 'half'), 0.5) == {
        'train': 5,
        'test': 2
    }


def test_growth_exponent():
    assert scaling.growth_exponent([1, 4], [10.0, 40.0]) == 1.0
    assert scaling.growth_exponent([1, 2, 4], [10.0, 12.0, 20.0]) == 0.5
    assert scaling.growth_exponent([1], [10.0]) is None


def test_the_trainers_schedule_fits_japanese_vowels_split():
    """The function the Trainer fits its schedule with (and the by-hand
    job trains by), on the full profile's JapaneseVowels split."""
    params = configs.RunConfig(model='rnn', profile='full').hyperparameters
    # JapaneseVowels' split: under 50 eval examples, the Trainer trains up
    # to max_train_steps (5000 steps of 8 an epoch), not `epochs` (60).
    batch, steps, fitted = schedule.fitted_to_data(dict(params), 243, 27)
    assert steps == 8
    assert (batch, fitted['epochs']) == (32, 625)
    batch, _, fitted = schedule.fitted_to_data(dict(params), 243, 1000)
    assert (batch, fitted['epochs']) == (32, 125)  # min_train_steps 1000.
    assert fitted['batch_norm_momentum'] < 0.99  # Fitted to 8 steps.


def test_by_hand_twin_trains_as_many_epochs_as_the_trainer_did():
    run = {'training': {'epoch_seconds': [9.0, 1.0, 1.0]}}
    assert bench_main.trained_epochs_flag(run) == ['--epochs=3']
    assert bench_main.trained_epochs_flag(None) == []  # The run failed.


def test_last_json_line_skips_progress_lines():
    text = '[10:00:00] Trainer ...\n{"a": 1}\nnot json {\n'
    assert common.last_json_line(text) == {'a': 1}


def _fake_results():
    return {
        'mode': 'quick',
        'profile': 'full',
        'machine': {
            'cpus': 2,
            'load_start': [1.0, 1.0, 1.0],
            'load_end': [2.0, 1.5, 1.0]
        },
        'pipeline': {
            'convnet': {
                'accuracy': 0.93,
                'wall_seconds': 120.0,
                'training': {
                    'epoch_seconds': [30.0, 20.0],
                    'global_batch': 128
                },
                'startup_seconds': 20.0,
                'component_seconds': {
                    'FileBasedExampleGen': 10.0,
                    'StatisticsGen': 5.0,
                    'Transform': 15.0,
                    'Trainer': 50.0,
                    'Evaluator': 15.0,
                    'Pusher': 5.0
                }
            }
        },
        'by_hand': {
            'convnet': {
                'accuracy': 0.9371,
                'wall_seconds': 100.0,
                'epochs': 2,
                'batch_size': 64,
                'startup_seconds': 20.0,
                'phase_seconds': {
                    'load': 1.0,
                    'normalize': 1.0,
                    'build': 1.0,
                    'fit': 75.0,
                    'evaluate': 1.0,
                    'save': 1.0
                }
            }
        },
        'ratios': {
            'convnet': 0.98
        },
        'smoke': {
            'convnet': {
                'wall_seconds': 90.0
            },
            'rnn': {
                'wall_seconds': 55.0
            }
        },
        'reruns': {
            'convnet': {
                'first_wall_seconds': 30.0,
                'cached_wall_seconds': 12.0
            },
            'rnn': {
                'first_wall_seconds': 31.0,
                'cached_wall_seconds': None  # That rerun failed.
            }
        },
        'throughput': {
            'convnet': {
                'ratio': 0.97,
                'cpu_ratio': 1.0,
                'fit_examples_per_second': {
                    'make_dataset': 97.0,
                    'arrays': 100.0
                },
                'input_only_examples_per_second': {
                    'cold': 1e3,
                    'warm': 2e3
                }
            }
        },
        'scaling': {
            'growth_exponent':
                0.8,
            'points': [{
                'scale': s,
                'total_rows': int(100 * s),
                'ingest_seconds': 10.0 * s**0.8,
                'rows_per_second': 10.0 * s**0.2,
                'component_seconds': {
                    'FileBasedExampleGen': 1.0,
                    'StatisticsGen': 1.0,
                    'Transform': 1.0
                },
                'component_rows_per_second': {
                    'FileBasedExampleGen': 1.0,
                    'StatisticsGen': 2.0,
                    'Transform': 3.0
                }
            } for s in (1.0, 2.0, 4.0)]
        },
        'serving': {
            'latency_ms': {
                'grpc': {
                    'p50': 1.9
                },
                'overhead_p50': 0.6
            },
            'throughput_rps': {
                'batching_off': {
                    '1': 200.0,
                    '32': 500.0
                },
                'batching_on': {
                    '1': 180.0,
                    '32': 1600.0
                }
            },
            'batching_speedup_at_32': 3.2,
            'front_end': {
                'current': {
                    'rest_1_connection': {
                        'p50_ms': 1.1
                    }
                },
                'ratios': {
                    'rest_64_connections': 1.2
                }
            }
        },
        'errors': {},
    }


def test_report_writes_json_png_and_judges_targets(tmp_path):
    results = _fake_results()
    json_path, png_path = report.write_report(results, tmp_path)
    written = json.loads(json_path.read_text())
    met = {name: target['met'] for name, target in written['targets'].items()}
    assert met == {
        'convnet_pipeline_over_by_hand': True,
        'rnn_pipeline_over_by_hand': None,  # No rnn run.
        'convnet_accuracy_gap': False,  # 0.0071 > 0.005
        'trainer_throughput_ratio': True,
        'ingest_growth_exponent': True,
        'smoke_end_to_end_seconds': False,
        'cached_rerun_seconds': True,
        'serving_batching_speedup_at_32': True,
        'serving_grpc_overhead_p50_ms': False,
        'serving_rest_kept_alive_p50_ms': True,  # 1.1 <= 2
        'serving_rest_64_connections_speedup': False,  # 1.2 < 3
    }
    assert written['targets']['smoke_end_to_end_seconds'] == {
        'value': 90.0,
        'limit': 60.0,
        'rule': '<=',
        'met': False,
        'note': 'the slower of the two models'
    }
    assert written['targets']['convnet_accuracy_gap']['value'] == 0.0071
    assert png_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    table = report.format_table(results)
    assert 'convnet' in table and 'NOT met' in table
    assert 'at end [2.0, 1.5, 1.0]' in table
    assert '0.9300 / 0.9371' in table
    assert '2x128' in table and '2x64' in table  # Epochs x batch, each side.
    assert '32 clients 1600.0' in table
    breakdown = dict(report.pipeline_breakdown(results['pipeline']['convnet']))
    assert breakdown['other components'] == 5.0
    assert breakdown['startup'] == 20.0


def test_report_colours_each_phase_alike_on_both_sides():
    results = _fake_results()
    [(_, pipeline, _), (_, by_hand, _)] = list(report._stacks(results))  # pylint: disable=protected-access
    colours = {
        name:
            report._PHASE_COLORS[report._PHASE_OF[name]
                                ]  # pylint: disable=protected-access
        for name, _ in pipeline + by_hand
    }
    assert colours['Trainer'] == colours['fit'] == colours['save']
    assert colours['Transform'] == colours['normalize']
    assert colours['FileBasedExampleGen'] == colours['load']
    assert colours['Evaluator'] == colours['evaluate']
    assert colours['startup'] != colours['Trainer']


def test_report_leaves_unmeasured_targets_open(tmp_path):
    results = _fake_results()
    results['profile'] = 'smoke'
    del results['scaling']
    report.write_report(results, tmp_path)
    assert results['targets']['convnet_pipeline_over_by_hand']['met'] is None
    assert results['targets']['ingest_growth_exponent']['met'] is None


def test_kept_reads_the_newest_trainer_model_and_scores_both_splits(tmp_path):
    """`small_data kept`: the newest exported model (execution 12, not 3)
    scored on the newest ExampleGen run's eval and test splits, beside the
    training report's kept epoch."""
    root = tmp_path / 'pipelines' / 'convnet-pipeline'
    trainer = root / 'Trainer'
    tiny_models.save_image_model(str(trainer / 'model' / '3' /
                                     'Format-Serving'),
                                 broken=True)
    tiny_models.save_image_model(
        str(trainer / 'model' / '12' / 'Format-Serving'))
    (trainer / 'model_run' / '12').mkdir(parents=True)
    (trainer / 'model_run' / '12' / 'training.json').write_text(
        json.dumps({
            'val_accuracy': [0.5, 0.9, 0.8],
            'kept_epoch': 1,
            'best_val_accuracy': 0.9
        }))
    dark, light = tiny_models.png_bytes(0), tiny_models.png_bytes(255)
    # The tiny model calls a dark image class 0, a light one class 2.
    splits = {
        'eval': [(dark, 0), (light, 2), (light, 2), (light, 0)],
        'test': [(dark, 0), (light, 2)]
    }
    for split, rows in splits.items():
        folder = root / 'FileBasedExampleGen' / 'examples' / '4' / (
            f'Split-{split}')
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / 'data.gz'), 'GZIP') as out:
            for image, label in rows:
                out.write(features.image_example(image, label))
    assert small_data.kept_model_accuracy(str(tmp_path), 'convnet') == {
        'epochs_run': 3,
        'kept_epoch': 1,
        'kept_epoch_eval_accuracy': 0.9,
        'best_eval_accuracy': 0.9,
        'exported_eval_accuracy': 0.75,
        'exported_test_accuracy': 1.0
    }


# A process that burns some CPU, starts a child that does the same, prints
# each one's own CPU seconds (os.times) and waits on its stdin.
_PROCESS_TREE = """
import os, subprocess, sys

def burn():
    total = 0
    for i in range(3_000_000):
        total += i
    times = os.times()
    return times.user + times.system

if sys.argv[1] == 'parent':
    child = subprocess.Popen([sys.executable, '-c', sys.argv[2], 'child', ''],
                             stdout=subprocess.PIPE, text=True)
    child_line = child.stdout.readline()
    print(burn(), child_line.strip(), flush=True)
    sys.stdin.read()
    child.wait()
else:
    print(burn(), flush=True)
    sys.stdin.read()
"""


def test_a_servers_cpu_by_its_id_counts_its_live_child_processes():
    """cpu_seconds(pid) (read from /proc) is the process's CPU and its
    children's, as each of them counts its own."""
    tree = subprocess.Popen(
        [sys.executable, '-c', _PROCESS_TREE, 'parent', _PROCESS_TREE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True)
    try:
        parent_cpu, child_cpu = map(float, tree.stdout.readline().split())
        assert child_cpu > 0.05
        # Both now wait on stdin: their CPU stays what they printed.
        assert serving_bench.cpu_seconds(tree.pid) == pytest.approx(parent_cpu +
                                                                    child_cpu,
                                                                    abs=0.05)
    finally:
        tree.stdin.close()
        tree.wait(timeout=60)


def test_serving_bench_cells_count_per_request_and_print_every_client_count():
    # 10 requests of 1 ms and one of 101 ms in 2 s; 11 ms of client CPU
    # and 22 ms of server CPU in all.
    cell = serving_bench._cell([0.001] * 10 + [0.101], 2.0, 0.011, 0.022)  # pylint: disable=protected-access
    assert cell['rps'] == 5.5
    assert cell['p50'] == 1.0 and cell['p99'] == 91.0
    assert (cell['client_cpu_ms'], cell['server_cpu_ms']) == (1.0, 2.0)
    assert 'server_cpu_ms' not in serving_bench._cell([0.001], 1.0, 0.0, None)  # pylint: disable=protected-access
    cells = {str(c): dict(cell) for c in serving_bench.CONCURRENCY}
    results = {
        'latency_ms': {
            'in_process': {
                'p50': 1.0,
                'p99': 2.0
            },
            'grpc': {
                'p50': 1.4,
                'p99': 3.0
            },
            'overhead_p50': 0.4
        },
        'signature_cost': {
            '1': {
                'cpu_ms_per_row': 1.5
            },
            '32': {
                'cpu_ms_per_row': 0.3
            }
        },
        'throughput': {
            'grpc_batching_off': cells,
            'in_process_direct': cells
        },
        'batching_speedup_at_32': 1.0,
        'load_average': {
            'start': [1.0, 1.0, 1.0],
            'end': [2.0, 1.0, 1.0]
        },
    }
    table = serving_bench.format_table(results)
    for clients in serving_bench.CONCURRENCY:
        assert f'grpc_batching_off{clients:>19}' in table
    assert '2.00 + 1.00' in table


def test_by_hand_job_trains_the_epochs_the_schedule_fits(tmp_path):
    folder = datasets.write_idx_dataset(str(tmp_path / 'idx'),
                                        train=60,
                                        test=10,
                                        num_classes=10)
    config = configs.RunConfig(model='convnet',
                               profile='smoke',
                               data=folder,
                               overrides=(('min_train_steps', 5),))
    result = by_hand.train_and_evaluate(config)
    split = result['examples']
    batch, _, fitted = schedule.fitted_to_data(dict(config.hyperparameters),
                                               split['train'], split['eval'])
    # 54 training images: a batch of 5 (a tenth), 11 steps an epoch; 5
    # steps of the profile's batch are 64 steps of 5: 6 epochs, not 1.
    assert (result['batch_size'], result['epochs']) == (batch, 6) == (5, 6)
    assert fitted['epochs'] == 6 and config.hyperparameters['epochs'] == 1


# A process holding 200 MiB that writes its pid to argv[1] once it does.
_HOLDER = ('import os, sys, time; block = b"x" * (200 * 2**20); '
           'open(sys.argv[1], "w").write(str(os.getpid())); '
           'time.sleep(600)')


def _wait_for_pid_file(ready, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # Liveness only.
    while not (ready.exists() and ready.read_text()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def test_tree_rss_counts_the_memory_of_descendants(tmp_path):
    # bench/larger_than_memory.py's peak RSS is the run's whole tree: a
    # grandchild holding 200 MiB adds that much to its grandparent's.
    ready = tmp_path / 'ready'
    middle = subprocess.Popen([
        sys.executable, '-c',
        'import subprocess, sys; subprocess.run(sys.argv[1:])', sys.executable,
        '-c', _HOLDER,
        str(ready)
    ])
    try:
        _wait_for_pid_file(ready, middle)
        with open(f'/proc/{middle.pid}/statm', encoding='utf-8') as f:
            own = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        tree = larger_than_memory.tree_rss_bytes(middle.pid)
        assert tree - own >= 200 * 2**20
    finally:
        if ready.exists() and ready.read_text():
            os.kill(int(ready.read_text()), signal.SIGKILL)
        middle.kill()
        middle.wait()


def test_memory_bench_samples_an_engines_processes_apart_from_the_run(tmp_path):
    # With --engine, the cluster's processes are not the run's children:
    # measured_run samples their trees apart. A process holding 200 MiB
    # stands in for the cluster's JVMs (the sampling reads /proc alike).
    ready = tmp_path / 'ready'
    engine = subprocess.Popen([sys.executable, '-c', _HOLDER, str(ready)])
    try:
        _wait_for_pid_file(ready, engine)
        measured = larger_than_memory.measured_run(['run', '--list-settings'],
                                                   tmp_path / 'run.log', None,
                                                   [engine.pid])
    finally:
        engine.kill()
        engine.wait()
    assert measured['returncode'] == 0
    assert measured['engine_peak_rss_mib'] >= 200
    assert measured['peak_rss_mib'] < 200  # The run's own tree, not both.
    assert (set(measured['component_engine_peak_rss_mib']) == set(
        measured['component_peak_rss_mib']))
