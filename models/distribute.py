"""The tf.distribute strategy a training run uses, chosen by name in config.

- `auto`: MirroredStrategy over all local GPUs when there are any, else
  TensorFlow's default strategy (the CPU, no distribution machinery).
- `mirrored`: MirroredStrategy over all local GPUs, or when there are none,
  over all logical CPU devices (see `split_cpu`; how tests exercise it).
- `one_device`: the first GPU, else the CPU.
- `multi_worker`: MultiWorkerMirroredStrategy; the cluster comes from the
  TF_CONFIG environment variable, as on Kubeflow or any TF cluster.
"""

import tensorflow as tf

STRATEGIES = ('auto', 'mirrored', 'one_device', 'multi_worker')


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices.

    Must run before TensorFlow initializes its devices (before any op runs).
    """
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (one of STRATEGIES)."""
    gpus = [d.name for d in tf.config.list_logical_devices('GPU')]
    cpus = [d.name for d in tf.config.list_logical_devices('CPU')]
    if name == 'auto':
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        # Not OneDeviceStrategy: Keras would feed it through a
        # MultiDeviceIterator made anew each epoch, and in TF 2.16 dropping
        # one waits up to 60 s for tf.data's autotuning thread (measured:
        # a 39 s stall between epochs and 34 s at the end of fit).
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy(gpus or cpus)
    if name == 'one_device':
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    if name == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f'unknown strategy {name!r}; expected one of {STRATEGIES}')
