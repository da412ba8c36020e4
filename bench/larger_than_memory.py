"""Peak memory of a pipeline run against the size of its data.

    python -m bench.larger_than_memory [--scales 0.25,1]
        [--budgets-mb 1,4096] [--data-limit-mb N] [--engine flink|spark]
        [--run-arg=...]

For each scale of Fashion-MNIST (1: 70k rows, bench/scaling.py's scaled IDX
set) and each Trainer memory budget (`--set cache_memory_mb`), one
`python -m pipeline run --model convnet` of one epoch over all the rows
(the smoke model, `max_examples_per_split=0`): its process tree's
resident memory is sampled (from /proc) while it runs, and each sample
attributed to the component running then (the run's progress lines). With
`--data-limit-mb` every run gets that hard cap on its data segment
(RLIMIT_DATA: heap and private anonymous memory, the kernel refuses more)
instead of sampling alone. With `--engine` each run's Beam steps go to a
local cluster of that engine started for the run alone (`--beam-engine`),
whose processes (JVMs, job server, SDK worker pool and its workers) are
sampled apart from the run's. Writes bench/results/larger_than_memory.json
(`larger_than_memory-<engine>.json` with `--engine`) and prints a table:
data sizes (IDX bytes, ExampleGen's output bytes, the training split's
parsed size as the Trainer estimates it), whether the Trainer cached or
streamed it, and peak RSS per component.
"""

import contextlib
import datetime
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from bench import common
from bench import scaling
from pipeline import engine_clusters
from pipeline import engines

SCALES = (0.5, 0.125)
BUDGETS_MB = (1.0, 4096.0)
SAMPLE_SECONDS = 0.2
_PAGE = os.sysconf('SC_PAGE_SIZE')
_STARTED_LINE = re.compile(r'^\[[\d:]+\] (\S+) \.\.\.$')


def _say(text: str) -> None:
    print(f'[bench memory {datetime.datetime.now():%H:%M:%S}] {text}',
          file=sys.stderr,
          flush=True)


