"""The command line: `python -m pipeline run|compile|submit|schedule`.

    python -m pipeline run --model convnet [--profile smoke|full] [--data PATH]
        [--home DIR] [--strategy auto|mirrored|one_device|multi_worker|
                                 parameter_server]
    python -m pipeline compile --model convnet --target kubeflow --output FILE
        --pipeline-root URI [--image IMAGE] [--data URI]
                                             (URIs as pods see them)
    python -m pipeline schedule --model M [--cron "EXPR"] [--on-new-data]
        [--max-runs N]                       (runs locally, one at a time)
    python -m pipeline run-compiled FILE [--home DIR]   (the job, task by task)
    python -m pipeline runs [--home DIR] [--model M]   (past runs, from MLMD)
    python -m pipeline show RUN [--home DIR]   (one run: components, artifacts)
    python -m pipeline add-class --model-dir DIR --name NAME --images DIR
                                   (a class for an embedding model, by
                                    reference images: a new version)
    python -m pipeline submit --model M --target kubeflow --host URL
    python -m pipeline schedule --model M --target kubeflow --host URL
        --cron "EXPR"
    python -m pipeline engine start|stop flink|spark   (a local cluster for
                                   --beam-engine flink|spark: docs/engines.md)

`run` prints each component as it starts and ends, then one JSON line: model,
profile, blessed, pushed_model, accuracy, wall_seconds (and more).
Bad input data ends the run with exit code 2 and a one-line error naming the
file (or feature) and what is wrong.
"""

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import warnings
from typing import Any, Iterator, List, Optional, Tuple

from common import environment

_STARTED = time.monotonic()  # Before TFX's imports, which take seconds.
environment.use_legacy_keras()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# oneDNN's kernels, which TensorFlow turns on by itself only on CPUs with
# AVX-512 VNNI or newer: the convnet's step takes a third less CPU time here
# (docs/results/performance.md). Set to 0 for TensorFlow's own kernels.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# google-cloud libraries that TFX imports warn about Python 3.10 at import.
warnings.filterwarnings('ignore', category=FutureWarning)

# E402: these imports load TFX/TensorFlow, so they must follow the timer and
# the environment set-up above.
# pylint: disable=wrong-import-position
from common import arguments  # noqa: E402
from common import cluster  # noqa: E402
from common import settings  # noqa: E402
from components.errors import DataValidationError  # noqa: E402
from components.example_gen import data_source  # noqa: E402
from formats import class_groups  # noqa: E402
from formats import image_formats  # noqa: E402
from formats.errors import InputDataError  # noqa: E402
from models import saved_model_dirs  # noqa: E402
from pipeline import beam_runners  # noqa: E402
from pipeline import configs  # noqa: E402
from pipeline import engine_clusters  # noqa: E402
from pipeline import engine_jobs  # noqa: E402
from pipeline import engines  # noqa: E402
from pipeline import profiles  # noqa: E402
from pipeline import setting_checks  # noqa: E402

EXIT_BAD_DATA = 2
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _override(text: str) -> Tuple[str, Any]:
    try:
        return setting_checks.parse_setting(text)
    except setting_checks.SettingError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _add_run_config_flags(parser: argparse.ArgumentParser,
                          model_required: bool = True) -> None:
    parser.add_argument('--model',
                        required=model_required,
                        choices=sorted(profiles.MODELS),
                        help='the model family to train')
    parser.add_argument('--profile',
                        default='smoke',
                        choices=profiles.PROFILES,
                        help='data size and hyper-parameters: smoke (minutes)'
                        ' or full (default smoke)')
    parser.add_argument('--data',
                        help='raw data: a folder, file or .ts prefix '
                        '(default: the model\'s public data set)')
    parser.add_argument('--home',
                        default=configs.DEFAULT_HOME,
                        help='folder for metadata, artifacts and serving/ '
                        f'(default {configs.DEFAULT_HOME})')
    parser.add_argument('--strategy',
                        choices=settings.STRATEGIES,
                        help='tf.distribute strategy (default: auto)')
    parser.add_argument('--beam-arg',
                        action='append',
                        default=[],
                        dest='beam_args',
                        metavar='FLAG',
                        help='a Beam pipeline argument, e.g. '
                        '--beam-arg=--direct_num_workers=2 (repeatable; '
                        'replaces the default --runner=FnApiRunner '
                        '--direct_running_mode=in_memory; after '
                        '--beam-engine\'s)')
    engines.add_engine_flags(parser)
    parser.add_argument('--set',
                        action='append',
                        default=[],
                        type=_override,
                        dest='overrides',
                        metavar='KEY=VALUE',
                        help='override a setting, e.g. --set epochs=3 '
                        '(repeatable; `run --list-settings` lists them)')


