"""Time of a training step under the Trainer's speed-ups and without them.

The plain compile against each variant, in one process.

    python -m bench.step_time --model convnet [--profile full] [--steps 12]
        [--rounds 3] [--threads 1] [--variant KEY=VALUE[,KEY=VALUE...] ...]

Builds the family's model at the profile's size (the same seed) once per
variant: the plain compile (`training.compile_model`, as bench/by_hand.py
compiles it), and once for each `--variant`, whose settings
`training.apply_speedups` applies (`jit_compile=true`,
`steps_per_execution=8`). Each trains on the same first `steps` batches of
the by-hand script's training arrays (bench/by_hand.py `load_data`), one
epoch at a time, the variants in turn and the order reversed every round,
so that load from other processes falls on all alike. Prints one JSON line
per variant: the first epoch's seconds (tracing, XLA's compile) and the
median wall and CPU milliseconds a step.

`--threads 1` runs TensorFlow's ops on one thread: its CPU time a step is
then the step's work, not threads spinning on a loaded machine. oneDNN is
set for the whole process by TF_ENABLE_ONEDNN_OPTS before TensorFlow loads
(pipeline/cli.py turns it on): run this twice, with 0 and 1, to compare;
the output's `onednn` says which ran.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from common import environment
from common import settings

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=wrong-import-position  # noqa: E402

from pipeline import configs  # pylint: disable=wrong-import-position  # noqa: E402
from pipeline import profiles  # noqa: E402
from pipeline import setting_checks  # noqa: E402


def _variant(text: str) -> Dict[str, Any]:
    return dict(setting_checks.parse_setting(item) for item in text.split(','))


def first_batches(model_name: str, profile: str,
                  steps: int) -> Tuple[Dict[str, Any], int, Any, int]:
    """(params, classes, dataset, batches): the first `steps` batches.

    Of the by-hand script's training split (bench/by_hand.py `load_data`),
    in the profile's `batch_size`, with the profile's params and what the
    data adds to them (`num_channels`, ...).
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from bench import by_hand
    config = configs.RunConfig(model=model_name, profile=profile)
    splits, extra = by_hand.load_data(config)
    num_classes = extra.pop('num_classes')
    extra.pop('_seconds')
    params = {**config.hyperparameters, **extra}
    batch = int(params['batch_size'])
    features, labels = splits['train']
    count = min(len(labels), batch * steps)
    dataset = tf.data.Dataset.from_tensor_slices(({
        k: v[:count] for k, v in features.items()
    }, labels[:count])).batch(batch).cache()
    return params, num_classes, dataset, -(-count // batch)


def measure(model_name: str, profile: str, steps: int, rounds: int,
            variants: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Step times of the plain compile and of each variant's speed-ups."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from models import training
    module = __import__(f'models.{model_name}.model', fromlist=['model'])

    params, num_classes, dataset, batches = first_batches(
        model_name, profile, steps)
    models = []
    for variant in [{}] + variants:
        tf.keras.utils.set_random_seed(int(settings.value(params, 'seed')))
        model = module.build_model(params, num_classes)
        training.compile_model(model, params)
        training.apply_speedups(model, {**params, **variant})
        started = time.monotonic()
        model.fit(dataset, epochs=1, verbose=0)
        models.append((variant, model, time.monotonic() - started))
    walls: List[List[float]] = [[] for _ in models]
    cpus: List[List[float]] = [[] for _ in models]
    for round_ in range(rounds):
        order = list(range(len(models)))
        for index in order if round_ % 2 == 0 else reversed(order):
            wall, cpu = time.monotonic(), time.process_time()
            models[index][1].fit(dataset, epochs=1, verbose=0)
            walls[index].append(time.monotonic() - wall)
            cpus[index].append(time.process_time() - cpu)
    return [{
        'model': model_name,
        'profile': profile,
        'variant': variant,
        'onednn': bool(_pywrap_util_port.IsMklEnabled()),
        'threads': tf.config.threading.get_intra_op_parallelism_threads(),
        'steps': batches,
        'first_epoch_seconds': round(first, 1),
        'ms_per_step': round(1000 * float(np.median(walls[i])) / batches, 1),
        'cpu_ms_per_step': round(1000 * float(np.median(cpus[i])) / batches, 1),
        'load': [round(v, 2) for v in os.getloadavg()],
    } for i, (variant, _, first) in enumerate(models)]


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: one JSON line per variant."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model',
                        required=True,
                        choices=sorted(profiles.MODELS))
    parser.add_argument('--profile', default='full', choices=profiles.PROFILES)
    parser.add_argument('--steps', type=int, default=12)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads',
                        type=int,
                        default=0,
                        help="TensorFlow's op threads, 0: its default")
    parser.add_argument('--variant',
                        action='append',
                        default=[],
                        type=_variant,
                        metavar='KEY=VALUE[,KEY=VALUE...]')
    args = parser.parse_args(argv)
    if args.threads:
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for line in measure(args.model, args.profile, args.steps, args.rounds,
                        args.variant):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