def _children() -> Dict[int, List[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: Dict[int, List[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', encoding='utf-8') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tree_rss_bytes(*pids: int,
                   tree: Optional[Dict[int, List[int]]] = None) -> int:
    """Resident bytes of `pids` and all their descendants.

    `tree`: parent pid -> child pids, if already read from /proc.
    """
    tree, total, todo = tree or _children(), 0, list(pids)
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        try:
            with open(f'/proc/{current}/statm', encoding='utf-8') as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob('*') if f.is_file())


def measured_run(
    command: Sequence[str],
    log_path: Path,
    data_limit_mb: Optional[float],
    engine_pids: Sequence[int] = ()
) -> Dict[str, Any]:
    """Runs `python -m pipeline ...`, sampling its tree's RSS.

    Returns the exit code, the peak RSS (MiB) overall and per component,
    the same for the trees of `engine_pids` (a cluster's processes), the
    wall seconds and the run's JSON line (if any).
    """

    def limit() -> None:
        if data_limit_mb:
            cap = int(data_limit_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    peaks: Dict[str, int] = {}
    engine_peaks: Dict[str, int] = {}
    component = ['(start-up)']
    started = time.monotonic()
    with open(log_path, 'w', encoding='utf-8') as log:
        process = subprocess.Popen(
            [common.python(), '-m', 'pipeline', *command],
            cwd=common.REPO_ROOT,
            env={
                **os.environ,
                **common.CHILD_ENV
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit)  # pylint: disable=subprocess-popen-preexec-fn
        stdout: List[str] = []
        readers = [
            threading.Thread(target=lambda: stdout.extend(process.stdout),
                             daemon=True),
            threading.Thread(target=_follow,
                             args=(process.stderr, log, component),
                             daemon=True)
        ]
        for reader in readers:
            reader.start()
        try:
            while process.poll() is None:
                now, tree = component[0], _children()  # One /proc scan.
                peaks[now] = max(peaks.get(now, 0),
                                 tree_rss_bytes(process.pid, tree=tree))
                if engine_pids:
                    engine_peaks[now] = max(
                        engine_peaks.get(now, 0),
                        tree_rss_bytes(*engine_pids, tree=tree))
                time.sleep(SAMPLE_SECONDS)
        except BaseException:
            process.terminate()  # The run cancels its engine jobs.
            process.wait()
            raise
        for reader in readers:
            reader.join()
    try:
        summary = common.last_json_line(''.join(stdout))
    except ValueError:
        summary = {}
    return {
        'returncode': process.returncode,
        'wall_seconds': round(time.monotonic() - started, 1),
        **_peaks_mib('', peaks),
        **_peaks_mib('engine_', engine_peaks),
        'summary': summary,
    }


def _peaks_mib(prefix: str, peaks: Dict[str, int]) -> Dict[str, Any]:
    """The overall and per-component peaks of `peaks`, in MiB."""
    mib = 2**20
    return {
        f'{prefix}peak_rss_mib': round(max(peaks.values(), default=0) / mib, 1),
        f'component_{prefix}peak_rss_mib': {
            name: round(value / mib, 1) for name, value in peaks.items()
        },
    }


def _follow(stream, log, component: List[str]) -> None:
    """Copies the run's stderr to `log`, noting the component running."""
    for line in stream:
        log.write(line)
        log.flush()
        match = _STARTED_LINE.match(line.strip())
        if match:
            component[0] = match.group(1)


def _training_report(home: Path) -> Dict[str, Any]:
    import json  # pylint: disable=import-outside-toplevel
    reports = sorted(
        home.glob('pipelines/*/Trainer/model_run/*/'
                  'training.json'))
    if not reports:
        return {}
    return json.loads(reports[-1].read_text(encoding='utf-8'))


@contextlib.contextmanager
def _cluster(engine: Optional[str], state_dir: Path,
             workers: int) -> Iterator[Tuple[List[str], List[int]]]:
    """A run's flags for a fresh local `engine` cluster, and its pids.

    A cluster of its own for each run, so that one run's JVM heaps do not
    count in the next one's peak. No engine: no flags, no pids.
    """
    if not engine:
        yield [], []
        return
    with engine_clusters.running(engine, str(state_dir),
                                 workers=workers) as state:
        yield (['--beam-engine', engine, '--engine-state-dir',
                str(state_dir)], list(state['pids'].values()))


def run(
    workdir: Path,
    output: Path,
    scales: Sequence[float] = SCALES,
    budgets_mb: Sequence[float] = BUDGETS_MB,
    data_limit_mb: Optional[float] = None,
    extra_args: Sequence[str] = (),
    engine: Optional[str] = None,
    workers: int = engines.WORKERS,
) -> Dict[str, Any]:
    """Every (scale, budget) run; the results, also written as JSON."""
    results: Dict[str, Any] = {
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
        'load_start': common.load_average(),
        'data_limit_mb': data_limit_mb,
        'extra_args': list(extra_args),
        'engine': engine,
        'workers': workers if engine else None,
        'runs': [],
    }
    for scale in scales:
        data = workdir / f'data-{scale:g}'
        rows = scaling.write_scaled_idx(scaling.FASHION_MNIST, str(data), scale)
        for budget in budgets_mb:
            home = workdir / f'home-{scale:g}-{budget:g}'
            _say(f'scale {scale:g} ({rows}) budget {budget:g} MiB ... '
                 f'(load {common.load_average()})')
            with _cluster(engine, workdir / f'cluster-{scale:g}-{budget:g}',
                          workers) as (engine_args, engine_pids):
                measured = measured_run([
                    'run', '--model', 'convnet', '--data',
                    str(data), '--home',
                    str(home), '--set', 'min_train_steps=0', '--set',
                    'epochs=1', '--set', f'cache_memory_mb={budget:g}', '--set',
                    'max_examples_per_split=0', *engine_args, *extra_args
                ], workdir / f'run-{scale:g}-{budget:g}.log', data_limit_mb,
                                        engine_pids)
            training = _training_report(home)
            examples = list(home.glob('pipelines/*/*ExampleGen/examples'))
            results['runs'].append({
                'scale': scale,
                'rows': rows,
                'budget_mb': budget,
                'idx_bytes': _folder_bytes(data),
                'examples_bytes': _folder_bytes(examples[0]) if examples else 0,
                'split_bytes_in_memory': training.get('split_bytes_in_memory'),
                'cached_splits': training.get('cached_splits'),
                'cache_budget_bytes': training.get('cache_budget_bytes'),
                'pushed': bool(measured['summary'].get('pushed_model')),
                **measured,
            })
            _say(f'exit {measured["returncode"]}, peak RSS '
                 f'{measured["peak_rss_mib"]} MiB')
            results['load_end'] = common.load_average()
            common.write_results(str(output / results_name(engine)), results)
    return results


def results_name(engine: Optional[str]) -> str:
    """The results file of runs in process or on `engine`."""
    return f'larger_than_memory{"-" + engine if engine else ""}.json'


def format_table(results: Dict[str, Any]) -> str:
    """One row a run: data sizes, the Trainer's choice, peak RSS."""
    mib = 2**20
    on_engine = bool(results.get('engine'))
    lines = [
        '| rows | IDX (MiB) | examples (MiB) | train split parsed (MiB) | '
        'budget (MiB) | train split | exit | pushed | peak RSS (MiB) | '
        'peak in Beam steps (MiB) | peak in Trainer (MiB) |' +
        (' engine cluster\'s peak (MiB) |' if on_engine else ''),
        '| ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | '
        '---: |' + (' ---: |' if on_engine else '')
    ]
    beam = ('FileBasedExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
    for item in results['runs']:
        peaks = item['component_peak_rss_mib']
        engine_peak = (f' {item.get("engine_peak_rss_mib", 0):.0f} |'
                       if on_engine else '')
        parsed = (item['split_bytes_in_memory'] or {}).get('train')
        cached = (item['cached_splits'] or {}).get('train')
        lines.append(
            f'| {sum(item["rows"].values())} | {item["idx_bytes"] / mib:.0f} | '
            f'{item["examples_bytes"] / mib:.0f} | '
            f'{parsed / mib if parsed else 0:.0f} | {item["budget_mb"]:g} | '
            f'{"-" if cached is None else ("cached" if cached else "streamed")}'
            f' | {item["returncode"]} | {"yes" if item["pushed"] else "no"} | '
            f'{item["peak_rss_mib"]:.0f} | '
            f'{max((peaks.get(n, 0) for n in beam), default=0):.0f} | '
            f'{peaks.get("Trainer", 0):.0f} |{engine_peak}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m bench.larger_than_memory`."""
    import argparse  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(prog='python -m bench.larger_than_memory',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--scales',
                        default=','.join(f'{s:g}' for s in SCALES),
                        help='scales of Fashion-MNIST (1: 70k rows)')
    parser.add_argument('--budgets-mb',
                        default=','.join(f'{b:g}' for b in BUDGETS_MB),
                        help='Trainer memory budgets (cache_memory_mb)')
    parser.add_argument('--data-limit-mb',
                        type=float,
                        help='RLIMIT_DATA of every run, MiB')
    parser.add_argument('--engine',
                        choices=engines.CLUSTER_ENGINES,
                        help='each run\'s Beam steps on a local cluster of '
                        'this engine, started for it (default: in process)')
    parser.add_argument('--workers',
                        type=int,
                        default=engines.WORKERS,
                        help='the cluster\'s TaskManagers or Spark workers')
    parser.add_argument(
        '--run-arg',
        action='append',
        default=[],
        help='passed to each run (e.g. --run-arg=--set=epochs=2)')
    parser.add_argument('--output', default=str(common.RESULTS_DIR))
    parser.add_argument('--workdir')
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench-memory-'))
    workdir.mkdir(parents=True, exist_ok=True)
    results = run(workdir, Path(args.output),
                  [float(s) for s in args.scales.split(',') if s],
                  [float(b) for b in args.budgets_mb.split(',') if b],
                  args.data_limit_mb, args.run_arg, args.engine, args.workers)
    print(format_table(results), flush=True)
    print(
        f'\nreport: {Path(args.output) / results_name(args.engine)}\n'
        f'logs:   {workdir}',
        flush=True)
    return 0 if all(r['returncode'] == 0 for r in results['runs']) else 1


if __name__ == '__main__':
    sys.exit(main())