def _run_config(args: argparse.Namespace) -> configs.RunConfig:
    return configs.RunConfig(
        model=args.model,
        profile=args.profile,
        data=args.data,
        home=args.home,
        strategy=args.strategy,
        beam_args=tuple(getattr(args, 'engine_beam_args', []) + args.beam_args),
        overrides=tuple(args.overrides),
        **{
            k: v for k, v in (('kubeflow_image', getattr(args, 'image', None)),
                              ('kubeflow_root',
                               getattr(args, 'pipeline_root', None))) if v
        })


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog='python -m pipeline',
                                     description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)

    run = commands.add_parser('run', help='run the pipeline locally')
    _add_run_config_flags(run, model_required=False)
    run.add_argument('--list-settings',
                     action='store_true',
                     help='print every --set key, its default per profile '
                     'and what it does, then exit')
    run.add_argument('--no-serving-check',
                     action='store_true',
                     help='push without checking the model in a server')
    run.add_argument('--verbose',
                     action='store_true',
                     help='show TFX and Beam logs')
    run.add_argument('--no-lock', action='store_true',
                     help=argparse.SUPPRESS)  # The scheduler holds it.

    compile_ = commands.add_parser('compile', help='compile for Kubeflow')
    _add_run_config_flags(compile_)
    _add_kubeflow_flags(compile_)
    compile_.add_argument('--output',
                          required=True,
                          help='the PipelineJob JSON file to write')

    run_compiled = commands.add_parser(
        'run-compiled',
        help='run a compiled Kubeflow job here, task by task, '
        'as its launcher would on a cluster')
    run_compiled.add_argument('job',
                              metavar='FILE',
                              help='the PipelineJob JSON `compile` wrote')
    run_compiled.add_argument('--home',
                              default=configs.DEFAULT_HOME,
                              help='folder for the ML Metadata that resolvers '
                              'search, and the tasks\' logs')

    submit = commands.add_parser('submit', help='start a run on Kubeflow')
    _add_run_config_flags(submit)
    _add_kubeflow_flags(submit)
    _add_kfp_client_flags(submit)

    schedule = commands.add_parser(
        'schedule', help='retrain on a cron schedule and/or on new data')
    _add_run_config_flags(schedule)
    _add_kubeflow_flags(schedule, target_default='local')
    _add_kfp_client_flags(schedule, host_required=False)
    schedule.add_argument('--cron', help='5-field cron expression')
    schedule.add_argument('--on-new-data',
                          action='store_true',
                          help='run when a new span-N folder appears in --data')
    schedule.add_argument('--poll-seconds',
                          type=float,
                          default=60.0,
                          help='how often --on-new-data looks (default 60)')
    schedule.add_argument('--max-runs',
                          type=int,
                          default=0,
                          help='stop after N runs (default: never)')

    runs = commands.add_parser('runs',
                               help="list a home's past runs from ML Metadata")
    runs.add_argument('--home',
                      default=configs.DEFAULT_HOME,
                      help=f'pipeline home (default {configs.DEFAULT_HOME})')
    runs.add_argument('--model',
                      choices=sorted(profiles.MODELS),
                      help="only this model family's runs")
    show = commands.add_parser(
        'show', help='one run: its components, their times and artifacts')
    show.add_argument('run',
                      metavar='RUN',
                      help='the run id `runs` lists, or a prefix of one')
    show.add_argument('--home',
                      default=configs.DEFAULT_HOME,
                      help=f'pipeline home (default {configs.DEFAULT_HOME})')

    add = commands.add_parser(
        'add-class',
        help='add a class to a pushed embedding model from '
        'reference images, without retraining: writes the next version')
    add.add_argument('--model-dir',
                     required=True,
                     help='the model base path, e.g. '
                     'tfx_home/serving/embedding (its newest version is '
                     'copied with the class added)')
    add.add_argument('--name', required=True, help="the new class's name")
    add.add_argument('--images',
                     required=True,
                     help="a folder of the class's reference images "
                     f'({", ".join(image_formats.IMAGE_EXTENSIONS)})')

    demo = commands.add_parser(
        'demo', help='serve the models pushed under a home and query each')
    demo.add_argument('--home',
                      default=configs.DEFAULT_HOME,
                      help='the pipeline home whose serving/ to serve '
                      f'(default {configs.DEFAULT_HOME})')
    engine_clusters.add_engine_command(commands)
    demo.add_argument('--count',
                      type=arguments.positive_int,
                      default=5,
                      help='test files to send per model (default 5)')
    return parser


