"""`python -m bench [--quick]`: what the pipeline's machinery costs.

Measures, in one run and side by side:
1. the whole pipeline (`python -m pipeline run` in a fresh home), per
   component, for the convnet and the RNN (`full` profile; `smoke` with
   --quick), and in a full run also both `smoke` pipelines end to end;
2. the same job by hand (bench/by_hand.py: numpy, the same model, epochs
   and batch size), and the ratio pipeline wall / by-hand wall;
3. the Trainer's throughput through its own input function against Keras
   on numpy arrays (bench/throughput.py);
4. ExampleGen + StatisticsGen + Transform at 1x, 2x, 4x Fashion-MNIST
   (0.05x, 0.1x, 0.2x with --quick) (bench/scaling.py);
5. the model server (bench/serving_bench.py, when present).
`--only engines` (never by default: about an hour) measures 4. in process
against Flink and Spark clusters started here (bench/engines.py).
Writes bench/results/report.json and report.png and prints a table.
Benchmarks report numbers; nothing here asserts a timing.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench import common
from bench import engines as engines_bench
from bench import pipeline_runs
from bench import report
from bench import scaling
from pipeline import beam_runners
from pipeline import setting_checks

MODELS = ('convnet', 'rnn')
SECTIONS = ('pipeline', 'smoke', 'throughput', 'scaling', 'serving')
# Sections run only when named in --only.
NAMED_SECTIONS = ('engines',)
QUICK_SCALES = (0.05, 0.1, 0.2)
FULL_SCALES = (1.0, 2.0, 4.0)


def _say(text: str) -> None:
    print(f'[bench {datetime.datetime.now():%H:%M:%S}] {text}',
          file=sys.stderr,
          flush=True)


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'],
                              capture_output=True,
                              text=True,
                              check=False).stdout.strip()
    except OSError:
        return ''


def trained_epochs_flag(run: Optional[Dict[str, Any]]) -> List[str]:
    """`--epochs N` for a by-hand twin: the epochs the run's Trainer trained.

    Its schedule's, up to early stopping, so that both do the same job.
    """
    epochs = common.trained_epochs(run)
    return [f'--epochs={epochs}'] if epochs else []


class Bench:
    """One benchmark run: its settings, work folder and results."""

    def __init__(self,
                 quick: bool,
                 workdir: Path,
                 beam_args: List[str],
                 models: List[str],
                 overrides: Sequence[str] = ()):
        self.quick = quick
        # KEY=VALUE settings for section 1's pipelines and their by-hand
        # twins alike (e.g. epochs=3 for a shorter comparison).
        self.overrides = list(overrides)
        self.profile = 'smoke' if quick else 'full'
        self.workdir = workdir
        self.logs = workdir / 'logs'
        self.logs.mkdir(parents=True, exist_ok=True)
        self.beam_args = beam_args
        self.models = models
        self.results: Dict[str, Any] = {
            'mode': 'quick' if quick else 'full',
            'profile': self.profile,
            'started': datetime.datetime.now().isoformat(timespec='seconds'),
            'machine': {
                'cpus': os.cpu_count(),
                'load_start': common.load_average(),
                'uptime_start': _uptime()
            },
            'beam_args': beam_args or beam_runners.default_beam_args(),
            'overrides': list(overrides),
            'pipeline': {},
            'by_hand': {},
            'ratios': {},
            'cpu_ratios': {},
            'smoke': {},
            'reruns': {},
            'throughput': {},
            'errors': {},
        }

    def section(self, name: str, function, *args) -> Any:
        """Runs one measurement; a failure is recorded, not raised."""
        _say(f'{name} ... (load {common.load_average()})')
        try:
            value = function(*args)
            _say(f'{name} done')
            return value
        except Exception:  # pylint: disable=broad-except
            self.results['errors'][name] = traceback.format_exc()
            _say(f'{name} FAILED:\n{traceback.format_exc()[-1500:]}')
            return None

    def home(self, model: str, profile: str) -> Path:
        return self.workdir / f'home-{model}-{profile}'

    def pipeline_and_by_hand(self) -> None:
        """Sections 1 and 2: each model's pipeline, then its by-hand twin."""
        for model in self.models:
            run = self.section(
                f'pipeline {model} {self.profile}',
                pipeline_runs.run_pipeline, model, self.profile,
                self.home(model, self.profile), None, self.beam_args,
                [setting_checks.parse_setting(item) for item in self.overrides],
                self.logs / f'pipeline-{model}.log')
            if run:
                self.results['pipeline'][model] = run
                if self.quick:
                    self.results['smoke'][model] = run
            hand = self.section(
                f'by hand {model} {self.profile}', common.run_json, [
                    '-m', 'bench.by_hand', '--model', model, '--profile',
                    self.profile, *[f'--set={item}' for item in self.overrides],
                    *trained_epochs_flag(run)
                ], self.logs / f'by-hand-{model}.log')
            if hand:
                self.results['by_hand'][model] = hand
            if run and hand:
                self.results['ratios'][model] = round(
                    run['wall_seconds'] / hand['wall_seconds'], 3)
                # Less swayed than wall time by other load on the machine.
                self.results['cpu_ratios'][model] = round(
                    run['cpu_seconds'] / hand['cpu_seconds'], 3)

    def smoke(self) -> None:
        """The smoke profile end to end, then two reruns in its home.

        A full run measures the smoke profile apart. Of the reruns, the
        first evaluates the model against the one the first run pushed, the
        second takes every component from the cache.
        """
        for model in self.models:
            home = self.home(model, 'smoke')
            run = self.section(f'pipeline {model} smoke',
                               pipeline_runs.run_pipeline, model, 'smoke', home,
                               None, self.beam_args, (),
                               self.logs / f'smoke-{model}.log')
            if not run:
                continue
            self.results['smoke'][model] = run
            walls = []
            for rerun in (1, 2):
                again = self.section(f'pipeline {model} smoke, rerun {rerun}',
                                     pipeline_runs.run_pipeline, model, 'smoke',
                                     home, None, self.beam_args, (),
                                     self.logs / f'smoke-{model}-{rerun}.log',
                                     False)
                walls.append(again and again['wall_seconds'])
            self.results['reruns'][model] = {
                'first_wall_seconds': walls[0],
                'cached_wall_seconds': walls[1]
            }

    def throughput(self) -> None:
        """Section 3, on the Transform outputs section 1 left."""
        for model in self.models:
            home = self.home(model, self.profile)
            if not home.exists():
                self.results['throughput'][model] = 'no pipeline home'
                continue
            rounds = 5 if self.quick or model == 'rnn' else 3
            value = self.section(f'throughput {model}', common.run_json, [
                '-m', 'bench.throughput', '--model', model, '--home',
                str(home), '--profile', self.profile, '--rounds',
                str(rounds)
            ], self.logs / f'throughput-{model}.log')
            if value:
                self.results['throughput'][model] = value

    def scaling(self) -> None:
        """Section 4."""
        scales = QUICK_SCALES if self.quick else FULL_SCALES
        value = self.section('scaling', scaling.run_scaling, scales,
                             self.workdir / 'scaling', self.beam_args,
                             scaling.FASHION_MNIST, self.logs)
        if value:
            self.results['scaling'] = value

    def serving(self) -> None:
        """Section 5: the serving benchmark, if its module exists."""
        try:
            from bench import serving_bench  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            self.results['serving'] = {
                'status': 'not available',
                'reason': str(error)
            }
            return
        pushed = (self.results['pipeline'].get('convnet') or
                  {}).get('pushed_model')
        base_path = os.path.dirname(pushed) if pushed else None
        value = self.section('serving', serving_bench.run, self.quick,
                             base_path)
        if value:
            value.setdefault('model_base_path', base_path or 'built-in')
            self.results['serving'] = value
        from bench import serving_front_end  # pylint: disable=import-outside-toplevel
        front_end = self.section('serving front end', serving_front_end.run,
                                 self.quick)
        if front_end:
            self.results.setdefault('serving', {})['front_end'] = front_end
            _say(serving_front_end.format_table(front_end))

    def run(self, sections: List[str]) -> Dict[str, Any]:
        """Runs the chosen sections in order and returns the results."""
        if 'smoke' in sections and not self.quick:
            self.smoke()
        if 'pipeline' in sections:
            self.pipeline_and_by_hand()
        if 'throughput' in sections:
            self.throughput()
        if 'scaling' in sections:
            self.scaling()
        if 'serving' in sections:
            self.serving()
        machine = self.results['machine']
        machine['load_end'] = common.load_average()
        machine['uptime_end'] = _uptime()
        self.results['finished'] = datetime.datetime.now().isoformat(
            timespec='seconds')
        return self.results


