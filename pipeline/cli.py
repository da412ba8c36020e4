"""The command line: `python -m pipeline run|compile|submit|schedule`.

    python -m pipeline run --model convnet [--profile smoke|full] [--data PATH]
        [--home DIR] [--strategy auto|mirrored|one_device|multi_worker]
    python -m pipeline compile --model convnet --target kubeflow --output FILE

`run` prints each component as it starts and ends, then one JSON line: model,
profile, blessed, pushed_model, accuracy, wall_seconds (and more).
Bad input data ends the run with exit code 2 and a one-line error naming the
file (or feature) and what is wrong.
"""

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, List, Optional, Tuple

_STARTED = time.monotonic()  # Before TFX's imports, which take seconds.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# google-cloud libraries that TFX imports warn about Python 3.10 at import.
warnings.filterwarnings('ignore', category=FutureWarning)

from components.errors import DataValidationError  # pylint: disable=wrong-import-position
from components.errors import InputDataError  # pylint: disable=wrong-import-position
from pipeline import configs  # pylint: disable=wrong-import-position

EXIT_BAD_DATA = 2
_STRATEGIES = ('auto', 'mirrored', 'one_device', 'multi_worker')


def _override(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition('=')
    if not sep:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_run_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', required=True, choices=sorted(configs.MODELS))
    parser.add_argument('--profile', default='smoke', choices=configs.PROFILES)
    parser.add_argument('--data', help='raw data: a folder, file or .ts prefix '
                        '(default: the model\'s public data set)')
    parser.add_argument('--home', default=configs.DEFAULT_HOME,
                        help='folder for metadata, artifacts and serving/')
    parser.add_argument('--strategy', choices=_STRATEGIES,
                        help='tf.distribute strategy (default: auto)')
    parser.add_argument('--beam-arg', action='append', default=[],
                        dest='beam_args', metavar='FLAG',
                        help='a Beam pipeline argument, e.g. '
                        '--beam-arg=--runner=FlinkRunner (repeatable)')
    parser.add_argument('--set', action='append', default=[], type=_override,
                        dest='overrides', metavar='KEY=VALUE',
                        help='override a hyper-parameter, e.g. --set epochs=3')


def _run_config(args: argparse.Namespace) -> configs.RunConfig:
    return configs.RunConfig(
        model=args.model, profile=args.profile, data=args.data,
        home=args.home, strategy=args.strategy,
        beam_args=tuple(args.beam_args), overrides=tuple(args.overrides),
        **{k: v for k, v in (
            ('kubeflow_image', getattr(args, 'image', None)),
            ('kubeflow_root', getattr(args, 'pipeline_root', None)),
            ('kubeflow_data', getattr(args, 'cluster_data', None))) if v})


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog='python -m pipeline',
                                     description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)

    run = commands.add_parser('run', help='run the pipeline locally')
    _add_run_config_flags(run)
    run.add_argument('--no-serving-check', action='store_true',
                     help='push without checking the model in a server')
    run.add_argument('--verbose', action='store_true',
                     help='show TFX and Beam logs')

    compile_ = commands.add_parser('compile', help='compile for Kubeflow')
    _add_run_config_flags(compile_)
    _add_kubeflow_flags(compile_)
    compile_.add_argument('--output', required=True,
                          help='the PipelineJob JSON file to write')
    return parser


def _add_kubeflow_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--target', default='kubeflow', choices=['kubeflow'])
    parser.add_argument('--image', help='container image of the components '
                        f'(default: {configs.DEFAULT_IMAGE})')
    parser.add_argument('--pipeline-root', help='pipeline root on the cluster')
    parser.add_argument('--cluster-data', help='the data path as the cluster '
                        'sees it (default: --data)')


def _data_error(error: BaseException) -> Optional[BaseException]:
    """The InputDataError or DataValidationError behind `error`, if any.

    Errors raised inside Beam workers or TFX launchers arrive wrapped; the
    cause chain, or failing that the message, still carries ours.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (InputDataError, DataValidationError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'run':
            from pipeline import runner  # pylint: disable=import-outside-toplevel
            result = runner.run_local(_run_config(args), verbose=args.verbose,
                                      serving_check=not args.no_serving_check,
                                      started=_STARTED)
            print(json.dumps(result), flush=True)
        elif args.command == 'compile':
            from pipeline import runner  # pylint: disable=import-outside-toplevel
            path = runner.compile_kubeflow(_run_config(args), args.output)
            print(json.dumps({'compiled': os.path.abspath(path)}), flush=True)
    except Exception as error:  # pylint: disable=broad-except
        data_error = _data_error(error)
        if data_error is None:
            raise
        print(f'error: {data_error}', file=sys.stderr, flush=True)
        return EXIT_BAD_DATA
    return 0
