"""Ingest in process against Flink and Spark clusters started here.

    python -m bench --only engines [--engine-scales 1,4]
        [--engines local,flink,spark] [--parallelisms 1,2]

ExampleGen + StatisticsGen + Transform of Fashion-MNIST replicated to each
scale (1x: 70k rows, 4x: 280k rows; bench/scaling.py's driver, the
pipeline cut after Transform), once in process (the pipeline's default
Beam runner) and once on each engine at each parallelism: a cluster of
that many TaskManagers or Spark workers (one slot or core each), started
(`pipeline.engines.start`) before its runs and stopped after them, one
cluster at a time. Writes bench/results/engines.json (after every
configuration, so an interrupted bench keeps what it measured) and
engines.png, and prints a table with each configuration's ratio to the
in-process time at the same size.
"""

import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench import common
from bench import scaling
from pipeline import engine_clusters
from pipeline import engines

SCALES = (1.0, 4.0)
PARALLELISMS = (1, 2)


def _say(text: str) -> None:
    print(f'[bench engines {datetime.datetime.now():%H:%M:%S}] {text}',
          file=sys.stderr,
          flush=True)


def configurations(engine_names: Sequence[str],
                   parallelisms: Sequence[int]) -> List[Dict[str, Any]]:
    """(engine, parallelism) pairs to run: `local` once, unparallelized."""
    return [{
        'engine': engine,
        'parallelism': None if engine == 'local' else parallelism
    } for engine in engine_names for parallelism in (
        parallelisms[:1] if engine == 'local' else parallelisms)]


def _name(configuration: Dict[str, Any]) -> str:
    if configuration['engine'] == 'local':
        return 'in process'
    return f'{configuration["engine"]} p{configuration["parallelism"]}'


def run(workdir: Path,
        output: Path,
        scales: Sequence[float] = SCALES,
        engine_names: Sequence[str] = ('local', 'flink', 'spark'),
        parallelisms: Sequence[int] = PARALLELISMS) -> Dict[str, Any]:
    """Runs every configuration at every scale; the results.

    Each configuration's points are bench/scaling.py's (rows, seconds per
    component, rows per second); a configuration that fails is recorded
    with its error and the next one runs.
    """
    output.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Any] = {
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
        'machine': {
            'load_start': common.load_average()
        },
        'scales': list(scales),
        'runs': [],
        'errors': {},
    }
    for configuration in configurations(engine_names, parallelisms):
        name = _name(configuration)
        engine = configuration['engine']
        folder = workdir / name.replace(' ', '-')
        _say(f'{name} ... (load {common.load_average()})')
        try:
            if engine == 'local':
                value = scaling.run_scaling(scales, folder / 'work', (),
                                            scaling.FASHION_MNIST, folder)
            else:
                state_dir = str(folder / 'cluster')
                with engine_clusters.running(
                        engine, state_dir,
                        workers=configuration['parallelism']):
                    value = scaling.run_scaling(
                        scales, folder / 'work',
                        engines.beam_args(engine, state_dir=state_dir),
                        scaling.FASHION_MNIST, folder)
            results['runs'].append({**configuration, 'name': name, **value})
            _say(f'{name} done')
        except Exception as error:  # pylint: disable=broad-except
            results['errors'][name] = f'{type(error).__name__}: {error}'
            _say(f'{name} FAILED: {error}')
        results['machine']['load_now'] = common.load_average()
        (output / 'engines.json').write_text(json.dumps(results, indent=1) +
                                             '\n',
                                             encoding='utf-8')
    results['finished'] = datetime.datetime.now().isoformat(timespec='seconds')
    results['machine']['load_end'] = common.load_average()
    (output / 'engines.json').write_text(json.dumps(results, indent=1) + '\n',
                                         encoding='utf-8')
    plot(results, output / 'engines.png')
    return results


def _ingest_seconds(results: Dict[str, Any]) -> Dict[str, Dict[int, float]]:
    """Per configuration name: total rows -> ingest seconds."""
    return {
        run['name']: {
            point['total_rows']: point['ingest_seconds']
            for point in run['points']
        } for run in results['runs']
    }


