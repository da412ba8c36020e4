"""Moving Fashion-MNIST: a small clip set, generated offline in seconds.

    python -m bench.moving_clips [--output DIR] [--label direction|item]
        [--train-per-class 500] [--test-per-class 200] [--seed 0]

Each clip is one Fashion-MNIST item (Debian's dataset-fashion-mnist,
`make data`; nothing downloads), shrunk to 14x14, moving one pixel a
frame in a straight line across a black 32x32 canvas for ten frames:
right, left, down or up, from a random start (so no single frame tells
the direction). Labelled by its direction of motion (`direction`, four
classes: only motion tells them apart) or by its item (`item`, the ten
Fashion-MNIST classes: one frame tells). Training clips take items of
Fashion-MNIST's training images, test clips of its test images.

Written as the clip family reads them (formats/clip_formats.py):
`<output>/{train,test}/<class>/<n>.npy`, uint8 [10, 32, 32]. The default
output is the convnet3d family's default data (common/names.py
MOVING_CLIPS_DIR), for `--label direction`.
"""

import argparse
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from common import names
from formats import image_formats

FRAMES = 10
CANVAS = 32
ITEM = 14
SPEED = 1  # Pixels a frame.
# Direction -> (rows, columns) moved per frame.
DIRECTIONS: Dict[str, Tuple[int, int]] = {
    'right': (0, 1),
    'left': (0, -1),
    'down': (1, 0),
    'up': (-1, 0),
}
LABELS = ('direction', 'item')


def item_class_names() -> List[str]:
    """Fashion-MNIST's class names as folder names ('T-shirt-top', ...)."""
    return [
        n.replace('/', '-') for n in image_formats.FASHION_MNIST_CLASS_NAMES
    ]


def load_items(prefix: str) -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's `prefix` images shrunk to ITEM x ITEM, and labels."""
    path = os.path.join(names.FASHION_MNIST_DIR,
                        f'{prefix}-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        path, image_formats.labels_path_for(path), 10)
    shrunk = images.reshape(-1, ITEM, 2, ITEM,
                            2).astype(np.float32).mean(axis=(2, 4))
    return np.round(shrunk).astype(np.uint8), labels


def moving_clip(item: np.ndarray, direction: str,
                rng: np.random.Generator) -> np.ndarray:
    """uint8 [FRAMES, CANVAS, CANVAS]: `item` moving in `direction`."""
    room = CANVAS - ITEM
    travel = SPEED * (FRAMES - 1)
    step = np.array(DIRECTIONS[direction])
    start = rng.integers(0, room + 1, size=2)
    for axis in range(2):
        if step[axis] > 0:
            start[axis] = rng.integers(0, room - travel + 1)
        elif step[axis] < 0:
            start[axis] = rng.integers(travel, room + 1)
    clip = np.zeros((FRAMES, CANVAS, CANVAS), np.uint8)
    for frame in range(FRAMES):
        row, column = start + SPEED * frame * step
        clip[frame, row:row + ITEM, column:column + ITEM] = item
    return clip


def write_split(folder: str, items: np.ndarray, item_labels: np.ndarray,
                label: str, per_class: int, rng: np.random.Generator) -> int:
    """`per_class` clips of each class under `folder`; returns how many."""
    directions = list(DIRECTIONS)
    classes = directions if label == 'direction' else item_class_names()
    count = 0
    for index, name in enumerate(classes):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for n in range(per_class):
            if label == 'direction':
                item = items[rng.integers(len(items))]
                direction = name
            else:
                pool = np.flatnonzero(item_labels == index)
                item = items[rng.choice(pool)]
                direction = directions[rng.integers(len(directions))]
            np.save(os.path.join(folder, name, f'{n}.npy'),
                    moving_clip(item, direction, rng))
            count += 1
    return count


def generate(output: str,
             label: str = 'direction',
             train_per_class: int = 500,
             test_per_class: int = 200,
             seed: int = 0) -> Dict[str, int]:
    """Writes the clip set to `output` (replacing it); split -> clips."""
    if label not in LABELS:
        raise ValueError(f'label {label!r}: expected one of {LABELS}')
    output = os.path.expanduser(output)
    if os.path.exists(output):
        shutil.rmtree(output)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, prefix, per_class in (('train', 'train', train_per_class),
                                     ('test', 't10k', test_per_class)):
        items, item_labels = load_items(prefix)
        counts[split] = write_split(os.path.join(output, split), items,
                                    item_labels, label, per_class, rng)
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    """Writes the clip set; prints where and how many clips."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default=names.MOVING_CLIPS_DIR)
    parser.add_argument('--label', default='direction', choices=LABELS)
    parser.add_argument('--train-per-class', type=int, default=500)
    parser.add_argument('--test-per-class', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.output, args.label, args.train_per_class,
                      args.test_per_class, args.seed)
    print(f'{os.path.expanduser(args.output)}: {counts["train"]} training and '
          f'{counts["test"]} test clips of {FRAMES}x{CANVAS}x{CANVAS}, '
          f'labelled by {args.label}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
