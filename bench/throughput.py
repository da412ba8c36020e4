"""Trainer throughput: the pipeline's input function against numpy arrays.

    python -m bench.throughput --model convnet --home HOME [--profile full]
                               [--rounds N] [--set KEY=VALUE ...]

Takes the transformed training examples and transform graph of a pipeline
run in HOME, builds the Trainer's own dataset (`models.inputs
.make_dataset` with a TFXIO DataAccessor, as the Trainer's run_fn does), and
materializes the very same examples as in-memory numpy arrays. Two copies of
the same model then train, one compiled as the Trainer compiles it (with its
speed-ups: `training.apply_speedups`), the other as a plain Keras script
would, one epoch at a time, alternately on each input (so that load from other
processes falls on both alike), and the examples per second are compared.
Also reported: the input function alone (no model), once cold and once
warm, which is the ceiling the Trainer can reach.
"""

import argparse
import functools
import glob
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from common import environment
from common import settings

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=wrong-import-position  # noqa: E402

from pipeline import configs  # pylint: disable=wrong-import-position  # noqa: E402
from pipeline import profiles  # noqa: E402
from pipeline import setting_checks  # noqa: E402

WARMUP_BATCHES = 8


def transform_outputs(home: str, pipeline_name: str) -> Tuple[str, str]:
    """(transformed examples URI, transform graph URI) of the newest run.

    Globs `<home>/pipelines/<name>/Transform/{transformed_examples,
    transform_graph}/<execution id>/`.

    Raises:
        FileNotFoundError: if the home holds no Transform output.
    """
    root = os.path.join(home, 'pipelines', pipeline_name, 'Transform')
    found = []
    for output in ('transformed_examples', 'transform_graph'):
        uris = sorted(glob.glob(os.path.join(root, output, '*')),
                      key=lambda p: int(os.path.basename(p))
                      if os.path.basename(p).isdigit() else -1)
        if not uris:
            raise FileNotFoundError(f'no {output} under {root}')
        found.append(uris[-1])
    return found[0], found[1]


def data_accessor(examples_uri: str):
    """A Trainer DataAccessor over the Examples artifact at `examples_uri`."""
    from models import workers  # pylint: disable=import-outside-toplevel
    return workers.data_accessor(examples_uri)


def materialize(dataset) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """Every batch of a (inputs, label) dataset as numpy arrays.

    Variable-length axes (padded sequences) are zero-padded to the longest.
    """
    inputs: Dict[str, List[np.ndarray]] = {}
    labels = []
    for batch, label in dataset.as_numpy_iterator():
        for key, value in batch.items():
            inputs.setdefault(key, []).append(value)
        labels.append(label)
    arrays = {}
    for key, parts in inputs.items():
        if parts[0].ndim >= 2:
            longest = max(p.shape[1] for p in parts)
            parts = [
                np.pad(p, [(0, 0),
                           (0, longest - p.shape[1])] + [(0, 0)] * (p.ndim - 2))
                for p in parts
            ]
        arrays[key] = np.concatenate(parts)
    return arrays, np.concatenate(labels).reshape(-1)


def _epoch_rates(fit: Callable[[], Any], examples: int) -> Tuple[float, float]:
    """(examples per wall second, examples per CPU second) of one call."""
    wall, cpu = time.monotonic(), time.process_time()
    fit()
    return (examples / (time.monotonic() - wall),
            examples / (time.process_time() - cpu))