def _add_kfp_client_flags(parser: argparse.ArgumentParser,
                          host_required: bool = True) -> None:
    parser.add_argument('--host',
                        required=host_required,
                        help='Kubeflow Pipelines API endpoint URL')
    parser.add_argument('--experiment',
                        default='tfx-deep-pipelines',
                        help='Kubeflow experiment of the runs '
                        '(default tfx-deep-pipelines)')
    parser.add_argument('--namespace', help='Kubeflow namespace')


def _add_kubeflow_flags(parser: argparse.ArgumentParser,
                        target_default: str = 'kubeflow') -> None:
    parser.add_argument('--target',
                        default=target_default,
                        choices=sorted({'kubeflow', target_default}),
                        help=f'where to run (default {target_default})')
    parser.add_argument('--image',
                        help='container image of the components '
                        f'(default: {configs.IMAGE_REPOSITORY}:<git describe>'
                        ', as `make image` tags it)')
    parser.add_argument('--pipeline-root',
                        help='artifact root as the pods see it: gs://..., '
                        's3://... or a path mounted in every pod (required)')


def _data_error(error: BaseException) -> Optional[BaseException]:
    """The InputDataError, DataValidationError or EngineJobFailed behind it.

    Errors raised inside Beam workers or TFX launchers arrive wrapped; the
    cause chain, or failing that the message, still carries ours.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(
                error,
            (InputDataError, DataValidationError, engine_jobs.EngineJobFailed)):
            return error
        error = error.__cause__ or error.__context__
    return None


# What TensorFlow's native libraries print to file descriptor 2 as they load
# on a machine without GPUs: not errors a user can act on.
_NATIVE_NOISE = re.compile(
    r'Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|'
    r'computation placer already registered|oneDNN custom operations|'
    r'rebuild TensorFlow with the appropriate compiler flags|'
    r'This TensorFlow binary is optimized')


@contextlib.contextmanager
def _native_noise_dropped(verbose: bool) -> Iterator[None]:
    """Drops native libraries' noise from stderr meanwhile.

    Drops _NATIVE_NOISE from what is written to stderr meanwhile, at the file
    descriptor, where C++ writes; everything else is written after.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink:
                if not _NATIVE_NOISE.search(line.decode(errors='replace')):
                    sys.stderr.buffer.write(line)
            sys.stderr.flush()


