"""3-D convolutions against a per-frame 2-D convnet on the same clips.

    python -m bench.clips [--labels direction,item] [--train-per-class 500]
        [--test-per-class 200] [--epochs 10] [--profile smoke]
        [--seeds 0] [--output bench/results/clips.json]

Moving Fashion-MNIST (bench/moving_clips.py), labelled by direction of
motion and, separately, by item. Both models are the convnet3d family's
`profile` (pipeline/profiles.py: filter widths, dense layer, batch,
learning rate, dropout), built by models/convnet3d/model.py:
- `3d`: 3-D filter banks over frames and space;
- `per_frame`: the image convnet's 2-D blocks on each frame, the frames'
  class scores averaged;
trained on the same clips (z-scored as the family's preprocessing_fn
does), for the same epochs and batch, from the same seed. Measured on the
test clips (items of Fashion-MNIST's test images): accuracy, training
seconds (of a loaded machine: compare within one run) and weights.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from common import environment

environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench import moving_clips  # noqa: E402
from common import settings  # noqa: E402
from formats import clip_formats  # noqa: E402
from models import data_facts  # noqa: E402
from pipeline import profiles  # noqa: E402

CONVOLUTIONS = settings.CLIP_CONVOLUTIONS


def load(root: str, split: str):
    """(clips float32 [n, *shape], labels, class names) of one split."""
    dataset = clip_formats.scan_clip_folders(root)
    files = dataset.files[split]
    clips = np.stack([clip_formats.read_clip(path) for path, _ in files])
    labels = np.array([label for _, label in files])
    return clips, labels, list(dataset.class_names)


def main(argv: Optional[List[str]] = None) -> int:
    """Trains and measures both models per labelling and seed."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--labels', default='direction,item')
    parser.add_argument('--train-per-class', type=int, default=500)
    parser.add_argument('--test-per-class', type=int, default=200)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--profile', default='smoke', choices=profiles.PROFILES)
    parser.add_argument('--seeds', default='0')
    parser.add_argument('--output', default='bench/results/clips.json')
    args = parser.parse_args(argv)
    # TensorFlow loads after the arguments parse.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from models import training  # pylint: disable=import-outside-toplevel
    from models import weights  # pylint: disable=import-outside-toplevel
    from models.convnet3d import model as convnet3d  # pylint: disable=import-outside-toplevel

    params = {
        **settings.family_defaults('convnet3d'),
        **profiles.MODELS['convnet3d'].profiles[args.profile]
    }
    batch = int(params['batch_size'])
    results: Dict[str, Any] = {
        'command':
            ' '.join(['python -m bench.clips'] +
                     (argv if argv is not None else sys.argv[1:])),
        'epochs':
            args.epochs,
        'profile':
            args.profile,
        'load_average_at_start':
            common.load_average(),
        'settings': {
            k: params[k] for k in ('conv_filters', 'dense_units', 'batch_size',
                                  'learning_rate', 'dropout')
        },
        'runs': []
    }
    for label in args.labels.split(','):
        with tempfile.TemporaryDirectory() as folder:
            moving_clips.generate(folder, label, args.train_per_class,
                                  args.test_per_class)
            train, train_labels, class_names = load(folder, 'train')
            test, test_labels, _ = load(folder, 'test')
        # Z-scored per channel over the training clips, as Transform does.
        mean = train.reshape(-1, train.shape[-1]).mean(axis=0)
        std = np.sqrt(train.reshape(-1, train.shape[-1]).var(axis=0) + 1e-6)
        train, test = (train - mean) / std, (test - mean) / std
        for seed in (int(s) for s in args.seeds.split(',')):
            for convolution in CONVOLUTIONS:
                tf.keras.utils.set_random_seed(seed)
                model_params = {
                    **params, 'clip_convolution': convolution,
                    'class_names': class_names,
                    data_facts.CLIP_SHAPE: list(train.shape[1:])
                }
                model = convnet3d.build_model(model_params, len(class_names))
                training.compile_model(model, model_params)
                dataset = tf.data.Dataset.from_tensor_slices(({
                    'clip': train
                }, train_labels))
                started = time.monotonic()
                cpu_started = time.process_time()
                model.fit(dataset.shuffle(len(train_labels),
                                          seed=seed).batch(batch),
                          epochs=args.epochs,
                          verbose=0)
                weights.recalibrate_batch_norm(model, dataset.batch(batch), 100)
                seconds = time.monotonic() - started
                cpu_seconds = time.process_time() - cpu_started
                scores = model.predict({'clip': test},
                                       batch_size=256,
                                       verbose=0)
                run = {
                    'label':
                        label,
                    'classes':
                        len(class_names),
                    'model':
                        convolution,
                    'seed':
                        seed,
                    'train_clips':
                        int(len(train_labels)),
                    'test_clips':
                        int(len(test_labels)),
                    'weights':
                        int(model.count_params()),
                    'train_seconds':
                        round(seconds, 1),
                    'train_cpu_seconds':
                        round(cpu_seconds, 1),
                    'accuracy':
                        round(
                            float(
                                (scores.argmax(axis=1) == test_labels).mean()),
                            4)
                }
                results['runs'].append(run)
                print(json.dumps(run), flush=True)
    results['load_average_at_end'] = common.load_average()
    common.write_results(args.output, results)
    print(format_table(results))
    return 0


def format_table(results: Dict[str, Any]) -> str:
    """Each labelling and model: mean accuracy (range over seeds), time."""
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for run in results['runs']:
        groups.setdefault((run['label'], run['model']), []).append(run)
    lines = [
        '| labels | model | seeds | test accuracy | weights | '
        'training seconds (loaded) | training CPU seconds |',
        '| --- | --- | --- | --- | --- | --- | --- |'
    ]
    for (label, model), runs in groups.items():
        accuracy = [r['accuracy'] for r in runs]
        spread = (f' ({min(accuracy):.4f}-{max(accuracy):.4f})'
                  if len(runs) > 1 else '')
        lines.append(f'| {label} ({runs[0]["classes"]} classes) | {model} | '
                     f'{len(runs)} | {np.mean(accuracy):.4f}{spread} | '
                     f'{runs[0]["weights"]} | '
                     f'{np.mean([r["train_seconds"] for r in runs]):.0f} | '
                     f'{np.mean([r["train_cpu_seconds"] for r in runs]):.0f} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
