"""Ingest, statistics and transform against data size.

    python -m bench.scaling --data DIR --home DIR [--beam-arg=FLAG ...]

The driver (`main`) builds the project's own pipeline
(`pipeline.pipeline.create_pipeline`, the convnet's `full` profile: no
example limit), compiles it, keeps only the nodes up to Transform
(ExampleGen, StatisticsGen, SchemaGen, ExampleValidator, DataGate,
Transform), and runs them with the project's runner loop
(`pipeline.runner.ProgressDagRunner`), which times each component. No model
is trained, so the sizes can grow without the run growing by a training.

`run_scaling` writes Fashion-MNIST replicated to each scale factor (IDX
files, the images and labels repeated or cut; the test split scaled alike)
and runs the driver once per size in a fresh process and home.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from common import environment
from common import names

_STARTED = time.monotonic()

# E402: imported after the start-time mark on purpose, so their import time
# counts.
# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

from bench import common  # noqa: E402

INGEST_NODES = ('FileBasedExampleGen', 'StatisticsGen', 'SchemaGen',
                'ExampleValidator', 'DataGate', 'Transform')
TIMED = ('FileBasedExampleGen', 'StatisticsGen', 'Transform')
FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as an uncompressed IDX file."""
    header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim)
    header += struct.pack(f'>{array.ndim}I', *array.shape)
    with open(path, 'wb') as f:
        f.write(header)
        f.write(np.ascontiguousarray(array, np.uint8).tobytes())


def replicate(array: np.ndarray, count: int) -> np.ndarray:
    """The first `count` rows of `array` repeated as often as needed."""
    repeats = math.ceil(count / len(array))
    return np.concatenate([array] *
                          repeats)[:count] if repeats > 1 else (array[:count])


def write_scaled_idx(source: str, dest: str, scale: float) -> Dict[str, int]:
    """Writes an IDX data set `scale` times the size of the one in `source`.

    Both splits (train and t10k) are scaled; `class_names.txt` keeps the
    class names of the source.

    Returns:
        Rows written per split: {'train': n, 'test': m}.
    """
    # pylint: disable=import-outside-toplevel
    from components.example_gen import data_source
    from formats import image_formats
    os.makedirs(dest, exist_ok=True)
    class_names = data_source.detect(source, names.IMAGES).class_names
    rows = {}
    for split, stem in (('train', 'train'), ('test', 't10k')):
        [images_path] = [
            os.path.join(source, name)
            for name in sorted(os.listdir(source))
            if name.startswith(f'{stem}-images-idx')
        ]
        images, labels = image_formats.read_idx_dataset(
            images_path, image_formats.labels_path_for(images_path),
            len(class_names))
        count = max(1, int(round(len(images) * scale)))
        write_idx(os.path.join(dest, f'{stem}-images-idx3-ubyte'),
                  replicate(images, count))
        write_idx(os.path.join(dest, f'{stem}-labels-idx1-ubyte'),
                  replicate(labels.astype(np.uint8), count))
        rows[split] = count
    with open(os.path.join(dest, names.CLASS_NAMES_FILE), 'w',
              encoding='utf-8') as f:
        f.write('\n'.join(class_names) + '\n')
    return rows


def growth_exponent(sizes: Sequence[float],
                    seconds: Sequence[float]) -> Optional[float]:
    """The exponent k of seconds ~ size^k, smallest to largest size.

    1 is linear growth; below 1, fixed costs still dominate.
    """
    if len(sizes) < 2 or min(seconds) <= 0 or max(sizes) == min(sizes):
        return None
    low, high = int(np.argmin(sizes)), int(np.argmax(sizes))
    return round(
        math.log(seconds[high] / seconds[low]) /
        math.log(sizes[high] / sizes[low]), 3)