def measure(
    model_name: str,
    home: str,
    profile: str = 'full',
    rounds: int = 2,
    overrides: Tuple[Tuple[str, Any], ...] = ()) -> Dict[str, Any]:
    """Measures the Trainer's input function and fit against numpy arrays.

    Args:
        model_name: `convnet` or `rnn`.
        home: A pipeline home holding a Transform output of that model.
        profile: The profile whose batch size and model size to use.
        rounds: Epochs timed on each input, alternating.
        overrides: Hyper-parameter overrides, as `--set` gives them.

    Returns:
        examples, batch size, input-only examples/s (cold and warm), fit
        examples/s through make_dataset and on arrays (per round and total),
        and their ratio.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.example_gen import data_source
    from models import distribute
    from models import inputs
    from models import training
    module = __import__(f'models.{model_name}.model', fromlist=['model'])

    config = configs.RunConfig(model=model_name,
                               profile=profile,
                               home=home,
                               overrides=overrides)
    source = data_source.detect(config.data_path, config.family.kind)
    params = {
        **config.hyperparameters, 'class_names': list(source.class_names),
        'num_channels': source.num_channels
    }
    batch_size = int(params['batch_size'])
    examples_uri, graph_uri = transform_outputs(config.home_path,
                                                config.pipeline_name)
    pattern = [os.path.join(examples_uri, 'Split-train', '*')]
    accessor = data_accessor(examples_uri)
    schema = tft.TFTransformOutput(graph_uri).transformed_metadata.schema
    to_inputs = functools.partial(module.to_model_inputs, params=params)

    def pipeline_dataset(shuffle: bool = True):
        return inputs.make_dataset(pattern,
                                   accessor,
                                   schema,
                                   to_inputs,
                                   batch_size,
                                   shuffle=shuffle,
                                   seed=params.get('seed'),
                                   cache=bool(params['cache_examples']))

    # One dataset for every epoch, as the Trainer's run_fn builds it once
    # and fits on it for all epochs.
    train = pipeline_dataset()
    input_rates = []
    count = 0
    for _ in range(2):  # Cold (first pass over the files), then warm.
        started = time.monotonic()
        count = sum(int(label.shape[0]) for _, label in train)
        input_rates.append(count / (time.monotonic() - started))
    arrays, labels = materialize(pipeline_dataset(shuffle=False))

    strategy = distribute.make_strategy(settings.value(params, 'strategy'))
    models = {}
    for key in ('make_dataset', 'arrays'):
        with strategy.scope():
            tf.keras.utils.set_random_seed(int(settings.value(params, 'seed')))
            model = module.build_model(params, len(source.class_names))
            training.compile_model(model, params)
            if key == 'make_dataset':
                # The Trainer's speed-ups; the arrays' model stays the plain
                # script's.
                training.apply_speedups(model, params)
        models[key] = model
    # Warm-up: trace the train step on a few batches of each input.
    models['make_dataset'].fit(train.take(WARMUP_BATCHES), epochs=1, verbose=0)
    warm = WARMUP_BATCHES * batch_size
    models['arrays'].fit({
        k: v[:warm] for k, v in arrays.items()
    },
                         labels[:warm],
                         batch_size=batch_size,
                         epochs=1,
                         verbose=0)
    fits = {
        'make_dataset':
            lambda: models['make_dataset'].fit(train, epochs=1, verbose=0),
        'arrays':
            lambda: models['arrays'].fit(arrays,
                                         labels,
                                         batch_size=batch_size,
                                         epochs=1,
                                         shuffle=True,
                                         verbose=0),
    }
    rates: Dict[str, List[float]] = {key: [] for key in fits}
    cpu_rates: Dict[str, List[float]] = {key: [] for key in fits}
    for round_ in range(rounds):
        # Alternate which goes first, so that neither always follows the other.
        order = list(fits) if round_ % 2 == 0 else list(reversed(fits))
        for key in order:
            wall_rate, cpu_rate = _epoch_rates(fits[key], count)
            rates[key].append(wall_rate)
            cpu_rates[key].append(cpu_rate)

    medians = {key: float(np.median(v)) for key, v in rates.items()}
    cpu_medians = {key: float(np.median(v)) for key, v in cpu_rates.items()}
    return {
        'model':
            model_name,
        'profile':
            profile,
        'examples':
            count,
        'batch_size':
            batch_size,
        'rounds':
            rounds,
        'input_only_examples_per_second': {
            'cold': round(input_rates[0], 1),
            'warm': round(input_rates[1], 1)
        },
        # Median over rounds of examples per wall second.
        'fit_examples_per_second': {
            k: round(v, 1) for k, v in medians.items()
        },
        'fit_examples_per_second_per_round': {
            key: [round(v, 1) for v in values] for key, values in rates.items()
        },
        # Examples per second of this process's CPU time: what the input
        # function costs, less swayed by other processes' load.
        'fit_examples_per_cpu_second': {
            k: round(v, 1) for k, v in cpu_medians.items()
        },
        'ratio':
            round(medians['make_dataset'] / medians['arrays'], 3),
        'cpu_ratio':
            round(cpu_medians['make_dataset'] / cpu_medians['arrays'], 3),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: measures one model and prints a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model',
                        required=True,
                        choices=sorted(profiles.MODELS))
    parser.add_argument('--home', required=True)
    parser.add_argument('--profile', default='full', choices=profiles.PROFILES)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        type=setting_checks.parse_setting,
                        dest='overrides',
                        metavar='KEY=VALUE',
                        help='a setting, as `pipeline run --set`')
    args = parser.parse_args(argv)
    print(json.dumps(
        measure(args.model, args.home, args.profile, args.rounds,
                tuple(args.overrides))),
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