def _run(args: argparse.Namespace) -> dict:
    """The `run` command: one local run, under the run lock.

    The `run` command: one local run, under the pipeline's run lock so that it
    never overlaps a scheduled run.
    """
    _say('loading TensorFlow and TFX ...')
    with _native_noise_dropped(args.verbose):
        from pipeline import run_lock  # pylint: disable=import-outside-toplevel
        from pipeline import runner  # pylint: disable=import-outside-toplevel
    config = _run_config(args)
    lock = run_lock.RunLock(run_lock.lock_path(config.scheduler_state_dir))
    if not args.no_lock and not lock.acquire(blocking=False):
        print(f'waiting for the run in progress ({lock.holder()}) ...',
              file=sys.stderr,
              flush=True)
        lock.acquire(blocking=True)
    flink_rest = None
    if args.beam_engine == 'flink':
        flink_rest = engine_jobs.flink_rest_of(
            args.engine_beam_args + args.beam_args, args.engine_state_dir)
    jobs = engine_jobs.BeamJobs(flink_rest)
    try:
        with jobs.tracking(), _jobs_cancelled_on_signal(jobs):
            result = runner.run_local(config,
                                      verbose=args.verbose,
                                      serving_check=not args.no_serving_check,
                                      started=_STARTED)
        if jobs.jobs:
            result['engine_jobs'] = jobs.jobs
        return result
    finally:
        if not args.no_lock:
            lock.release()


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during `run`, its engine jobs cancelled."""


@contextlib.contextmanager
def _jobs_cancelled_on_signal(jobs: engine_jobs.BeamJobs) -> Iterator[None]:
    """SIGINT and SIGTERM cancel the run's running engine jobs, then end it.

    Without this a killed `run` leaves its Beam job running on the engine.
    """

    def interrupt(signum, frame):
        del frame
        name = signal.Signals(signum).name
        cancelled = jobs.cancel_running()
        raise RunInterrupted(f'run interrupted by {name}' + (
            f'; cancelled Beam job {", ".join(cancelled)} on the engine'
            if cancelled else ''))

    previous = {
        signum: signal.signal(signum, interrupt)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _history(args: argparse.Namespace) -> int:
    """The `runs` and `show` commands (pipeline/history.py)."""
    path = configs.metadata_path(args.home)
    if not os.path.isfile(path):  # Before TensorFlow loads, with TFMA.
        print(
            f'error: {path}: no ML Metadata (no run has used --home '
            f'{args.home})',
            file=sys.stderr,
            flush=True)
        return EXIT_USAGE
    with _native_noise_dropped(verbose=False):
        from pipeline import history  # pylint: disable=import-outside-toplevel
    logging.getLogger('tensorflow').setLevel(logging.ERROR)  # TFMA's warnings
    store = history.open_store(path)
    if args.command == 'runs':
        print(history.format_runs(history.list_runs(store, args.model)))
        return 0
    try:
        print(history.format_run(history.run_details(store, args.run)))
    except history.NoSuchRun as error:
        print(f'error: {path}: {error}', file=sys.stderr, flush=True)
        return EXIT_USAGE
    return 0


def _retrain(args: argparse.Namespace) -> int:
    """The `submit` and `schedule` commands (pipeline/retrain.py)."""
    from pipeline import retrain  # pylint: disable=import-outside-toplevel
    config = _run_config(args)
    if args.command == 'submit':
        result = retrain.submit_kubeflow(config, args.host, args.experiment,
                                         args.namespace)
    elif args.target == 'kubeflow':
        if not (args.host and args.cron):
            print('error: schedule --target kubeflow needs --host and --cron',
                  file=sys.stderr,
                  flush=True)
            return EXIT_USAGE
        result = retrain.schedule_kubeflow(config, args.host, args.experiment,
                                           args.cron, args.namespace)
    else:
        if not (args.cron or args.on_new_data):
            print('error: schedule needs --cron, --on-new-data, or both',
                  file=sys.stderr,
                  flush=True)
            return EXIT_USAGE
        return retrain.schedule_local(config, _run_flags(args), args.cron,
                                      args.on_new_data, args.max_runs,
                                      args.poll_seconds)
    print(json.dumps(result), flush=True)
    return 0


def _run_flags(args: argparse.Namespace) -> List[str]:
    """The `run` command line of the configuration `schedule` was given."""
    flags = [
        '--model', args.model, '--profile', args.profile, '--home', args.home,
        '--no-lock'
    ]
    if args.data:
        flags += ['--data', args.data]
    if args.strategy:
        flags += ['--strategy', args.strategy]
    flags += engines.engine_flags_of(args)
    flags += [f'--beam-arg={arg}' for arg in args.beam_args]
    flags += [
        f'--set={key}={json.dumps(value)}' for key, value in args.overrides
    ]
    return flags


def _say(text: str) -> None:
    """A progress line on stderr, timed like the runner's."""
    print(f'[{time.strftime("%H:%M:%S")}] {text}', file=sys.stderr, flush=True)