def format_table(results: Dict[str, Any]) -> str:
    """Seconds of each component, and the ratio to in process, per size."""
    lines = [
        '| configuration | rows | ExampleGen (s) | StatisticsGen (s) | '
        'Transform (s) | total (s) | rows/s | x in process |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |'
    ]
    local = _ingest_seconds(results).get('in process', {})
    for run_result in results['runs']:
        for point in run_result['points']:
            seconds = point['component_seconds']
            base = local.get(point['total_rows'])
            ratio = (f'{point["ingest_seconds"] / base:.2f}' if base else '-')
            lines.append(f'| {run_result["name"]} | {point["total_rows"]} | '
                         f'{seconds["FileBasedExampleGen"]:.1f} | '
                         f'{seconds["StatisticsGen"]:.1f} | '
                         f'{seconds["Transform"]:.1f} | '
                         f'{point["ingest_seconds"]:.1f} | '
                         f'{point["rows_per_second"]} | {ratio} |')
    for name, error in results['errors'].items():
        lines.append(f'error in {name}: {error[:200]}')
    return '\n'.join(lines)


def plot(results: Dict[str, Any], path: Path) -> None:
    """Each configuration's seconds per component, stacked, per size.

    One bar per configuration and size, labelled with its ratio to the
    in-process run of the same size.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    local = _ingest_seconds(results).get('in process', {})
    bars = [(run_result['name'], point)
            for point_rows in sorted(
                {p['total_rows']
                 for r in results['runs']
                 for p in r['points']})
            for run_result in results['runs']
            for point in run_result['points']
            if point['total_rows'] == point_rows]
    figure, axis = pyplot.subplots(figsize=(max(5, 1.1 * len(bars) + 2), 4.5))
    bottoms = [0.0] * len(bars)
    for component in scaling.TIMED:
        heights = [point['component_seconds'][component] for _, point in bars]
        axis.bar(range(len(bars)), heights, bottom=bottoms, label=component)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for index, (_, point) in enumerate(bars):
        base = local.get(point['total_rows'])
        if base:
            axis.annotate(f'{point["ingest_seconds"] / base:.2f}x',
                          (index, bottoms[index]),
                          ha='center',
                          va='bottom',
                          fontsize=8)
    axis.set_xticks(range(len(bars)))
    axis.set_xticklabels([
        f'{name}\n{point["total_rows"] // 1000}k rows' for name, point in bars
    ],
                         fontsize=8)
    axis.set_ylabel('seconds (ratio to in process above)')
    axis.legend(fontsize=8)
    machine = results['machine']
    axis.set_title(
        f'ExampleGen + StatisticsGen + Transform\nload average at start '
        f'{machine.get("load_start")}, at end {machine.get("load_end")}',
        fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m bench.engines`: `python -m bench --only engines`."""
    import argparse  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(prog='python -m bench.engines',
                                     description=__doc__.split('\n')[0])
    add_flags(parser)
    parser.add_argument('--output', default=str(common.RESULTS_DIR))
    parser.add_argument('--workdir')
    args = parser.parse_args(argv)
    return run_from_flags(args, Path(args.output))


def add_flags(parser) -> None:
    """The engines section's flags."""
    parser.add_argument('--engine-scales',
                        default=','.join(f'{s:g}' for s in SCALES),
                        help='scales of Fashion-MNIST (1: 70k rows) for '
                        '--only engines')
    parser.add_argument('--engines',
                        default='local,flink,spark',
                        help='configurations of --only engines: local (in '
                        'process), flink, spark')
    parser.add_argument('--parallelisms',
                        default=','.join(str(p) for p in PARALLELISMS),
                        help='cluster sizes (TaskManagers or Spark workers) '
                        'of --only engines')


def run_from_flags(args, output: Path) -> int:
    """Runs the engines section from parsed flags; the exit code."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench-engines-'))
    results = run(workdir, output,
                  [float(s) for s in args.engine_scales.split(',') if s],
                  [e for e in args.engines.split(',') if e],
                  [int(p) for p in args.parallelisms.split(',') if p])
    print(format_table(results), flush=True)
    print(
        f'\nreport: {output / "engines.json"}\nplot:   '
        f'{output / "engines.png"}\nlogs:   {workdir}',
        flush=True)
    return 1 if results['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
