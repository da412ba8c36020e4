"""Beam's arguments for a run: the default runner and the runners refused.

`--beam-arg` flags replace the defaults; `beam_args_problem` stops a run
whose runner is unknown or known to be broken before it starts.
"""

from typing import List, Optional


def default_beam_args() -> List[str]:
    """Beam's FnApiRunner, in memory: bundles run in the pipeline's process.

    Not `DirectRunner`: since Beam 2.68 it first tries the Prism runner,
    which downloads a Go binary from GitHub at run time. Offline it fails,
    falls back to the FnApiRunner and leaves a temporary folder behind, once
    for every Beam component; online the pipeline would run on a binary
    nobody tested with it. Beam's advice is to name the FnApiRunner.

    In memory, measured by bench/ (2 cores): multi_processing starts a worker
    process per core for every Beam component, each importing TensorFlow
    anew, which costs ~20-40 s per component; ExampleGen + StatisticsGen +
    Transform of Fashion-MNIST took 160 s with it and 49 s in memory (198 s
    and 130 s at 4x the data), and the smoke run 204 s against 108 s.
    multi_threading was no faster than in_memory. TensorFlow ops inside the
    bundles still use every core. `--beam-arg` flags replace these: on a
    large machine or data set pass `--beam-arg=--runner=FnApiRunner
    --beam-arg=--direct_running_mode=multi_processing
    --beam-arg=--direct_num_workers=N`, or another runner (Flink, Spark,
    Dataflow), or `--beam-engine flink|spark` (docs/engines.md).
    """
    return ['--runner=FnApiRunner', '--direct_running_mode=in_memory']


# Beam runners `--beam-arg=--runner=NAME` may name (Beam accepts any case,
# without "Runner", or a module path). Tested here: FnApiRunner, in memory or
# multi_processing; PortableRunner on Flink and Spark (`--beam-engine`,
# pipeline/engines.py). Passed through untested: FlinkRunner and SparkRunner
# (they download a job server jar at run time), Dataflow.
BEAM_RUNNERS = ('FnApiRunner', 'FlinkRunner', 'SparkRunner', 'DataflowRunner',
                'PortableRunner')
# Refused before the run, with why.
BEAM_RUNNERS_REFUSED = {
    'DaskRunner': 'in Beam 2.74 it loses data while reporting success '
                  '(only the last branch of a graph runs, beam.io.Read does '
                  'nothing)',
    'DirectRunner': 'since Beam 2.68 it first downloads the Prism runner '
                    'from GitHub',
    'PrismRunner': 'it downloads a Go binary from GitHub at run time',
    'SwitchingDirectRunner': 'it is the DirectRunner, which first downloads '
                             'the Prism runner from GitHub',
}
DIRECT_RUNNING_MODES = ('in_memory', 'multi_threading', 'multi_processing')


def _flag_values(beam_args: List[str], name: str) -> List[str]:
    """Values of `--name=V` and `--name V` in `beam_args`."""
    values = []
    for index, arg in enumerate(beam_args):
        if arg.startswith(f'--{name}='):
            values.append(arg.split('=', 1)[1])
        elif arg == f'--{name}' and index + 1 < len(beam_args):
            values.append(beam_args[index + 1])
    return values


def _runner_key(value: str) -> str:
    """`--runner`'s value as Beam matches it.

    Any case, with or without "Runner" or a module path.
    """
    key = value.rsplit('.', 1)[-1].lower()
    return key if key.endswith('runner') else key + 'runner'


def beam_runs_locally(beam_args: List[str]) -> bool:
    """Whether Beam runs the bundles where this project is installed.

    The FnApiRunner, in this process or in worker processes of this Python
    environment, or SDK workers of an EXTERNAL worker pool, which runs this
    project's Python (pipeline/sdk_worker_pool.py) or image (deploy/).
    """
    runners = _flag_values(beam_args, 'runner')
    environments = _flag_values(beam_args, 'environment_type')
    return bool(runners) and (_runner_key(runners[-1]) == 'fnapirunner' or
                              (environments or [''])[-1] == 'EXTERNAL')


def beam_args_problem(beam_args: List[str]) -> Optional[str]:
    """What is wrong with `--beam-arg` flags, in one line; None if nothing.

    Checks the runner (one of BEAM_RUNNERS, not a refused one) and
    `--direct_running_mode`, so that a typo or a runner known to be broken
    stops the run before it starts.
    """
    known = {name.lower(): name for name in BEAM_RUNNERS}
    refused = {name.lower(): name for name in BEAM_RUNNERS_REFUSED}
    for value in _flag_values(beam_args, 'runner'):
        key = _runner_key(value)
        if key in refused:
            name = refused[key]
            return (f'--beam-arg=--runner={value}: not supported, '
                    f'{BEAM_RUNNERS_REFUSED[name]}; use --runner=FnApiRunner '
                    '(the default)')
        if key not in known:
            return (f'--beam-arg=--runner={value}: unknown Beam runner; '
                    f'expected one of {", ".join(BEAM_RUNNERS)}')
    for value in _flag_values(beam_args, 'direct_running_mode'):
        if value not in DIRECT_RUNNING_MODES:
            return (f'--beam-arg=--direct_running_mode={value}: expected one '
                    f'of {", ".join(DIRECT_RUNNING_MODES)}')
    return None