def _list_settings(model: Optional[str]) -> None:
    for name in [model] if model else sorted(profiles.MODELS):
        print(f'{name} (--set KEY=VALUE; defaults per --profile):')
        print(setting_checks.settings_table(name))


def _check_arguments(args: argparse.Namespace) -> None:
    """Checks the settings and the data before TFX and TensorFlow load.

    A typo or unreadable data is then answered in seconds.

    Raises:
        setting_checks.SettingError: a `--set` the model does not accept.
        InputDataError: naming the data file and the fault.
    """
    if not hasattr(args, 'overrides'):  # demo, run-compiled
        return
    setting_checks.check_overrides(args.model, args.overrides)
    if args.command != 'run':  # The scheduler may wait for the data.
        return
    config = _run_config(args)
    problem = cluster.cluster_problem(
        settings.value(config.hyperparameters, 'strategy'),
        os.environ.get('TF_CONFIG'))
    if problem:
        raise setting_checks.SettingError(problem)
    if config.hyperparameters.get('schema_path'):
        _check_schema_file(config.hyperparameters['schema_path'])
    if config.hyperparameters.get('transfer_from'):
        _check_transfer_source(config.hyperparameters['transfer_from'])
    source = data_source.detect(config.data_path, config.family.kind)
    data_source.check_first_records(source)
    if config.family.grouped:
        class_groups.read(settings.value(config.hyperparameters, 'groups_file'),
                          source.root, source.class_names)


def _check_schema_file(path: str) -> None:
    """Ends the run now on a curated schema that cannot be read.

    A curated schema (`--set schema_path=`) that cannot be read ends the run
    now, not in ImportSchemaGen's traceback.
    """
    # Protocol buffers only: neither TensorFlow nor TFX loads.
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel
    try:
        with open(path, encoding='utf-8') as f:
            schema = text_format.Parse(f.read(), schema_pb2.Schema())
    except OSError as error:
        raise InputDataError(path, f'cannot read the schema: '
                             f'{error.strerror}') from error
    except (text_format.ParseError, UnicodeDecodeError) as error:
        raise InputDataError(path, f'not a schema.pbtxt: {error}') from error
    if not schema.feature:
        raise InputDataError(path, 'the schema has no features')


def _check_transfer_source(path: str) -> None:
    """Ends the run now on a `transfer_from` that names no SavedModel.

    A `--set transfer_from=` that names no readable SavedModel (or model base
    path) ends the run now, not in the Trainer.
    """
    try:
        saved_model_dirs.newest_saved_model(path)
    except saved_model_dirs.SavedModelDirError as error:
        raise InputDataError(error.path, error.fault) from error