def run_scaling(scales: Sequence[float],
                workdir: Path,
                beam_args: Sequence[str] = (),
                source: str = FASHION_MNIST,
                log_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Runs the ingest driver at each scale factor of `source`.

    Args:
        scales: Scale factors of the source's size (1.0 = as it is).
        workdir: Scratch folder for the scaled data and the homes; the
            scaled data is deleted after each run.
        beam_args: Beam flags (default: the pipeline's).
        source: An IDX data set.
        log_dir: Where to keep each run's log.

    Returns:
        Per scale: rows, component seconds, rows per second; and the growth
        exponent of the three components' total time.
    """
    points = []
    for scale in scales:
        data = workdir / f'data-{scale:g}x'
        home = workdir / f'home-{scale:g}x'
        shutil.rmtree(home, ignore_errors=True)
        rows = write_scaled_idx(source, str(data), scale)
        args = [
            '-m', 'bench.scaling', '--data',
            str(data), '--home',
            str(home)
        ] + [f'--beam-arg={a}' for a in beam_args]
        try:
            result = common.run_json(
                args,
                log_path=(log_dir /
                          f'scaling-{scale:g}x.log' if log_dir else None))
        finally:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
        seconds = {
            name: result['component_seconds'].get(name, 0.0) for name in TIMED
        }
        total_rows = rows['train'] + rows['test']
        ingest = sum(seconds.values())
        points.append({
            'scale': scale,
            'rows': rows,
            'total_rows': total_rows,
            'component_seconds': seconds,
            'ingest_seconds': round(ingest, 1),
            'rows_per_second':
                (round(total_rows / ingest, 1) if ingest else None),
            'component_rows_per_second': {
                name: round(total_rows / s, 1) if s else None
                for name, s in seconds.items()
            },
            'driver_wall_seconds': result['wall_seconds'],
            'load_before': result['load_before'],
            'load_after': result['load_after'],
        })
    sizes = [p['total_rows'] for p in points]
    return {
        'method':
            'bench/scaling.py driver: the project pipeline cut after '
            'Transform, run by ProgressDagRunner; seconds are '
            'ExampleGen + StatisticsGen + Transform',
        'beam_args':
            list(beam_args),
        'points':
            points,
        'growth_exponent':
            growth_exponent(sizes, [p['ingest_seconds'] for p in points]),
        'growth_exponent_per_component': {
            name:
                growth_exponent(sizes,
                                [p['component_seconds'][name] for p in points])
            for name in TIMED
        },
    }


def run_ingest(data: str, home: str,
               beam_args: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs the pipeline's nodes up to Transform on `data` in `home`.

    Returns:
        component_seconds of each node run.
    """
    # pylint: disable=import-outside-toplevel
    from tfx.dsl.compiler import compiler

    from pipeline import configs
    from pipeline import pipeline as pipeline_lib
    from pipeline import runner

    config = configs.RunConfig(model='convnet',
                               profile='full',
                               data=data,
                               home=home,
                               beam_args=tuple(beam_args))
    tfx_pipeline = pipeline_lib.create_pipeline(
        config,
        config.data_path,
        metadata_connection_config=runner.metadata_config(config),
        serving_check=False)
    ir = compiler.Compiler().compile(tfx_pipeline)
    kept = [
        node for node in ir.nodes
        if node.pipeline_node.node_info.id in INGEST_NODES
    ]
    del ir.nodes[:]
    ir.nodes.extend(kept)
    dag_runner = runner.ProgressDagRunner(sys.stderr)
    with runner._quiet_logs(False):  # pylint: disable=protected-access
        dag_runner.run_with_ir(ir)
    return {'component_seconds': dag_runner.timings}


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: the ingest driver; prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', required=True)
    parser.add_argument('--home', required=True)
    parser.add_argument('--beam-arg',
                        action='append',
                        default=[],
                        dest='beam_args')
    args = parser.parse_args(argv)
    environment.use_legacy_keras()
    result = run_ingest(args.data, args.home, args.beam_args)
    result['wall_seconds'] = round(time.monotonic() - _STARTED, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
