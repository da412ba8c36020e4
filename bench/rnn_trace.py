"""The RNN's first epoch with and without cuDNN's kernel traced.

    python -m bench.rnn_trace [--profile full] [--rounds 2]

In a tf.function tf_keras traces each LSTM and GRU layer twice, its standard
kernel and cuDNN's, for Grappler to choose when it runs; where no GPU is
visible the RNN traces the standard one only (models/rnn/model.py). Each
measurement is a fresh process (TensorFlow caches what it traced): the
profile's RNN, built by the recipe, on the first batches of the by-hand
script's data (bench/step_time.py `first_batches`), one epoch of training and
evaluation (both steps traced), the variants alternating. Prints one JSON
line per process: the variant (`cudnn_traced`), the epoch's wall and CPU
seconds, and the load average.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

from common import environment

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from pipeline import profiles  # pylint: disable=wrong-import-position  # noqa: E402

_BATCHES = 4


def first_epoch(profile: str, cudnn_traced: bool) -> dict:
    """The seconds of one process's first epoch of the RNN."""
    # pylint: disable=import-outside-toplevel
    from bench import step_time
    from models import tracing
    from models import training
    from models.rnn import model as rnn

    tracing.skip_autograph_of_tf_keras()  # As the Trainer does.
    params, num_classes, dataset, _ = step_time.first_batches(
        'rnn', profile, _BATCHES)
    model = rnn.build_model(params, num_classes)
    rnn.trace_cudnn_kernel(model, cudnn_traced)
    training.compile_model(model, params)
    wall, cpu = time.monotonic(), time.process_time()
    model.fit(dataset, validation_data=dataset, epochs=1, verbose=0)
    return {
        'profile': profile,
        'cudnn_traced': cudnn_traced,
        'epoch_seconds': round(time.monotonic() - wall, 1),
        'epoch_cpu_seconds': round(time.process_time() - cpu, 1),
        'load': [round(v, 2) for v in os.getloadavg()],
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: one JSON line per process."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--profile', default='full', choices=profiles.PROFILES)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--child',
                        choices=('standard', 'both'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(first_epoch(args.profile, args.child == 'both')),
              flush=True)
        return 0
    for round_ in range(args.rounds):
        order = ('both', 'standard') if round_ % 2 == 0 else ('standard',
                                                              'both')
        for variant in order:
            subprocess.run([
                sys.executable, '-m', 'bench.rnn_trace', '--profile',
                args.profile, '--child', variant
            ],
                           check=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