def main(argv: Optional[List[str]] = None) -> int:
    """Command line; returns the exit code (1 if a section failed)."""
    parser = argparse.ArgumentParser(prog='python -m bench',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--quick',
                        action='store_true',
                        help='smoke profile, 0.05x-0.2x scales: minutes')
    parser.add_argument('--only',
                        default=','.join(SECTIONS),
                        help=f'comma-separated sections of {SECTIONS}, '
                        f'or of {NAMED_SECTIONS}')
    parser.add_argument('--models', default=','.join(MODELS))
    parser.add_argument('--beam-arg',
                        action='append',
                        default=[],
                        dest='beam_args',
                        metavar='FLAG',
                        help='Beam flag for the pipeline runs (default: '
                        "the pipeline's own)")
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        dest='overrides',
                        metavar='KEY=VALUE',
                        help='a setting for the pipeline runs and their '
                        'by-hand twins alike, e.g. epochs=3')
    parser.add_argument('--workdir',
                        help='scratch folder (default: a '
                        'temporary one, deleted unless a section fails)')
    parser.add_argument('--output',
                        default=str(common.RESULTS_DIR),
                        help='folder for report.json and report.png')
    engines_bench.add_flags(parser)
    args = parser.parse_args(argv)
    sections = [s for s in args.only.split(',') if s]
    unknown = set(sections) - set(SECTIONS) - set(NAMED_SECTIONS)
    if unknown:
        parser.error(f'unknown sections {sorted(unknown)}')
    if 'engines' in sections:
        sections.remove('engines')
        failed = engines_bench.run_from_flags(args, Path(args.output))
        if not sections:
            return failed

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench-'))
    bench = Bench(args.quick, workdir, args.beam_args,
                  [m for m in args.models.split(',') if m], args.overrides)
    _say(f'work folder {workdir}; {bench.results["machine"]["uptime_start"]}')
    results = bench.run(sections)
    json_path, png_path = report.write_report(results, Path(args.output))
    print(report.format_table(results), flush=True)
    print(f'\nreport: {json_path}\nplot:   {png_path}', flush=True)
    if results['errors']:
        print(f'logs kept in {bench.logs}', flush=True)
        return 1
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
