"""The tf.distribute strategy a training run uses, chosen by name in config.

- `auto`: MirroredStrategy over all local GPUs when there are any, else
  TensorFlow's default strategy (the CPU, no distribution machinery).
- `mirrored`: MirroredStrategy over all local GPUs, or when there are none,
  over `cpu_devices` logical CPU devices (`prepare_devices`), as it would
  over that many GPUs.
- `one_device`: the first GPU, else the CPU.
- `multi_worker`: MultiWorkerMirroredStrategy; the cluster comes from the
  TF_CONFIG environment variable, as on Kubeflow or any TF cluster, or from
  the worker processes models/workers.py starts.
- `parameter_server`: ParameterServerStrategy, asynchronous SGD: the chief
  runs Keras's fit as the cluster coordinator, which sends training steps
  to whichever worker is free, each step reading and updating the
  variables held by the parameter servers; the cluster (a chief, workers,
  parameter servers) comes from TF_CONFIG, as for `multi_worker`.
"""

import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from common import cluster
from common import settings

STRATEGIES = settings.STRATEGIES

# One MirroredStrategy per device list and process: a second one over the same
# devices starts its collective group and instance keys from the first one's,
# and TensorFlow's collective executor, which caches them per process, then
# fails a later all-reduce with "Shape mismatch in the collective instance"
# (seen when a process trains twice: tuner trials, tests).
_MIRRORED: Dict[Tuple[str, ...], tf.distribute.MirroredStrategy] = {}


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices.

    Must run before TensorFlow initializes its devices (before any op runs).
    """
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def prepare_devices(name: str, cpu_devices: int) -> None:
    """Gives strategy `name` its devices; call it before TensorFlow starts.

    `mirrored` on a machine without GPUs mirrors over `cpu_devices` logical
    CPU devices, which must be made before any op runs. Nothing to do when
    there are GPUs, for other strategies, or when the CPU is split already.

    Raises:
        RuntimeError: if the devices are needed and TensorFlow has started
            with fewer of them.
    """
    if (name != 'mirrored' or cpu_devices < 2 or
            tf.config.list_physical_devices('GPU')):
        return
    cpu = tf.config.list_physical_devices('CPU')[0]
    configured = tf.config.get_logical_device_configuration(cpu) or []
    if len(configured) >= cpu_devices:
        return
    try:
        split_cpu(cpu_devices)
    except RuntimeError as error:
        raise RuntimeError(
            f'strategy mirrored needs {cpu_devices} logical CPU devices, '
            'which can only be made before TensorFlow starts; call '
            'models.distribute.prepare_devices at process start') from error


def is_default(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` is TensorFlow's default (no distribution)."""
    return type(strategy) is type(  # pylint: disable=unidiomatic-typecheck
        tf.distribute.get_strategy())


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` trains asynchronously on parameter servers."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def parameter_servers(strategy: tf.distribute.Strategy) -> Optional[int]:
    """The parameter servers `strategy` keeps its variables on, if any."""
    if not is_parameter_server(strategy):
        return None
    return _cluster_resolver(strategy).cluster_spec().num_tasks('ps')


def _cluster_resolver(
    strategy: tf.distribute.Strategy
) -> Optional[tf.distribute.cluster_resolver.ClusterResolver]:
    """The strategy's cluster resolver.

    TF_CONFIG's for a parameter-server strategy (made from it by
    `make_strategy`; it does not expose its own).
    """
    if is_parameter_server(strategy):
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return strategy.cluster_resolver


def chief_and_workers(strategy: tf.distribute.Strategy) -> Tuple[bool, int]:
    """(whether this process is the chief, how many workers train).

    The chief is the `chief` task, else worker 0 (TF_CONFIG's convention);
    a process outside any cluster is the chief of one.
    """
    resolver = _cluster_resolver(strategy)
    spec = resolver.cluster_spec() if resolver else None
    if not spec or not spec.jobs:
        return True, 1
    # With parameter servers the chief coordinates and the workers train.
    jobs = [
        job for job in ('chief', 'worker')
        if job in spec.jobs and not (job == 'chief' and 'ps' in spec.jobs)
    ]
    chief = (resolver.task_type == 'chief' or
             (resolver.task_type == 'worker' and resolver.task_id == 0 and
              'chief' not in spec.jobs))
    return chief, sum(spec.num_tasks(job) for job in jobs)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (one of STRATEGIES)."""
    if name == 'multi_worker':
        # First, before anything lists devices: listing them starts
        # TensorFlow, and collective ops must be configured before it starts.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == 'parameter_server':
        problem = cluster.cluster_problem(name,
                                          os.environ.get('TF_CONFIG') or '{}')
        if problem:
            raise ValueError(problem)
        return tf.distribute.ParameterServerStrategy(
            tf.distribute.cluster_resolver.TFConfigClusterResolver())
    if name not in STRATEGIES:
        raise ValueError(
            f'unknown strategy {name!r}; expected one of {STRATEGIES}')
    gpus = [d.name for d in tf.config.list_logical_devices('GPU')]
    cpus = [d.name for d in tf.config.list_logical_devices('CPU')]
    if name == 'auto':
        if gpus:
            return _mirrored(gpus)
        # Not OneDeviceStrategy: Keras would feed it through a
        # MultiDeviceIterator made anew each epoch, and in TF 2.16 dropping
        # one waits up to 60 s for tf.data's autotuning thread (measured:
        # a 39 s stall between epochs and 34 s at the end of fit).
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return _mirrored(gpus or cpus)
    return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])


def _mirrored(devices: List[str]) -> tf.distribute.MirroredStrategy:
    """The process's MirroredStrategy over `devices` (see _MIRRORED)."""
    key = tuple(devices)
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
    return _MIRRORED[key]
