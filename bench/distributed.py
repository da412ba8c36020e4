"""Strategies compared through the Trainer's own training (`trainer.run`).

    python -m bench.distributed --home HOME [--model convnet] [--epochs 5]
        [--strategies auto,mirrored,multi_worker,parameter_server]
        [--set KEY=VALUE ...]

Reads the newest Transform output of the model's pipeline in HOME (a
pipeline run, or `python -m bench.scaling`), and trains on it once per
strategy, each in a fresh process (`mirrored` splits the CPU into
`cpu_devices` logical devices at start; `multi_worker` starts `workers`
worker processes, `parameter_server` as many and `parameter_servers`
parameter servers and a chief). Reports, per strategy: replicas, batch
sizes, examples seen, learning rate, each epoch's seconds, the slowest
epoch over the median (a stall shows as a ratio far above 1), and the eval
accuracy after each epoch.
"""

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench import common
from bench import throughput
from common import names
from pipeline import configs
from pipeline import profiles


def train_once(model_name: str, home: str, strategy: str, out: str,
               overrides: Sequence[Tuple[str, Any]]) -> Dict[str, Any]:
    """One `trainer.run` of the model's run_fn in this process."""
    # pylint: disable=import-outside-toplevel
    from tfx.components.trainer import fn_args_utils

    from components.example_gen import data_source
    from models import distribute
    from models import workers
    config = configs.RunConfig(model=model_name,
                               home=home,
                               strategy=strategy,
                               overrides=tuple(overrides))
    params = config.hyperparameters
    distribute.prepare_devices(strategy, int(params['cpu_devices']))
    source = data_source.detect(config.data_path, config.family.kind)
    examples, graph = throughput.transform_outputs(config.home_path,
                                                   config.pipeline_name)
    fn_args = fn_args_utils.FnArgs(
        working_dir=out,
        train_files=[f'{examples}/Split-train/*'],
        eval_files=[f'{examples}/Split-eval/*'],
        transform_output=graph,
        transform_graph_path=graph,
        serving_model_dir=os.path.join(out, 'serving_model'),
        model_run_dir=os.path.join(out, 'model_run'),
        custom_config={
            **params, 'class_names': list(source.class_names),
            'num_channels': source.num_channels
        },
        data_accessor=workers.data_accessor(examples))
    module, run_fn = config.family.run_fn.rsplit('.', 1)
    getattr(importlib.import_module(module), run_fn)(fn_args)
    with open(os.path.join(fn_args.model_run_dir, names.TRAINING_REPORT),
              encoding='utf-8') as f:
        report = json.load(f)
    seconds = report['epoch_seconds']
    # The first epoch also traces the step and fills the cache.
    later = seconds[1:] or seconds
    median = statistics.median(later)
    shown = ('strategy', 'replicas', 'workers', 'parameter_servers',
             'per_replica_batch', 'global_batch', 'learning_rate',
             'warmup_steps', 'steps', 'epoch_seconds', 'val_accuracy',
             'workers_lost')
    return {
        **{
            key: report.get(key) for key in shown
        },
        'slowest_over_median_epoch': round(max(later) / median, 3),
        # Examples seen in all: the same for every strategy at the same
        # epochs (each epoch is the split once, however it is divided).
        'examples_seen': report['steps'] * report['global_batch']
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: one JSON line with every strategy's figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--home', required=True)
    parser.add_argument('--model',
                        default='convnet',
                        choices=sorted(profiles.MODELS))
    parser.add_argument('--epochs', type=int, default=5)
    parser.add_argument('--strategies',
                        default='auto,mirrored,multi_worker,parameter_server')
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        dest='overrides',
                        metavar='KEY=VALUE')
    parser.add_argument('--one', help=argparse.SUPPRESS)  # A child's strategy.
    args = parser.parse_args(argv)
    overrides = [(k, json.loads(v))
                 for k, v in (item.split('=', 1) for item in args.overrides)]
    overrides.append(('epochs', args.epochs))
    if args.one:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(
                train_once(args.model, args.home, args.one, out, overrides)),
                  flush=True)
        return 0
    results = {}
    for strategy in args.strategies.split(','):
        results[strategy] = common.run_json([
            '-m', 'bench.distributed', '--home', args.home, '--model',
            args.model, '--epochs',
            str(args.epochs), '--one', strategy,
            *[f'--set={item}' for item in args.overrides]
        ])
    print(json.dumps(results), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