def _engine_beam_args(args: argparse.Namespace) -> List[str]:
    """The Beam flags of `--beam-engine`.

    For `run`, once the engine's job server and worker pool answer.

    Raises:
        engines.EngineError: naming the endpoint or state file at fault.
    """
    if getattr(args, 'beam_engine', 'local') == 'local':
        return []
    if getattr(args, 'target', None) == 'kubeflow' and not args.engine_address:
        raise engines.EngineError(
            f'--beam-engine={args.beam_engine} --target kubeflow needs '
            '--engine-address: the job server as the pods reach it')
    flags = engines.beam_args_of(args)
    if args.command == 'run':
        _say(f'checking the {args.beam_engine} engine '
             f'({engines.endpoint(flags, "job_endpoint")}) ...')
        engines.check_reachable(flags)
    return flags


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'run' and args.list_settings:
        _list_settings(args.model)
        return 0
    if args.command == 'engine':
        try:
            print(json.dumps(engine_clusters.engine_command(args)), flush=True)
        except engines.EngineError as error:
            print(f'error: {error}', file=sys.stderr, flush=True)
            return EXIT_USAGE
        return 0
    if getattr(args, 'model', '') is None and args.command != 'runs':
        parser.error('the following arguments are required: --model')
    try:
        args.engine_beam_args = _engine_beam_args(args)
    except engines.EngineError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        return EXIT_USAGE
    problem = beam_runners.beam_args_problem(getattr(args, 'beam_args', ()))
    if problem:
        print(f'error: {problem}', file=sys.stderr, flush=True)
        return EXIT_BAD_DATA
    if args.command == 'run':
        _say(f'checking settings and data ({args.data or "default data"}) ...')
    try:
        if getattr(args, 'target', None) == 'kubeflow':
            # Before TFX's slow import: a job lacking these cannot be written.
            _run_config(args).kubeflow_target()
    except configs.KubeflowConfigError as error:
        print(f'error: {args.command}: {error}', file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        _check_arguments(args)
        if args.command == 'run':
            try:
                print(json.dumps(_run(args)), flush=True)
            except RunInterrupted as interrupted:
                print(f'error: {interrupted}', file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED
        elif args.command in ('runs', 'show'):
            return _history(args)
        elif args.command == 'add-class':
            _say('loading TensorFlow ...')
            with _native_noise_dropped(verbose=False):
                from pipeline import add_class  # pylint: disable=import-outside-toplevel
                path = add_class.add_class(args.model_dir, args.name,
                                           args.images)
            print(json.dumps({
                'added_class': args.name.strip(),
                'new_version': path
            }),
                  flush=True)
        elif args.command == 'demo':
            from pipeline import demo  # pylint: disable=import-outside-toplevel
            return demo.run(args.home, args.count)
        elif args.command == 'run-compiled':
            from pipeline import kubeflow_launcher  # pylint: disable=import-outside-toplevel
            try:
                result = kubeflow_launcher.run_compiled(args.job, args.home)
            except kubeflow_launcher.BadJob as error:
                print(f'error: {error}', file=sys.stderr, flush=True)
                return EXIT_USAGE
            except kubeflow_launcher.TaskFailed as error:
                print(f'error: {error}', file=sys.stderr, flush=True)
                return 1
            print(json.dumps(result), flush=True)
        elif args.command == 'compile':
            from pipeline import runner  # pylint: disable=import-outside-toplevel
            path = runner.compile_kubeflow(_run_config(args), args.output)
            print(json.dumps({'compiled': os.path.abspath(path)}), flush=True)
        else:
            return _retrain(args)
    except setting_checks.SettingError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        return EXIT_BAD_DATA
    except Exception as error:  # pylint: disable=broad-except
        data_error = _data_error(error)
        if isinstance(data_error, engine_jobs.EngineJobFailed):
            print(f'error: {data_error}', file=sys.stderr, flush=True)
            return 1
        if data_error is None:
            raise
        print(f'error: {data_error}', file=sys.stderr, flush=True)
        return EXIT_BAD_DATA
    return 0
